"""`evgate demo` as a user runs it: within 60 seconds every simulated operator's locations are queryable."""

from __future__ import annotations

import time

from tests.demo_process import demo_process, operator_location_counts
from tests.support import free_port, shared_path

shared_path("data", "london_boroughs_gla_wgs84.geojson")


def test_demo_serves_every_operators_locations_within_a_minute(tmp_path) -> None:
    port = free_port()
    with demo_process(port, str(tmp_path / "demo")) as proc:
        deadline = time.monotonic() + 60
        counts: dict[str, int] = {}
        while time.monotonic() < deadline:
            counts = operator_location_counts(port)
            if len(counts) == 3 and all(counts.values()):
                break
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else "demo exited"
            time.sleep(1)
        assert len(counts) == 3 and all(n > 100 for n in counts.values()), counts
        assert sum(counts.values()) > 500  # 1,500 EVSEs over the three operators
    output = proc.stdout.read().decode() if proc.stdout else ""
    assert f"http://127.0.0.1:{port}/graphql" in output and "Bearer " in output
