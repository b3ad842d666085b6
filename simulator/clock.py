"""The simulated clock, and the OCPI DateTime helpers every view uses.

The simulated timeline replays the recent past: it starts `lag` behind the wall clock, runs at
`speed` times real time and never overtakes the wall clock, because the gateway windows by the
server's clock and must never see records stamped in its own future. `speed=0` freezes it, which
is what tests use so that the truth does not move under them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

_FORMATS = ("%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%dT%H:%M:%S")


class SimClock:
    """now = min(wall_now, (start - lag) + (wall_now - start) * speed), start being the wall time
    at which the simulation started."""

    def __init__(
        self,
        start: datetime,
        speed: float = 0.0,
        lag: timedelta = timedelta(0),
        wall: Callable[[], float] = time.time,
    ) -> None:
        if speed < 0:
            raise ValueError("speed must be >= 0")
        self.start = as_utc(start)
        self.speed = speed
        self.lag = lag
        self._wall = wall
        self._start_ts = self.start.timestamp()
        self._origin_ts = self._start_ts - lag.total_seconds()

    @classmethod
    def frozen(cls, at: datetime, wall: Callable[[], float] = time.time) -> SimClock:
        """A clock stopped at `at` (or at the wall clock, if `at` is still in the future)."""
        return cls(at, speed=0.0, lag=timedelta(0), wall=wall)

    def advance(self, delta: timedelta) -> None:
        """Move simulated time forward by `delta` (tests let time pass on a frozen clock)."""
        self._origin_ts += delta.total_seconds()

    def now_ts(self) -> float:
        """Simulated now as a POSIX timestamp."""
        wall_now = self._wall()
        return min(wall_now, self._origin_ts + (wall_now - self._start_ts) * self.speed)

    def now_s(self) -> int:
        """Simulated now truncated to whole seconds: what `last_updated <= now` compares with."""
        return math.floor(self.now_ts())

    def now(self) -> datetime:
        """Simulated now as an aware UTC datetime."""
        return datetime.fromtimestamp(self.now_ts(), UTC)

    @property
    def origin(self) -> datetime:
        """The simulated time at the wall-clock start: `start - lag`."""
        return datetime.fromtimestamp(self._origin_ts, UTC)


def as_utc(value: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken to be UTC already (as OCPI does)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def fmt_ts(ts: int) -> str:
    """An OCPI DateTime (`YYYY-MM-DDTHH:MM:SSZ`, UTC) from whole POSIX seconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def parse_datetime(text: str) -> float:
    """A POSIX timestamp from an RFC 3339 DateTime; no zone means UTC. Raises ValueError."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1]
    offset = timedelta(0)
    tail = value[19:]
    sign_at = max(tail.rfind("+"), tail.rfind("-"))
    if sign_at >= 0:  # tolerated although OCPI says UTC only
        zone = tail[sign_at:]
        value = value[: 19 + sign_at]
        hours, _, minutes = zone[1:].partition(":")
        offset = timedelta(hours=int(hours), minutes=int(minutes or 0))
        offset = -offset if zone[0] == "-" else offset
    for pattern in _FORMATS:
        try:
            parsed = datetime.strptime(value, pattern)
        except ValueError:
            continue
        return (parsed.replace(tzinfo=UTC) - offset).timestamp()
    raise ValueError(f"not an RFC 3339 DateTime: {text!r}")


def to_ts(value: datetime | None) -> float | None:
    """A POSIX timestamp from an optional datetime (naive = UTC)."""
    return None if value is None else as_utc(value).timestamp()
