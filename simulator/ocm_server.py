"""An Open Charge Map API v3 look-alike over the whole simulated world: `GET /v3/poi`.

OCM aggregates what others publish, so most operator sites appear there a second time: one POI
for about 85 % of the sites (seeded), a few metres off, with the address written differently and
`OperatorInfo.Title` the operator's name. These are the duplicates the gateway must recognise;
`duplicates()` is the ground truth. About 10 % more POIs are community-only: sites in London that
no simulated operator serves, at least 150 m from every operator site; a few of them are added
during the simulated days (they appear once their DateCreated has passed).

Statuses follow the operators' EVSEs: a connection is Operational (50), Partly Operational (75) or
Not Operational (100) by how many of its EVSEs are out of order or inoperative, and
`DateLastStatusUpdate` is the last time that changed (a fault started or ended at the site), so it
moves as simulated time advances. The response is a bare JSON array, as OCM's is. Query parameters:
`boundingbox`, `modifiedsince` (DateLastStatusUpdate >= it), `sortby` (`id_asc`, the default here,
or `modified_asc`), `maxresults` (default 100), `greaterthanid`, `countrycode`, `compact`,
`verbose`; others are ignored. The API key goes in `X-API-Key` or `key=`, else HTTP 401.
"""

from __future__ import annotations

import bisect
import hmac
import logging
import math
import random
import re
import ssl
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import formatdate
from typing import Any

import orjson
from aiohttp import web

from simulator.clock import SimClock, fmt_ts, parse_datetime, to_ts
from simulator.data import World
from simulator.listener import ListenedServer, Listener
from simulator.model import DAY, Evse, Location, seed_int
from simulator.ocpi_server import Handler, Middleware
from simulator.oicp_views import site_postcode
from simulator.sites import STREETS

log = logging.getLogger(__name__)

Json = dict[str, Any]
DUPLICATE_SHARE = 0.85
COMMUNITY_SHARE = 0.10
LATE_COMMUNITY_SHARE = 0.1  # of the community POIs, created during the first two simulated weeks
COMMUNITY_MIN_DISTANCE_M = 150.0
FAULTS = frozenset({"OUTOFORDER", "INOPERATIVE"})
MAX_RESULTS = 10_000
EARTH_M_PER_DEG = 111_320.0

UNKNOWN_OPERATOR = (1, "(Unknown Operator)")
DATA_PROVIDER = {"ID": 1, "Title": "Open Charge Map Contributors"}
COUNTRY = {"ID": 1, "ISOCode": "GB", "ContinentCode": "EU", "Title": "United Kingdom"}
STATUS_TYPES = {
    50: {"ID": 50, "Title": "Operational", "IsOperational": True, "IsUserSelectable": True},
    75: {"ID": 75, "Title": "Partly Operational (Mixed)", "IsOperational": True, "IsUserSelectable": True},
    100: {"ID": 100, "Title": "Not Operational", "IsOperational": False, "IsUserSelectable": True},
}
USAGE_TYPES = {
    1: {"ID": 1, "Title": "Public", "IsPayAtLocation": None, "IsMembershipRequired": None, "IsAccessKeyRequired": None},
    4: {"ID": 4, "Title": "Public - Membership Required", "IsPayAtLocation": False, "IsMembershipRequired": True},
    5: {"ID": 5, "Title": "Public - Pay At Location", "IsPayAtLocation": True, "IsMembershipRequired": False},
    6: {"ID": 6, "Title": "Private - For Staff, Visitors or Customers", "IsPayAtLocation": False},
}
CONNECTION_TYPES = {  # OCPI (standard, format) -> OCM ConnectionType
    ("IEC_62196_T2", "SOCKET"): {"ID": 25, "Title": "Type 2 (Socket Only)", "FormalName": "IEC 62196-2 Type 2"},
    ("IEC_62196_T2_COMBO", "CABLE"): {"ID": 33, "Title": "CCS (Type 2)", "FormalName": "IEC 62196-3 Configuration FF"},
    ("CHADEMO", "CABLE"): {"ID": 2, "Title": "CHAdeMO", "FormalName": "IEC 62196-3 Configuration AA"},
}
CURRENT_TYPES = {
    "AC_1_PHASE": {"ID": 10, "Title": "AC (Single-Phase)"},
    "AC_3_PHASE": {"ID": 20, "Title": "AC (Three-Phase)"},
    "DC": {"ID": 30, "Title": "DC"},
}
COMMUNITY_KINDS = ("Community Charger", "Supermarket Car Park", "Hotel Car Park", "Leisure Centre", "Church Hall")
_BBOX_RE = re.compile(r"^\(\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*\)\s*,\s*\(\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*\)$")


