"""evgate's service layer: configuration, storage, ingest, polling, the ASGI app and the CLI."""
