"""One poller per operator across gateway processes: a lease row per operator in the database.

Several `evgate serve` processes may share one database; every one serves queries, but only the
holder of an operator's lease polls it. A lease is held until `expires_at` and renewed every
third of its lifetime; a process that dies stops renewing, and once the lease has expired another
process takes it over (and resumes from the committed cursor: nothing is lost, since a window and
its cursor commit together).

Safety does not rest on clocks or timing but on a fence in the database:

* Acquiring is one conditional write: INSERT the row (a primary-key conflict means someone has
  it), else `UPDATE ... WHERE holder = me OR expires_at < now`. The database serialises writers
  of the row (SQLite has one writer; PostgreSQL re-checks the WHERE of a waiting UPDATE against
  the row as the other transaction committed it), so of two contenders only one matches.
* Every acquisition draws a fencing token, and every window checks its lease *inside its own
  transaction, as the last statement before committing*: `UPDATE ... SET expires_at = now + ttl
  WHERE holder = me AND token = <token its run started with>` must change one row, or the window
  rolls back (`LeaseLost`). That UPDATE locks the lease row until the commit,
  so no other process can take the lease between the check and the commit: a takeover either
  happened before (the check fails, nothing of the stale window is committed) or waits until
  after (and then reads the committed cursor). A process stalled past its lease therefore never
  commits a window once another has taken over, whatever the clocks say.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.models import PollerLease

log = logging.getLogger("evgate.lease")


class LeaseLost(Exception):
    """This process does not (or no longer) hold the operator's lease: its window must not commit."""


def _pid_scope() -> str:
    """Where a pid means one process: this boot of this machine and this pid namespace."""
    parts = []
    for path in ("/proc/sys/kernel/random/boot_id", "/proc/self/ns/pid"):
        try:
            parts.append(os.readlink(path) if path.endswith("/pid") else Path(path).read_text().strip())
        except OSError:
            return ""  # unknown: no process is ever presumed dead
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:12]