@dataclass(frozen=True, slots=True)
class Connection:
    """A group of identical connectors at a POI; `evses` are the operator EVSEs that have one."""

    id: int
    key: tuple[str, str]  # OCPI (standard, format)
    power_type: str
    power_kw: float
    amps: int
    voltage: int
    quantity: int
    evses: tuple[Evse, ...]


@dataclass(frozen=True, slots=True)
class Poi:
    """One OCM charge point; `source` is (operator id, location id) for the duplicates."""

    id: int
    title: str
    address_line: str
    town: str
    postcode: str
    latitude: float
    longitude: float
    created: int
    operator: tuple[int, str]
    usage_type: int
    points: int
    connections: tuple[Connection, ...]
    source: tuple[str, str] | None


@dataclass(frozen=True, slots=True)
class PoiState:
    """A POI's status at one simulated time."""

    poi: Poi
    modified: int  # DateLastStatusUpdate
    status: int
    connection_status: tuple[int, ...]


class OcmError(Exception):
    """A request answered with an HTTP error and a JSON message."""

    def __init__(self, http_status: int, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.message = message


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * 6_371_000.0 * math.asin(math.sqrt(a))


def _offset(lat: float, lon: float, metres: float, bearing: float) -> tuple[float, float]:
    """The point `metres` away in direction `bearing` (radians), rounded to 6 decimals."""
    dlat = metres * math.cos(bearing) / EARTH_M_PER_DEG
    dlon = metres * math.sin(bearing) / (EARTH_M_PER_DEG * math.cos(math.radians(lat)))
    return round(lat + dlat, 6), round(lon + dlon, 6)


def _edges(evse: Evse) -> list[int]:
    """The sorted times at which an EVSE's faults started or ended."""
    intervals = zip(evse.starts, evse.ends, evse.statuses, strict=True)
    return sorted(t for start, end, status in intervals if status in FAULTS for t in (start, end))


def _status(total: int, faulted: int) -> int:
    return 50 if faulted == 0 else 100 if faulted == total else 75


def _duplicate(rng: random.Random, operator: tuple[int, str], op_id: str, loc: Location) -> Callable[[int], Poi]:
    """An operator site as a contributor entered it: a few metres off, worded differently."""
    lat, lon = _offset(float(loc.latitude), float(loc.longitude), rng.uniform(2.0, 15.0), rng.uniform(0, math.tau))
    number, _, street = loc.address.partition(" ")
    short = street.replace(" Road", " Rd").replace(" Street", " St").replace(" Lane", " Ln")
    title = rng.choice(
        (f"{street}, {loc.borough_name}", f"{operator[1]} - {street}", loc.name.split(",")[0].replace(street, short))
    )
    address_line = rng.choice((f"{number} {short}", f"{number}, {street}", street))
    town = rng.choice(("London", loc.borough_name))
    postcode = site_postcode(loc.id, loc.borough_gss)
    postcode = postcode if rng.random() < 0.8 else postcode.replace(" ", "")
    created = loc.base_updated + rng.randrange(DAY, 28 * DAY)
    usage = 5 if any("CREDIT_CARD_PAYABLE" in e.capabilities for e in loc.evses) else 4

    def make(poi_id: int) -> Poi:
        return Poi(
            id=poi_id,
            title=title,
            address_line=address_line,
            town=town,
            postcode=postcode,
            latitude=lat,
            longitude=lon,
            created=created,
            operator=operator,
            usage_type=usage,
            points=len(loc.evses),
            connections=_connections(poi_id, loc.evses),
            source=(op_id, loc.id),
        )

    return make


def _community(rng: random.Random, sites: Sequence[Location], range_start: int) -> Callable[[int], Poi]:
    """A charge point in London (inside the sites' bounding box) far from every operator site."""
    points = [(float(s.latitude), float(s.longitude)) for s in sites]
    lats, lons = [p[0] for p in points], [p[1] for p in points]
    while True:
        anchor = rng.choice(sites)
        lat, lon = _offset(
            float(anchor.latitude), float(anchor.longitude), rng.uniform(300, 2500), rng.uniform(0, math.tau)
        )
        inside = min(lats) <= lat <= max(lats) and min(lons) <= lon <= max(lons)
        if inside and all(distance_m(lat, lon, a, b) >= COMMUNITY_MIN_DISTANCE_M for a, b in points):
            break
    street, kind = rng.choice(STREETS), rng.choice(COMMUNITY_KINDS)
    number, quantity = rng.randint(1, 200), rng.randint(1, 4)
    kw, amps, volts, power_type = rng.choice(((7.4, 32, 230, "AC_1_PHASE"), (22.0, 32, 400, "AC_3_PHASE")))
    late = rng.random() < LATE_COMMUNITY_SHARE
    created = range_start + rng.randrange(14 * DAY) if late else range_start - rng.randrange(DAY, 400 * DAY)
    usage = rng.choice((1, 6))
    postcode = site_postcode(f"community-{lat}-{lon}", anchor.borough_gss)

    def make(poi_id: int) -> Poi:
        connection = Connection(poi_id * 10, ("IEC_62196_T2", "SOCKET"), power_type, kw, amps, volts, quantity, ())
        return Poi(
            id=poi_id,
            title=f"{street} {kind}",
            address_line=f"{number} {street}",
            town="London",
            postcode=postcode,
            latitude=lat,
            longitude=lon,
            created=created,
            operator=UNKNOWN_OPERATOR,
            usage_type=usage,
            points=quantity,
            connections=(connection,),
            source=None,
        )

    return make


def _connections(poi_id: int, evses: Sequence[Evse]) -> tuple[Connection, ...]:
    """The EVSEs' connectors grouped by type and rating, one group per kind with its quantity."""
    groups: dict[tuple[Any, ...], list[Evse]] = {}
    for evse in evses:
        for c in evse.connectors:
            key = (c.standard, c.format, c.power_type, c.max_electric_power, c.max_amperage, c.max_voltage)
            groups.setdefault(key, []).append(evse)
    return tuple(
        Connection(poi_id * 10 + k, (std, fmt), ptype, watts / 1000, amps, volts, len(members), tuple(members))
        for k, ((std, fmt, ptype, watts, amps, volts), members) in enumerate(groups.items())
    )


class OcmCatalogue:
    """The POIs of one world (fixed by its seed) and their states at a simulated time."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.pois = self._build()
        self._at: tuple[int, tuple[int, ...]] | None = None
        self._states: list[PoiState] = []
        self._edges: dict[str, tuple[int, dict[str, list[int]]]] = {}  # op id -> (generation, uid -> edges)

    def _build(self) -> list[Poi]:
        """Duplicates of most operator sites plus community-only POIs, with increasing IDs."""
        world = self.world
        rng = random.Random(seed_int(world.seed, "ocm"))
        drafts: list[Callable[[int], Poi]] = []
        sites: list[Location] = []
        for i, op in enumerate(world.operators):
            for loc in op.locations:
                sites.append(loc)
                if rng.random() < DUPLICATE_SHARE:
                    drafts.append(_duplicate(rng, (3500 + i, op.spec.name), op.spec.id, loc))
        for _ in range(round(COMMUNITY_SHARE * len(sites))):
            drafts.append(_community(rng, sites, world.range_start))
        rng.shuffle(drafts)
        pois, poi_id = [], 100_000 + rng.randrange(1000)
        for draft in drafts:
            poi_id += rng.randint(1, 40)
            pois.append(draft(poi_id))
        return pois

    # -- states --------------------------------------------------------------------------------

    def _fault_edges(self, op_id: str, evse: Evse) -> list[int]:
        """An operator EVSE's fault edges, re-read whenever its operator generated more days."""
        op = self.world.operator(op_id)
        generation, edges = self._edges.get(op_id, (-1, {}))
        if generation != op.generation:
            edges = {e.uid: _edges(e) for e in op.evses}
            self._edges[op_id] = (op.generation, edges)
        return edges[evse.uid]

    def states(self, now: int) -> list[PoiState]:
        """Every POI created by `now` with its status, by ID (recomputed once per second)."""
        self.world.ensure_until(now)
        key = (now, tuple(op.generation for op in self.world.operators))
        if self._at != key:
            self._states = [self._state(poi, now) for poi in self.pois if poi.created <= now]
            self._at = key
        return self._states

    def _state(self, poi: Poi, now: int) -> PoiState:
        if poi.source is None:
            return PoiState(poi, poi.created, 50, tuple(50 for _ in poi.connections))
        modified = poi.created
        for conn in poi.connections:
            for evse in conn.evses:
                edges = self._fault_edges(poi.source[0], evse)
                i = bisect.bisect_right(edges, now) - 1
                if i >= 0:
                    modified = max(modified, edges[i])
        faulted = {e.uid for c in poi.connections for e in c.evses if e.status_at(now)[0] in FAULTS}
        statuses = tuple(_status(len(c.evses), sum(e.uid in faulted for e in c.evses)) for c in poi.connections)
        site_evses = {e.uid for c in poi.connections for e in c.evses}
        return PoiState(poi, modified, _status(len(site_evses), len(faulted)), statuses)

    def duplicates(self) -> dict[int, tuple[str, str]]:
        """POI ID -> (operator id, location id) of every POI that duplicates an operator site."""
        return {p.id: p.source for p in self.pois if p.source is not None}


def render(state: PoiState, now: int, compact: bool, verbose: bool, seed: int) -> Json:
    """A POI as OCM returns it; `compact` leaves out the reference objects (IDs only), `verbose`
    false drops null values."""
    poi = state.poi
    connections = []
    for conn, status in zip(poi.connections, state.connection_status, strict=True):
        ctype, current = CONNECTION_TYPES[conn.key], CURRENT_TYPES[conn.power_type]
        connections.append(
            {
                "ID": conn.id,
                "ConnectionTypeID": ctype["ID"],
                "ConnectionType": {**ctype, "IsDiscontinued": False, "IsObsolete": False},
                "Reference": None,
                "StatusTypeID": status,
                "StatusType": STATUS_TYPES[status],
                "LevelID": 3 if conn.power_kw >= 40 else 2,
                "Amps": conn.amps,
                "Voltage": conn.voltage,
                "PowerKW": conn.power_kw,
                "CurrentTypeID": current["ID"],
                "CurrentType": current,
                "Quantity": conn.quantity,
                "Comments": None,
            }
        )
    operator_id, operator_title = poi.operator
    out: Json = {
        "ID": poi.id,
        "UUID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:evgate-simulator:ocm:{seed}:{poi.id}")).upper(),
        "ParentChargePointID": None,
        "DataProviderID": DATA_PROVIDER["ID"],
        "DataProvider": DATA_PROVIDER,
        "DataProvidersReference": None,
        "OperatorID": operator_id,
        "OperatorInfo": {"ID": operator_id, "Title": operator_title, "WebsiteURL": None, "IsPrivateIndividual": False},
        "OperatorsReference": None,
        "UsageTypeID": poi.usage_type,
        "UsageType": USAGE_TYPES[poi.usage_type],
        "UsageCost": None,
        "AddressInfo": {
            "ID": poi.id + 1_000_000,
            "Title": poi.title,
            "AddressLine1": poi.address_line,
            "AddressLine2": None,
            "Town": poi.town,
            "StateOrProvince": "Greater London",
            "Postcode": poi.postcode,
            "CountryID": COUNTRY["ID"],
            "Country": COUNTRY,
            "Latitude": poi.latitude,
            "Longitude": poi.longitude,
            "DistanceUnit": 0,
        },
        "Connections": connections,
        "NumberOfPoints": poi.points,
        "GeneralComments": None,
        "StatusTypeID": state.status,
        "StatusType": STATUS_TYPES[state.status],
        "DateLastStatusUpdate": fmt_ts(state.modified),
        "DataQualityLevel": 1,
        "DateCreated": fmt_ts(poi.created),
        "SubmissionStatusTypeID": 200,
        "IsRecentlyVerified": now - state.modified < 365 * DAY,
        "DateLastVerified": fmt_ts(state.modified),
    }
    if compact:
        for name in ("DataProvider", "OperatorInfo", "UsageType", "StatusType"):
            del out[name]
        del out["AddressInfo"]["Country"]
        for conn_out in connections:
            for name in ("ConnectionType", "StatusType", "CurrentType"):
                del conn_out[name]
    return out if verbose else _drop_nulls(out)


