"""The demo as a user starts it: seconds until every operator's locations are queryable, and memory.

Run: `.venv/bin/python -m bench.bench_demo`. Starts `evgate demo` (simulated operators and gateway in
one process, SQLite) on a free loopback port, polls GraphQL once a second (at most 120 times) until
every operator has locations, then prints the time that took and the process's resident memory.
"""

from __future__ import annotations

import sys
import tempfile
import time

from bench.bench_query import free_port, rss_mb
from tests.demo_process import demo_process, operator_location_counts


def main() -> None:
    """Start the demo, wait for every operator's locations, print time and memory."""
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp, demo_process(port, tmp) as proc:
        started = time.monotonic()
        counts: dict[str, int] = {}
        for _ in range(120):
            counts = operator_location_counts(port)
            if counts and all(counts.values()):
                break
            time.sleep(1)
        ready = time.monotonic() - started
        time.sleep(max(0.0, 60 - ready))  # let the first session and CDR runs land too
        print(f"demo: every operator's locations queryable {ready:.1f} s after start: {counts}")
        print(f"demo: resident memory 60 s after start: {rss_mb(proc.pid):.0f} MB (gateway + simulated operators)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
