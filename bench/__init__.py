"""Benchmarks that print figures; run them as modules (`python -m bench.bench_ingest`)."""