def _drop_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


@dataclass(frozen=True, slots=True)
class PoiQuery:
    """The /poi query parameters this simulator honours, parsed."""

    max_results: int = 100
    greater_than_id: int | None = None
    modified_since: int | None = None
    bbox: tuple[float, float, float, float] | None = None  # min lat, min lon, max lat, max lon
    countries: frozenset[str] | None = None
    sort_by: str = "id_asc"
    compact: bool = False
    verbose: bool = True

    @classmethod
    def parse(cls, q: Any) -> PoiQuery:
        """From a query string mapping; raises OcmError 400 on a value it cannot read."""

        def number(name: str) -> int | None:
            raw = q.get(name)
            try:
                return None if raw is None else int(raw)
            except ValueError:
                raise OcmError(400, f"invalid {name}: {raw!r}") from None

        def flag(name: str, default: bool) -> bool:
            raw = q.get(name)
            return default if raw is None else raw.strip().lower() in ("true", "1", "yes")

        since = q.get("modifiedsince")
        try:
            modified_since = None if since is None else math.ceil(parse_datetime(_with_time(since)))
        except ValueError:
            raise OcmError(400, f"invalid modifiedsince: {since!r}") from None
        box = q.get("boundingbox")
        bbox = None
        if box is not None:
            match = _BBOX_RE.match(box.strip())
            if match is None:
                raise OcmError(400, f"invalid boundingbox: {box!r}; expected (lat,lng),(lat2,lng2)")
            lat1, lon1, lat2, lon2 = (float(v) for v in match.groups())
            bbox = (min(lat1, lat2), min(lon1, lon2), max(lat1, lat2), max(lon1, lon2))
        sort_by = q.get("sortby", "id_asc")
        if sort_by not in ("id_asc", "modified_asc"):
            raise OcmError(400, f"unsupported sortby: {sort_by!r}")
        codes = q.get("countrycode")
        max_results = number("maxresults")
        return cls(
            max_results=100 if max_results is None else max(0, min(max_results, MAX_RESULTS)),
            greater_than_id=number("greaterthanid"),
            modified_since=modified_since,
            bbox=bbox,
            countries=None if codes is None else frozenset(c.strip().upper() for c in codes.split(",")),
            sort_by=sort_by,
            compact=flag("compact", False),
            verbose=flag("verbose", True),
        )

    def select(self, states: Sequence[PoiState]) -> list[PoiState]:
        """The matching POI states in the requested order, at most max_results."""
        if self.countries is not None and COUNTRY["ISOCode"] not in self.countries:
            return []
        chosen = [s for s in states if self._matches(s)]
        if self.sort_by == "modified_asc":
            chosen.sort(key=lambda s: (s.modified, s.poi.id))
        return chosen[: self.max_results]

    def _matches(self, state: PoiState) -> bool:
        poi = state.poi
        if self.greater_than_id is not None and poi.id <= self.greater_than_id:
            return False
        if self.modified_since is not None and state.modified < self.modified_since:
            return False
        if self.bbox is not None:
            lat1, lon1, lat2, lon2 = self.bbox
            return lat1 <= poi.latitude <= lat2 and lon1 <= poi.longitude <= lon2
        return True


