"""Fault injection for the operator simulators (OCPI, OICP, Open Charge Map), by plan.

A `FaultPlan` is a list of `Fault`s, each loadable from a plain dict (`{"kind": "http_5xx",
"count": 3, "paths": ["locations"]}`) so plans can come from TOML/JSON configuration or the admin
endpoint (`simulator.control`). A `Faults` object serves one simulator: its `middleware` goes into
the server's `middlewares=` and answers request-level faults, and `apply(plan)` / `clear()` also
drive the server's `Listener` for the connection-level ones (an outage is connection refused, a
certificate fault a real handshake with another certificate). Nothing here knows the servers:
bodies are recognised by shape (OCPI envelope `data`, OICP `content` or `EvseStatuses`, a bare
list for Open Charge Map).

Every fault may be limited to request paths (substrings: `"locations"`, `"/evsepull/"`), to its
next `count` matching requests, to a `probability` per request (seeded RNG: the same seed and plan
fire on the same requests) and to a time window `start`/`duration`. Windows are measured in wall
seconds (monotonic) since the plan was applied, not in simulated time: tests freeze the simulated
clock, and an outage of 30 s should last 30 s for the client whatever the simulation speed.
The counters (`Faults.fired`, per kind, and per fault in `active()`) count the responses a
request-level fault changed, and the times a connection-level fault was switched on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson
from aiohttp import web

from simulator.model import seed_int
from simulator.tls_faults import TLS_KINDS, TlsFaults

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

LISTENER_KINDS = frozenset({"outage", *TLS_KINDS})
# Faults answered before the handler runs, and faults that rewrite the handler's response.
_EARLY_KINDS = frozenset({"http_5xx", "rate_limit", "timeout", "slow"})
_LATE_KINDS = frozenset({"malformed_records", "truncated_json", "ocpi_status", "oicp_status"})
KINDS = (
    "outage",
    "http_5xx",
    "timeout",
    "slow",
    "malformed_records",
    "truncated_json",
    "rate_limit",
    "ocpi_status",
    "oicp_status",
    *TLS_KINDS,
)
_COMMON = frozenset({"kind", "start", "duration"})
_PER_REQUEST = frozenset({"paths", "count", "probability"})
_KIND_PARAMS: dict[str, frozenset[str]] = {
    "outage": frozenset(),
    "http_5xx": frozenset({"status", "retry_after"}),
    "timeout": frozenset({"delay"}),
    "slow": frozenset({"delay"}),
    "malformed_records": frozenset({"records"}),
    "truncated_json": frozenset(),
    "rate_limit": frozenset({"retry_after"}),
    "ocpi_status": frozenset({"status_code", "message"}),
    "oicp_status": frozenset({"status_code", "message"}),
    **{kind: frozenset() for kind in TLS_KINDS},
}
DEFAULT_DELAY = {"timeout": 120.0, "slow": 2.0}  # timeout: longer than any client's timeout
MAX_DELAY = 600.0
MAX_WINDOW = 86_400.0
MAX_FAULTS = 100
MAX_RECORDS = 1000

OCPI_MESSAGES = {
    2000: "Generic client error",
    2001: "Invalid or missing parameters",
    2002: "Not enough information",
    2003: "Unknown Location",
    2004: "Unknown Token",
    3000: "Generic server error",
    3001: "Unable to use the client's API",
    3002: "Unsupported version",
    3003: "No matching endpoints or expected endpoints missing between parties",
    4000: "Generic error",
    4001: "Unknown receiver",
    4002: "Timeout on forwarded request",
    4003: "Connection problem",
}
OICP_MESSAGES = {
    "001": "Hubject system error",
    "002": "Hubject database error",
    "009": "Data transaction error",
    "017": "Unauthorized Access",
    "021": "System error",
    "022": "Data error",
    "300": "Partner not found",
    "310": "Partner did not respond",
    "320": "Service not available",
}
_REASONS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}


class FaultConfigError(ValueError):
    """A plan that cannot be applied; the message names the fault and the parameter."""


# -- the plan --------------------------------------------------------------------------------------


def _number(where: str, name: str, value: Any, lo: float, hi: float, *, integer: bool = False) -> Any:
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise FaultConfigError(f"{where}: {name} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if not lo <= value <= hi:
        raise FaultConfigError(f"{where}: {name} must be between {lo:g} and {hi:g}, got {value!r}")
    return value if integer else float(value)


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault and its limits; kind-specific parameters are ignored by the other kinds."""

    kind: str
    paths: tuple[str, ...] = ()  # substrings of the request path; empty: every request
    count: int | None = None  # fire on the next `count` matching requests only
    probability: float = 1.0  # chance of firing per matching request
    start: float = 0.0  # wall seconds after apply() before it is active
    duration: float | None = None  # wall seconds it stays active; None: until cleared
    status: tuple[int, ...] = (500, 502, 503)  # http_5xx, cycled
    delay: float | None = None  # timeout / slow, seconds (DEFAULT_DELAY)
    records: int = 4  # malformed_records: bad records inserted per response
    retry_after: int | None = None  # rate_limit (default 30), and 503s of http_5xx
    status_code: int | str | None = None  # ocpi_status (default 3001) / oicp_status (default "320")
    message: str | None = None  # ocpi_status / oicp_status

    @classmethod
    def from_config(cls, raw: Mapping[str, Any], where: str = "fault") -> Fault:
        """Validate one `{"kind": ..., ...params}` mapping (FaultConfigError names the problem)."""
        if not isinstance(raw, Mapping):
            raise FaultConfigError(f"{where}: expected an object, got {type(raw).__name__}")
        kind = raw.get("kind")
        if not isinstance(kind, str) or kind not in _KIND_PARAMS:
            raise FaultConfigError(f"{where}: unknown kind {kind!r} (known: {', '.join(KINDS)})")
        where = f"{where} ({kind})"
        allowed = _COMMON | _KIND_PARAMS[kind] | (frozenset() if kind in LISTENER_KINDS else _PER_REQUEST)
        unknown = sorted(str(k) for k in raw if k not in allowed)
        if unknown:
            hint = " (connection-level faults apply to every request)" if set(unknown) & _PER_REQUEST else ""
            raise FaultConfigError(f"{where}: unknown parameter(s) {', '.join(unknown)}{hint}")
        values: dict[str, Any] = {"kind": kind}
        if "paths" in raw:
            paths = raw["paths"]
            paths = [paths] if isinstance(paths, str) else paths
            ok = isinstance(paths, list | tuple) and len(paths) <= 20
            if not ok or not all(isinstance(p, str) and p for p in paths):
                raise FaultConfigError(f"{where}: paths must be a list of up to 20 non-empty strings")
            values["paths"] = tuple(paths)
        if "count" in raw:
            values["count"] = _number(where, "count", raw["count"], 1, 1_000_000, integer=True)
        if "probability" in raw:
            values["probability"] = _number(where, "probability", raw["probability"], 0.0, 1.0)
        if "start" in raw:
            values["start"] = _number(where, "start", raw["start"], 0.0, MAX_WINDOW)
        if raw.get("duration") is not None:
            values["duration"] = _number(where, "duration", raw["duration"], 0.001, MAX_WINDOW)
        if "delay" in raw:
            values["delay"] = _number(where, "delay", raw["delay"], 0.0, MAX_DELAY)
        if "records" in raw:
            values["records"] = _number(where, "records", raw["records"], 1, MAX_RECORDS, integer=True)
        if "retry_after" in raw:
            values["retry_after"] = _number(where, "retry_after", raw["retry_after"], 0, 86_400, integer=True)
        if "status" in raw:
            status = list(raw["status"]) if isinstance(raw["status"], list | tuple) else [raw["status"]]
            if not status or len(status) > 10:
                raise FaultConfigError(f"{where}: status must be one HTTP 5xx code or a list of up to 10")
            values["status"] = tuple(_number(where, "status", s, 500, 599, integer=True) for s in status)
        if "status_code" in raw:
            values["status_code"] = _status_code(where, kind, raw["status_code"])
        if "message" in raw:
            if not isinstance(raw["message"], str) or len(raw["message"]) > 500:
                raise FaultConfigError(f"{where}: message must be a string of at most 500 characters")
            values["message"] = raw["message"]
        return cls(**values)

    def to_config(self) -> dict[str, Any]:
        """The parameters that mean something for this kind, as `from_config` reads them."""
        keep = _COMMON | _KIND_PARAMS[self.kind] | (frozenset() if self.kind in LISTENER_KINDS else _PER_REQUEST)
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in keep and value is not None and (f.name == "kind" or value != f.default):
                out[f.name] = list(value) if isinstance(value, tuple) else value
        if self.kind in DEFAULT_DELAY:
            out["delay"] = self.effective_delay
        return out

    @property
    def effective_delay(self) -> float:
        return DEFAULT_DELAY.get(self.kind, 0.0) if self.delay is None else self.delay

    @property
    def end(self) -> float | None:
        return None if self.duration is None else self.start + self.duration


