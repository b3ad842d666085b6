"""Protocol adapters: fetch, page, parse and normalise operator data; nothing of the database."""