def _with_time(text: str) -> str:
    """OCM also takes a bare date for modifiedsince."""
    text = text.strip()
    return f"{text}T00:00:00" if len(text) == 10 else text


class OcmServer(ListenedServer):
    """The HTTPS server of the simulated Open Charge Map, bound to 127.0.0.1."""

    def __init__(
        self,
        world: World,
        clock: SimClock,
        ssl_context: ssl.SSLContext,
        *,
        api_key: str,
        port: int = 0,
        middlewares: Sequence[Middleware] = (),
    ) -> None:
        self.world = world
        self.clock = clock
        self.api_key = api_key
        self.catalogue = OcmCatalogue(world)
        self.port = 0
        self.app = web.Application(middlewares=[self._stamp, *middlewares, self._errors, self._auth])
        self.app.router.add_get("/v3/poi", self.poi)
        self.app.router.add_get("/v3/poi/", self.poi)
        self.listener = Listener(self.app, ssl_context, port)

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}/v3"

    # -- truth for tests -----------------------------------------------------------------------

    def truth_pois(self, modified_since: datetime | None = None) -> list[Json]:
        """Every POI visible now (optionally DateLastStatusUpdate >= modified_since), by ID."""
        since = to_ts(modified_since)
        query = PoiQuery(max_results=MAX_RESULTS, modified_since=None if since is None else math.ceil(since))
        now = self.clock.now_s()
        return [render(s, now, False, True, self.world.seed) for s in query.select(self.catalogue.states(now))]

    def duplicates(self) -> dict[int, tuple[str, str]]:
        """POI ID -> (operator id, location id) of the POIs that duplicate an operator site."""
        return self.catalogue.duplicates()

    # -- middlewares and handler ---------------------------------------------------------------

    @web.middleware
    async def _stamp(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Date the response by the simulated clock."""
        response = await handler(request)
        response.headers["Date"] = formatdate(self.clock.now_s(), usegmt=True)
        return response

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """JSON error bodies for OcmError and HTTP errors; 500 for a simulator bug."""
        try:
            return await handler(request)
        except OcmError as exc:
            return web.json_response({"status": exc.http_status, "error": exc.message}, status=exc.http_status)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return web.json_response({"status": exc.status, "error": exc.reason}, status=exc.status)
        except Exception as exc:
            log.exception("%s %s failed", request.method, request.path_qs)
            return web.json_response({"status": 500, "error": repr(exc)}, status=500)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """401 unless the API key is in X-API-Key or key=."""
        key = request.headers.get("X-API-Key") or request.query.get("key") or ""
        if not hmac.compare_digest(key.encode(), self.api_key.encode()):
            raise OcmError(401, "a valid API key is required (X-API-Key header or key= parameter)")
        return await handler(request)

    async def poi(self, request: web.Request) -> web.Response:
        """GET /v3/poi: the matching POIs as a bare JSON array."""
        query = PoiQuery.parse(request.query)
        now = self.clock.now_s()
        states = query.select(self.catalogue.states(now))
        body = [render(s, now, query.compact, query.verbose, self.world.seed) for s in states]
        return web.Response(body=orjson.dumps(body), content_type="application/json")