def _status_code(where: str, kind: str, value: Any) -> int | str:
    if kind == "ocpi_status":
        return _number(where, "status_code", value, 2000, 4999, integer=True)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 999:
        value = f"{value:03d}"
    if not isinstance(value, str) or len(value) != 3 or not value.isdigit() or value == "000":
        raise FaultConfigError(f"{where}: status_code must be a 3-digit OICP error code such as '017', got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """The faults of one server, in order (for one request, earlier faults act first)."""

    faults: tuple[Fault, ...] = ()

    @classmethod
    def from_config(cls, raw: Any) -> FaultPlan:
        """A plan from a list of fault mappings, `{"faults": [...]}`, or a FaultPlan."""
        if isinstance(raw, FaultPlan):
            return raw
        if raw is None:
            return cls()
        if isinstance(raw, Mapping):
            extra = sorted(str(k) for k in raw if k != "faults")
            if extra:
                raise FaultConfigError(f"plan: unknown key(s) {', '.join(extra)} (expected only 'faults')")
            raw = raw.get("faults", [])
        if isinstance(raw, Fault):
            raw = [raw]
        if not isinstance(raw, list | tuple):
            raise FaultConfigError(f"plan: expected a list of faults, got {type(raw).__name__}")
        if len(raw) > MAX_FAULTS:
            raise FaultConfigError(f"plan: at most {MAX_FAULTS} faults, got {len(raw)}")
        return cls(
            tuple(f if isinstance(f, Fault) else Fault.from_config(f, f"faults[{i}]") for i, f in enumerate(raw))
        )

    def to_config(self) -> list[dict[str, Any]]:
        return [f.to_config() for f in self.faults]


# -- body rewriting (pure, shape-agnostic) -------------------------------------------------------

_ID_KEYS = ("id", "uid", "EvseID", "EvseId", "SessionID", "ID", "UUID")
_DATE_KEYS = (
    "last_updated",
    "lastUpdate",
    "DateLastStatusUpdate",
    "DateLastVerified",
    "ChargingEnd",
    "SessionEnd",
    "start_date_time",
    "DateCreated",
)
# Fields whose type parsers rely on, with a wrongly typed but plausible value.
_WRONG_TYPES: tuple[tuple[str, Any], ...] = (
    ("coordinates", "51.50740,-0.12780"),
    ("kwh", "twelve"),
    ("total_energy", "n/a"),
    ("elements", "see website"),
    ("GeoCoordinates", "52.52 13.40"),
    ("ConsumedEnergy", "lots"),
    ("EvseStatus", 3),
    ("AddressInfo", "London"),
    ("Connections", "Type 2"),
)
MUTATIONS = ("missing_id", "bad_date", "wrong_type", "non_object")


def record_list(body: Any) -> list[Any] | None:
    """The list of records in a response body of any simulator, or None."""
    if isinstance(body, list):
        return body  # Open Charge Map, or a bare OCPI array
    if not isinstance(body, dict):
        return None
    for key in ("data", "content"):  # OCPI envelope, OICP Spring page
        if isinstance(body.get(key), list):
            return body[key]
    by_id = body.get("EVSEStatusRecords")  # OICP PullEvseStatusById
    if isinstance(by_id, dict) and isinstance(by_id.get("EvseStatusRecord"), list):
        return by_id["EvseStatusRecord"]
    statuses = body.get("EvseStatuses")  # OICP PullEvseStatus
    if isinstance(statuses, dict) and isinstance(statuses.get("OperatorEvseStatus"), list):
        for operator in statuses["OperatorEvseStatus"]:
            if isinstance(operator, dict) and isinstance(operator.get("EvseStatusRecord"), list):
                return operator["EvseStatusRecord"]
    return None


def _id_key(record: dict[str, Any]) -> str | None:
    return next((k for k in _ID_KEYS if k in record), None)


def _fresh_id_after(records: list[Any], i: int, n: int) -> Any:
    """An unused id for a bad copy of records[i] placed right after it, or None when there is no
    room. String ids get a suffix. Integer ids (Open Charge Map pages by `greaterthanid`, so ids
    must ascend) need a gap before the next id on the page, and never follow the page's last
    record: the client's keyset would then jump past real records of the next page."""
    record = records[i]
    key = _id_key(record)
    value = None if key is None else record[key]
    if isinstance(value, str):
        return f"{value}-BAD{n}"
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    following = next((r[key] for r in records[i + 1 :] if isinstance(r, dict) and isinstance(r.get(key), int)), None)
    return value + 1 if following is not None and following - value >= 2 else None


def malformed_record(template: Any, mutation: str, fresh_id: Any = None, n: int = 0) -> Any:
    """A realistic bad record made from a good one (`template`), broken in one way; it carries
    `fresh_id` (None: no id at all) so that it never overwrites a good record downstream."""
    if mutation == "non_object" or not isinstance(template, dict):
        return None if n % 2 == 0 else "<record unavailable>"
    record = orjson.loads(orjson.dumps(template))
    id_key = _id_key(record)
    for key in _ID_KEYS:
        record.pop(key, None)
    if mutation == "missing_id" or fresh_id is None or id_key is None:
        return record
    record[id_key] = fresh_id
    if mutation == "bad_date":
        date_key = next((k for k in _DATE_KEYS if k in record), None)
        if date_key is not None:
            record[date_key] = "2024-02-30T25:61:00Z"  # no such day, hour or minute
            return record
    wrong = next(((k, v) for k, v in _WRONG_TYPES if k in record), None)
    if wrong is not None:
        record[wrong[0]] = wrong[1]
    else:
        record[id_key] = {"value": fresh_id}  # an object where a scalar id belongs
    return record


def insert_malformed(body: Any, count: int, rng: random.Random) -> int:
    """Insert `count` bad records (cycling MUTATIONS) into the body's record list, in place, each
    right after the good record it was made from, so the page keeps its sort order (ids and
    timestamps; a bad date or a missing id is no sort key). The good records stay, in order.
    Where no fresh id fits, the bad record goes without an id. Returns how many were inserted."""
    records = record_list(body)
    if records is None:
        return 0
    originals = [r for r in records if isinstance(r, dict)]
    for n in range(count):
        mutation = MUTATIONS[n % len(MUTATIONS)]
        template = rng.choice(originals) if originals and mutation != "non_object" else None
        if template is None:
            records.insert(rng.randint(0, len(records)), malformed_record(None, "non_object", n=n))
            continue
        i = next(k for k, r in enumerate(records) if r is template)
        fresh = None if mutation == "missing_id" else _fresh_id_after(records, i, n)
        records.insert(i + 1, malformed_record(template, mutation, fresh, n))
    return count


def ocpi_status_body(original: Any, code: int, message: str | None) -> dict[str, Any]:
    """An OCPI error envelope without data, keeping the server's timestamp when it had one."""
    timestamp = original.get("timestamp") if isinstance(original, dict) else None
    if not isinstance(timestamp, str):
        timestamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "status_code": code,
        "status_message": message or OCPI_MESSAGES.get(code, "Error"),
        "timestamp": timestamp,
    }