def process_identity() -> str:
    """This process among all gateway processes: host, pid, a random part (pids are reused) and
    the scope in which the pid can be checked ("host:pid:random:scope")."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}:{_pid_scope()}"


def holder_is_dead(holder: str) -> bool:
    """The holder is a process of our own pid scope that no longer runs (killed, crashed).

    Only a liveness shortcut: a restarted gateway takes over at once instead of waiting for the
    expiry. Safety never depends on it (the fence does); a reused pid merely means waiting."""
    _, _, rest = holder.partition(":")
    pid, _, rest = rest.partition(":")
    scope = rest.rpartition(":")[2]
    if not scope or scope != _pid_scope() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        return False
    return False


def _now() -> datetime:
    return datetime.now(UTC)


class Lease:
    """The lease of one operator as seen by one process: acquire, renew, fence, release."""

    def __init__(self, operator_id: str, holder: str, ttl: float) -> None:
        self.operator_id = operator_id
        self.holder = holder
        self.ttl = ttl
        self.held = asyncio.Event()  # set while this process believes it holds the lease
        self._valid_until = 0.0  # monotonic: beyond this, our belief is no longer trusted
        self.token: str | None = None  # the fencing token of our current acquisition
        self._task: asyncio.Task[None] | None = None

    def is_held(self) -> bool:
        """Held, as far as this process knows (the fence in each window has the last word)."""
        if self.held.is_set() and time.monotonic() >= self._valid_until:
            self.held.clear()
        return self.held.is_set()

    def _believe(self, held: bool, asked_at: float) -> None:
        if held:
            if not self.held.is_set():
                log.info("%s: lease acquired by %s", self.operator_id, self.holder)
            # Counted from before the database was asked: never longer than the stored lease.
            self._valid_until = asked_at + self.ttl
            self.held.set()
        else:
            if self.held.is_set():
                log.warning("%s: lease lost by %s", self.operator_id, self.holder)
            self.held.clear()

    async def try_acquire(self) -> bool:
        """Acquire the lease if it is free or expired, or renew it if ours; True if we hold it.

        Each acquisition (not a renewal) draws a new fencing token: a window started under an
        earlier acquisition of ours cannot commit under a later one."""
        asked_at = time.monotonic()
        now = _now()
        expires = now + timedelta(seconds=self.ttl)
        fresh = secrets.token_hex(8)
        mine = PollerLease.filter(operator_id=self.operator_id, holder=self.holder)
        # INSERT ... ON CONFLICT DO NOTHING: the row now exists, ours if nobody had it.
        await PollerLease.bulk_create(
            [
                PollerLease(
                    operator_id=self.operator_id, holder=self.holder, token=fresh, expires_at=expires, acquired_at=now
                )
            ],
            ignore_conflicts=True,
        )
        # Each step is one conditional UPDATE, which the database serialises against every other
        # writer of the row: renew our acquisition; else adopt a row that names us (just inserted,
        # or an acquisition whose outcome we did not learn) under a fresh token; else take it over
        # if expired; else if its holder is a dead process of this machine.
        won = bool(self.token) and bool(await mine.filter(token=self.token).update(expires_at=expires))
        if not won:
            won = bool(await mine.update(token=fresh, expires_at=expires))
            if not won:
                won = bool(
                    await PollerLease.filter(operator_id=self.operator_id, expires_at__lt=now).update(
                        holder=self.holder, token=fresh, expires_at=expires, acquired_at=now
                    )
                )
            if not won:
                current = await PollerLease.filter(operator_id=self.operator_id).values_list("holder", flat=True)
                if current and holder_is_dead(current[0]):
                    won = bool(
                        await PollerLease.filter(operator_id=self.operator_id, holder=current[0]).update(
                            holder=self.holder, token=fresh, expires_at=expires, acquired_at=now
                        )
                    )
            self.token = fresh if won else None
        self._believe(won, asked_at)
        return won

    async def fence(self, conn: Any, token: str | None = None) -> None:
        """In a window's transaction, as its last statement before the commit: the lease is still
        ours, under the acquisition (`token`, default the current one) the window's run started
        with. The UPDATE (which also renews) locks the lease row until the commit, so no takeover
        can come between this check and the commit. Raises LeaseLost, which rolls the window back.

        Expiry alone does not refuse: while the row still names us under that token nobody has
        taken over, so nobody else can have written this operator's data, and a window longer
        than the lease (renewals wait for it on SQLite) still commits."""
        asked_at = time.monotonic()
        token = token if token is not None else self.token
        now = _now()
        kept = token is not None and bool(
            await PollerLease.filter(operator_id=self.operator_id, holder=self.holder, token=token)
            .using_db(conn)
            .update(expires_at=now + timedelta(seconds=self.ttl))
        )
        if not kept:
            if token == self.token:
                self._believe(False, asked_at)
            raise LeaseLost(f"{self.operator_id}: the polling lease is not held by {self.holder}")
        self._believe(True, asked_at)

    async def release(self) -> None:
        """Give the lease up at once (a clean stop), so another process need not wait for expiry."""
        self.held.clear()
        self.token = None
        await PollerLease.filter(operator_id=self.operator_id, holder=self.holder).delete()

    def start(self) -> None:
        """Keep trying to acquire, and renew while held, every third of the lifetime."""
        self._task = asyncio.create_task(self._keep(), name=f"lease:{self.operator_id}")

    async def stop(self, release: bool = True) -> None:
        """Stop renewing and (by default) release the lease."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if release:
            try:
                await self.release()
            except Exception:  # the database is going away too: the lease will simply expire
                log.warning("%s: could not release the lease", self.operator_id, exc_info=True)

    async def _keep(self) -> None:
        while True:
            try:
                await self.try_acquire()
            except asyncio.CancelledError:
                raise
            except Exception:  # the database is unreachable: our belief runs out with the lease
                log.warning("%s: lease renewal failed", self.operator_id, exc_info=True)
                self.is_held()
            await asyncio.sleep(self.ttl / 3)
