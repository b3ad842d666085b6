"""The simulated operators in a process of their own, so that a benchmark measures the gateway alone.

A real operator is another machine; running the simulator in the gateway's event loop would charge
its page building to the gateway. The child sends back what a client needs (operators, CA) and the
ground-truth counts, then serves until told to stop.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from simulator.cluster import SimOperator, start_simulation


@dataclass
class RemoteSimulation:
    """The parts of a Simulation a client needs, as seen from another process."""

    operators: list[SimOperator]
    ca_path: Path
    counts: dict[str, dict[str, int]]  # operator -> module -> records the gateway's windows cover


def _serve(conn: Connection, kwargs: dict[str, Any]) -> None:
    async def main() -> None:
        sim = await start_simulation(**kwargs)
        # The clock is frozen; the gateway's windows end at its whole second, exclusive.
        end = sim.clock.now().replace(microsecond=0)
        counts = {
            op.id: {m: sim.count(op.id, m, date_to=end) for m in ("locations", "sessions", "cdrs", "tariffs")}
            for op in sim.operators
        }
        conn.send(RemoteSimulation(sim.operators, sim.ca_path, counts))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, conn.recv)  # any message means stop
        await sim.stop()

    asyncio.run(main())


@contextmanager
def simulation_process(**kwargs: Any) -> Iterator[RemoteSimulation]:
    """Start `start_simulation(**kwargs)` in a child process; stop it on exit."""
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(child, kwargs), daemon=True)
    proc.start()
    try:
        for _ in range(240):  # at most 120 s, but stop waiting as soon as the child has died
            if parent.poll(0.5) or not proc.is_alive():
                break
        if not parent.poll(0):
            raise RuntimeError(f"the simulator did not start (exit code {proc.exitcode}); see its traceback above")
        yield parent.recv()
    finally:
        parent.send("stop")
        proc.join(10)
        if proc.is_alive():
            proc.kill()