def oicp_status_body(original: Any, code: str, message: str | None) -> dict[str, Any]:
    """The same OICP response with no records and an error StatusCode (an eRoamingAcknowledgement
    when the body was not a known OICP response)."""
    status = {"Code": code, "Description": message or OICP_MESSAGES.get(code, "Error"), "AdditionalInfo": None}
    if isinstance(original, dict) and isinstance(original.get("content"), list):
        page = dict(original)
        page.update(content=[], numberOfElements=0, totalElements=0, totalPages=0, StatusCode=status)
        return page
    if isinstance(original, dict) and "EvseStatuses" in original:
        return {"EvseStatuses": {"OperatorEvseStatus": []}, "StatusCode": status}
    if isinstance(original, dict) and "EVSEStatusRecords" in original:
        return {"EVSEStatusRecords": {"EvseStatusRecord": []}, "StatusCode": status}
    return {"Result": False, "StatusCode": status, "SessionID": None, "CPOPartnerSessionID": None}


def _with_body(response: web.Response, body: bytes, status: int | None = None) -> web.Response:
    """A copy of `response` with another body (Content-Length recomputed)."""
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
    return web.Response(body=body, status=status or response.status, headers=headers)


def _json_or_none(raw: Any) -> Any:
    """The decoded JSON of a response body given as bytes, or None (not bytes, or not JSON)."""
    if not isinstance(raw, bytes | bytearray):
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


