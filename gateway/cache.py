"""A response cache for GraphQL queries over HTTP: the same question, asked again before the data
changed, is answered with the bytes of the previous answer, without running it.

Front-end apps ask the same few queries again and again (the map's "100 locations with their
EVSEs" is one query), and the data only changes when the poller commits a window. Executing that
query costs tens of milliseconds of CPU (mostly graphql-core completing thousands of fields);
answering from the cache costs well under one.

What makes it honest:
- The key is (normalised query text, variables, operation name, extensions, principal). The
  principal (role, subject, credential error) is part of the key, so protected data is never
  served to another caller: two anonymous callers share entries, an administrator has their own.
- Invalidation: a process-wide data version, bumped by the poll scheduler after each committed
  window (`bump_data_version`). An entry records the version read *before* its query ran, and is
  served only while that is still the current version, so a result that may predate a commit is
  never served after it. Every other writer of served data must bump the version too.
- A short time-to-live is the safety net for what the version cannot see: writes by another
  gateway process on the same database (several replicas), or by a tool outside the gateway.
  Those are served at most `ttl` seconds stale.
- Only queries are cached (never mutations or subscriptions), only responses without errors, and
  only documents that parse within the token limit (the rest go through untouched, so their
  errors are produced as usual).
- Bounded: by number of entries and by total bytes, least recently used evicted first; a single
  response larger than `max_entry_bytes` is not stored.
- One execution per burst: while a query is being answered, identical requests wait for that
  answer instead of running the same query side by side (after an invalidation, N clients polling
  the same view would otherwise cost N executions at once).
- Switchable: `response_cache = "off"` in the configuration or `EVGATE_RESPONSE_CACHE=off`
  (`GatewayConfig`), or `create_app(..., cache=CacheSettings(enabled=False))`.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from graphql import GraphQLSyntaxError, OperationDefinitionNode, OperationType, parse, print_ast

# Queries (or variables) longer than this are not cached: they are part of the key (the query text
# also of the memo of normalised texts), and real front-end queries are a few hundred characters.
MAX_QUERY_CHARS = 10_000
# How many distinct query texts keep their normalised form in memory.
NORMALISED_QUERIES = 1024

_data_version = 0


def bump_data_version() -> None:
    """Say that stored data changed (a window was committed): no entry cached before is served."""
    global _data_version
    _data_version += 1


def data_version() -> int:
    """The current data version of this process."""
    return _data_version


# Safety net only (the data version is the real invalidation): short enough that another
# replica's commit shows within a few seconds, long enough to absorb a burst of requests.
DEFAULT_TTL = 3.0
DEFAULT_MAX_ENTRIES = 1000
# 64 MB holds hundreds of typical 100-location pages (about 85 kB each).
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
# One response bigger than this is not stored: it would evict many useful small ones.
DEFAULT_MAX_ENTRY_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class CacheSettings:
    """How the response cache is sized; `enabled=False` turns it off."""

    enabled: bool = True
    ttl: float = DEFAULT_TTL
    max_entries: int = DEFAULT_MAX_ENTRIES
    max_bytes: int = DEFAULT_MAX_BYTES
    max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES

    @classmethod
    def of(cls, switch: bool | str, ttl: float, megabytes: float) -> CacheSettings:
        """From the gateway's settings (`response_cache`, `response_cache_ttl`, `response_cache_mb`);
        "off" (or false), a TTL of 0 or a size of 0 turns the cache off."""
        on = switch if isinstance(switch, bool) else switch.strip().lower() not in ("off", "0", "false", "no")
        max_bytes = int(float(megabytes) * 2**20)
        return cls(enabled=on and float(ttl) > 0 and max_bytes > 0, ttl=float(ttl), max_bytes=max_bytes)


@dataclass(frozen=True, slots=True)
class _Entry:
    body: bytes
    version: int
    expires: float


@functools.lru_cache(maxsize=NORMALISED_QUERIES)
def _normalise(query: str, operation_name: str | None, max_tokens: int) -> str | None:
    """The canonical text of a query document (formatting and comments do not matter), or None
    when the document must not be cached: it does not parse, or the operation to run is not a
    query (or cannot be told)."""
    try:
        document = parse(query, no_location=True, max_tokens=max_tokens)
    except GraphQLSyntaxError:
        return None
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        operations = [op for op in operations if op.name is not None and op.name.value == operation_name]
    if len(operations) != 1 or operations[0].operation is not OperationType.QUERY:
        return None
    return print_ast(document)


def _canonical_json(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS) if value else b""


class ResponseCache:
    """Serialised GraphQL responses by (query, variables, operation, extensions, principal)."""

    def __init__(
        self, settings: CacheSettings, *, max_tokens: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.settings = settings
        self.max_tokens = max_tokens
        self._clock = clock
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._bytes = 0
        self._in_flight: dict[Hashable, asyncio.Event] = {}
        self.hits = 0
        self.misses = 0

    def key(
        self,
        query: str | None,
        variables: Mapping[str, Any] | None,
        operation_name: str | None,
        extensions: Mapping[str, Any] | None,
        principal: Hashable,
    ) -> Hashable | None:
        """The cache key of a request, or None when it must not be cached (not a query, or a
        document that does not parse: it goes through, and gets its error, as usual)."""
        if not query or len(query) > MAX_QUERY_CHARS:
            return None
        normalised = _normalise(query, operation_name, self.max_tokens)
        if normalised is None:
            return None
        try:
            arguments = _canonical_json(variables), _canonical_json(extensions)
            hash(principal)
        except TypeError:  # not JSON-serialisable, or an unhashable principal: cannot be keyed
            return None
        if sum(map(len, arguments)) > MAX_QUERY_CHARS:
            return None  # keys must stay small: real variables are a few ids and numbers
        return (normalised, *arguments, operation_name, principal)

    def get(self, key: Hashable) -> bytes | None:
        """The cached body, if there is one for the current data version and it has not expired."""
        entry = self._entries.get(key)
        if entry is None or entry.version != _data_version or entry.expires <= self._clock():
            if entry is not None:
                self._drop(key)
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry.body

    def put(self, key: Hashable, body: bytes, version: int) -> None:
        """Store a response body computed from data of `version` (read before the query ran)."""
        if version != _data_version or len(body) > self.settings.max_entry_bytes:
            return  # the data changed while it ran (it may be stale), or it is too big
        self._drop(key)
        self._entries[key] = _Entry(body, version, self._clock() + self.settings.ttl)
        self._bytes += len(body)
        while len(self._entries) > self.settings.max_entries or self._bytes > self.settings.max_bytes:
            self._drop(next(iter(self._entries)))  # least recently used first

    async def wait_for(self, key: Hashable) -> bytes | None:
        """If another request is answering `key` right now, wait for it and return its answer
        (None when nobody is, or when its answer could not be cached: then run the query)."""
        pending = self._in_flight.get(key)
        if pending is None:
            return None
        await pending.wait()
        return self.get(key)

    @contextmanager
    def computing(self, key: Hashable) -> Iterator[None]:
        """Mark `key` as being answered for the duration, so that identical requests `wait_for` it."""
        leader = key not in self._in_flight
        event = self._in_flight.setdefault(key, asyncio.Event())
        try:
            yield
        finally:
            if leader:
                del self._in_flight[key]
                event.set()

    def clear(self) -> None:
        """Forget every entry."""
        self._entries.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        """The total size of the cached bodies."""
        return self._bytes

    def _drop(self, key: Hashable) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= len(entry.body)


def create_cache(settings: CacheSettings, *, max_tokens: int) -> ResponseCache | None:
    """A response cache with `settings`, or None when they disable it."""
    return ResponseCache(settings, max_tokens=max_tokens) if settings.enabled else None
