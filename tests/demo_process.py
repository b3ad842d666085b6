"""Running `evgate demo` as a user does, in a child process, for the demo test and bench/bench_demo."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


@contextmanager
def demo_process(port: int, data_dir: str, *extra: str, output: Path | None = None) -> Iterator[subprocess.Popen]:
    """`evgate demo` on `port` with its files in `data_dir`; terminated on exit. Its output goes to
    a pipe, or to the file `output` (a pipe nobody reads would block a talkative demo)."""
    cmd = [sys.executable, "-m", "gateway.cli", "demo", "--port", str(port), "--data-dir", data_dir, *extra]
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(output.open("wb")) if output is not None else subprocess.PIPE
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ})
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def operator_location_counts(port: int) -> dict[str, int]:
    """Operator id -> locations the gateway serves for it ({} while the gateway is not up yet)."""
    try:
        ops = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": "{ operators { id } }"}, timeout=5)
        ids = [o["id"] for o in ops.json()["data"]["operators"]]
        if not ids:
            return {}
        fields = " ".join(
            f'o{i}: locations(filter: {{operatorIds: ["{op}"]}}, first: 1) {{ totalCount }}' for i, op in enumerate(ids)
        )
        body = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": "{ " + fields + " }"}, timeout=5).json()
        return {op: body["data"][f"o{i}"]["totalCount"] for i, op in enumerate(ids)}
    except (httpx.TransportError, KeyError, TypeError, ValueError):
        return {}