# -- the per-server fault state ------------------------------------------------------------------


class _HasListener(Protocol):
    listener: Any


@dataclass(slots=True)
class _Armed:
    """A fault of the applied plan and what it has done so far."""

    fault: Fault
    remaining: int | None
    fired: int = 0

    def in_window(self, now: float) -> bool:
        end = self.fault.end
        return self.fault.start <= now and (end is None or now < end)

    def matches(self, path: str, now: float) -> bool:
        f = self.fault
        return (
            (self.remaining is None or self.remaining > 0)
            and self.in_window(now)
            and (not f.paths or any(p in path for p in f.paths))
        )

    def state(self, now: float) -> str:
        if self.remaining == 0:
            return "spent"
        if now < self.fault.start:
            return "pending"
        return "active" if self.in_window(now) else "expired"


@dataclass(eq=False)
class Faults:
    """The faults of one simulated server: a middleware, the listener switch, counters.

    Build it before the server, pass `middleware` in `middlewares=`, then `attach(server)` so
    that outages and TLS faults can act on `server.listener`.
    """

    seed: int = 0
    directory: Path | None = None  # the simulation's PKI directory (TLS faults write under it)
    name: str = ""  # the operator id: part of the RNG seed and of log lines
    clock: Callable[[], float] = time.monotonic
    listener: Any = None
    fired: Counter[str] = field(default_factory=Counter)  # per kind, since creation

    def __post_init__(self) -> None:
        self._armed: list[_Armed] = []
        self._applied_at = self.clock()
        self._rng = random.Random(seed_int(self.seed, self.name, "faults"))
        self._release = asyncio.Event()
        self._listener_state: str | None = None  # None: normal; "outage" or a TLS kind
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._tls: TlsFaults | None = None
        self._tmpdir: Path | None = None

    # -- wiring --------------------------------------------------------------------------------

    def attach(self, server: _HasListener) -> Faults:
        """Let connection-level faults act on `server.listener`; returns self."""
        self.listener = server.listener
        return self

    @property
    def middleware(self) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
        """The aiohttp middleware answering request-level faults."""
        return self._middleware

    # -- plan ----------------------------------------------------------------------------------

    async def apply(self, plan: Any) -> None:
        """Replace the active plan (anything `FaultPlan.from_config` reads); windows start now.

        Raises FaultConfigError, leaving the previous plan in place, when the plan is invalid."""
        plan = FaultPlan.from_config(plan)
        if any(f.kind in LISTENER_KINDS for f in plan.faults) and not self._listener_ready():
            raise FaultConfigError("connection-level faults need a started server: attach() and start() it first")
        async with self._lock:
            await self._stop_task()
            self._release.set()  # let responses held by the old plan go
            self._release = asyncio.Event()
            self._armed = [_Armed(f, f.count) for f in plan.faults]
            self._applied_at = self.clock()
            self._rng = random.Random(seed_int(self.seed, self.name, "faults"))
            await self._set_listener(self._wanted(0.0))
            if any(a.fault.kind in LISTENER_KINDS for a in self._armed):
                self._task = asyncio.create_task(self._drive_listener(), name=f"faults-{self.name}")

    async def clear(self) -> None:
        """Remove every fault: held responses go, the listener serves normally again."""
        await self.apply(FaultPlan())

    async def close(self) -> None:
        """Clear, and remove the TLS files this object wrote to a temporary directory."""
        await self.clear()
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def active(self) -> dict[str, Any]:
        """The plan, each fault's state and firings, the listener state and the per-kind counters
        (JSON-serialisable)."""
        now = self._elapsed()
        return {
            "faults": [
                {**a.fault.to_config(), "state": a.state(now), "fired": a.fired}
                | ({} if a.remaining is None else {"remaining": a.remaining})
                for a in self._armed
            ],
            "listener": self._listener_state or "normal",
            "applied_seconds_ago": round(now, 3),
            "fired": dict(sorted(self.fired.items())),
        }

    # -- request level -------------------------------------------------------------------------

    def _elapsed(self) -> float:
        return self.clock() - self._applied_at

    def _take(self, armed: _Armed) -> bool:
        """Whether the fault fires on this request (probability roll), counting it when it does."""
        if armed.fault.probability < 1.0 and self._rng.random() >= armed.fault.probability:
            return False
        if armed.remaining is not None:
            armed.remaining -= 1
        armed.fired += 1
        self.fired[armed.fault.kind] += 1
        return True

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self._armed:
            return await handler(request)
        now = self._elapsed()
        late: list[_Armed] = []
        for armed in list(self._armed):
            kind = armed.fault.kind
            if kind in LISTENER_KINDS or not armed.matches(request.path, now):
                continue
            if kind in _LATE_KINDS:
                late.append(armed)
            elif self._take(armed):
                early = await self._early(armed)
                if early is not None:
                    return early
        response = await handler(request)
        for armed in late:
            response = self._late(armed, response)
        return response

    async def _early(self, armed: _Armed) -> web.StreamResponse | None:
        """A 5xx or 429 answer instead of the handler's, or a delay before it."""
        f = armed.fault
        if f.kind == "http_5xx":
            status = f.status[(armed.fired - 1) % len(f.status)]
            reason = _REASONS.get(status, "Server Error")
            headers = {"Retry-After": str(f.retry_after)} if f.retry_after is not None and status == 503 else None
            html = f"<html><head><title>{status} {reason}</title></head><body><h1>{status} {reason}</h1></body></html>"
            return web.Response(status=status, text=html, content_type="text/html", headers=headers)
        if f.kind == "rate_limit":
            retry_after = 30 if f.retry_after is None else f.retry_after
            return web.Response(status=429, text="Too Many Requests", headers={"Retry-After": str(retry_after)})
        if f.kind == "timeout":
            release = self._release
            with contextlib.suppress(TimeoutError):  # held until the delay passes or the plan changes
                await asyncio.wait_for(release.wait(), f.effective_delay)
        elif f.kind == "slow":
            await asyncio.sleep(f.effective_delay)
        return None

    def _late(self, armed: _Armed, response: web.StreamResponse) -> web.StreamResponse:
        """The handler's response rewritten by a body fault, when the fault applies to it."""
        kind = armed.fault.kind
        raw = response.body if isinstance(response, web.Response) else None
        body = _json_or_none(raw)
        if kind in ("ocpi_status", "oicp_status"):
            if not self._take(armed):
                return response
            if kind == "ocpi_status":
                new = ocpi_status_body(body, int(armed.fault.status_code or 3001), armed.fault.message)
            else:
                new = oicp_status_body(body, str(armed.fault.status_code or "320"), armed.fault.message)
            return web.Response(body=orjson.dumps(new), status=200, content_type="application/json")
        if not isinstance(response, web.Response) or body is None or response.status >= 300:
            return response  # only successful JSON answers are corrupted
        assert isinstance(raw, bytes | bytearray)
        if kind == "truncated_json" and len(raw) >= 2 and self._take(armed):
            return _with_body(response, bytes(raw[: len(raw) // 2]))
        if kind == "malformed_records" and record_list(body) is not None and self._take(armed):
            insert_malformed(body, armed.fault.records, self._rng)
            return _with_body(response, orjson.dumps(body))
        return response

    # -- connection level ----------------------------------------------------------------------

    def _listener_ready(self) -> bool:
        return self.listener is not None and bool(getattr(self.listener, "running", False))

    def _wanted(self, now: float) -> str | None:
        """The connection-level fault in force at `now` (the first in plan order), or None."""
        return next(
            (a.fault.kind for a in self._armed if a.fault.kind in LISTENER_KINDS and a.in_window(now)),
            None,
        )

    def _edges(self) -> list[float]:
        times: set[float] = set()
        for a in self._armed:
            if a.fault.kind in LISTENER_KINDS:
                times.update(t for t in (a.fault.start, a.fault.end) if t is not None and t > 0)
        return sorted(times)

    async def _drive_listener(self) -> None:
        """Switch the listener at each window edge of the plan (bounded by the number of edges)."""
        try:
            for edge in self._edges():
                await asyncio.sleep(max(0.0, edge - self._elapsed()))
                async with self._lock:
                    await self._set_listener(self._wanted(self._elapsed()))
        except Exception:  # e.g. the port was taken meanwhile: log it, the admin can clear or retry
            log.exception("faults %s: switching the listener failed", self.name)

    async def _stop_task(self) -> None:
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _set_listener(self, wanted: str | None) -> None:
        if wanted == self._listener_state or not self._listener_ready():
            return
        listener = self.listener
        if wanted == "outage":
            await listener.down()
        elif wanted is None:
            await listener.up()
        else:
            await listener.up(self._tls_faults().context(wanted))
        _drop_connections(listener)  # a pooled keep-alive connection must not outlive the switch
        self._listener_state = wanted
        if wanted is not None:
            self.fired[wanted] += 1
            for armed in self._armed:
                if armed.fault.kind == wanted:
                    armed.fired += 1
                    break

    def _tls_faults(self) -> TlsFaults:
        if self._tls is None:
            directory = self.directory
            if directory is None:
                self._tmpdir = directory = Path(tempfile.mkdtemp(prefix="evgate-sim-faults-"))
            self._tls = TlsFaults(self.seed, directory)
        return self._tls


def _drop_connections(listener: Any) -> None:
    """Close the connections already established with the listener's server.

    Stopping an aiohttp site only stops accepting: keep-alive connections would go on being
    served, so a client with a pooled connection would see neither an outage nor a new
    certificate."""
    listener.drop_connections()


def attach_faults(server: _HasListener, seed: int, directory: Path | None, name: str = "") -> Faults:
    """Faults for a server that is built but not started yet, its middleware slotted in right
    after the outermost one (OcpiServer's id/Date echo) of `server.app`.

    Prefer building `Faults` first and passing `faults.middleware` in `middlewares=`; this is for
    servers that take no `middlewares=` argument."""
    faults = Faults(seed=seed, directory=directory, name=name)
    app: web.Application = server.app  # type: ignore[attr-defined]
    if app.frozen:
        raise RuntimeError("attach_faults() must run before the server starts")
    app.middlewares.insert(min(1, len(app.middlewares)), faults.middleware)
    return faults.attach(server)
