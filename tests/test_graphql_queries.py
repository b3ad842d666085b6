"""The read API end to end: seeded rows, the real ASGI app over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from gateway.geo import haversine_m
from gateway.models import Connector
from tests import seed

pytestmark = pytest.mark.usefixtures("db")

LOCATIONS = """
query($filter: LocationFilter, $first: Int! = 20, $after: String) {
  locations(filter: $filter, first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { cursor node { id distanceMeters } }
  }
}
"""

FULL_LOCATION = """
query($id: ID!) {
  location(id: $id) {
    id name address city postalCode country
    coordinates { latitude longitude }
    borough { code name }
    operator { id name protocol }
    provenance { operatorId protocol sourceId fetchedAt lastUpdated }
    evses {
      id uid status statusSince
      provenance { sourceId }
      connectors {
        id standard format powerType maxVoltage maxAmperage maxPowerKw
        provenance { operatorId sourceId }
        tariffs { id currency provenance { sourceId } }
      }
    }
  }
}
"""

SESSIONS = """
query($from: DateTime!, $to: DateTime!, $first: Int! = 20, $after: String, $filter: RecordFilter) {
  sessions(from: $from, to: $to, first: $first, after: $after, filter: $filter) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { node { id start end kwh totalCostExclVat provenance { operatorId sourceId } } }
  }
}
"""


def codes(body: dict[str, Any]) -> list[str]:
    """The extensions.code of every error of a response."""
    return [e["extensions"]["code"] for e in body.get("errors", [])]


def ids(body: dict[str, Any], field: str = "locations") -> list[str]:
    """The node ids of a connection."""
    return [edge["node"]["id"] for edge in body["data"][field]["edges"]]


async def walk(graphql: Any, query: str, variables: dict[str, Any], field: str, **kw: Any) -> list[str]:
    """Follow endCursor through every page; returns the ids in order."""
    seen: list[str] = []
    after = None
    for _ in range(1000):
        body = await graphql(query, {**variables, "after": after}, **kw)
        assert "errors" not in body, body
        seen += ids(body, field)
        info = body["data"][field]["pageInfo"]
        if not info["hasNextPage"]:
            return seen
        after = info["endCursor"]
    raise AssertionError("pagination did not end")


# ---------------------------------------------------------------------------------------------
# Locations
# ---------------------------------------------------------------------------------------------


async def seed_two_operators() -> dict[str, str]:
    await seed.operators("op-a", "op-b")
    await seed.boroughs(seed.WESTMINSTER, seed.CAMDEN)
    west = seed.WESTMINSTER[0]
    camden = seed.CAMDEN[0]
    sites = {
        "a-west": seed.Site("op-a", "L1", *seed.offset(0, 0), borough_code=west),
        "a-camden": seed.Site("op-a", "L2", *seed.offset(3000, 0), borough_code=camden),
        "b-west": seed.Site("op-b", "L1", *seed.offset(-500, 200), borough_code=west),
        "b-outside": seed.Site("op-b", "L9", 52.2, 0.12, borough_code=None),
        "hidden": seed.Site("op-a", "L3", *seed.offset(10, 10), publish=False),
    }
    await seed.sites(list(sites.values()))
    return {name: site.key for name, site in sites.items()}


async def test_filters_by_operator_and_borough(graphql: Any) -> None:
    keys = await seed_two_operators()
    body = await graphql(LOCATIONS, {"filter": {"operatorIds": ["op-a"]}})
    assert ids(body) == sorted([keys["a-west"], keys["a-camden"]])  # unpublished L3 is not served
    assert body["data"]["locations"]["totalCount"] == 2

    body = await graphql(LOCATIONS, {"filter": {"boroughCodes": [seed.WESTMINSTER[0]]}})
    assert ids(body) == sorted([keys["a-west"], keys["b-west"]])

    body = await graphql(LOCATIONS, {"filter": {"operatorIds": ["op-b"], "boroughCodes": [seed.WESTMINSTER[0]]}})
    assert ids(body) == [keys["b-west"]]

    body = await graphql(LOCATIONS, {"filter": {"operatorIds": []}})
    assert ids(body) == []
    assert body["data"]["locations"]["totalCount"] == 0


async def test_filters_by_bounding_box(graphql: Any) -> None:
    keys = await seed_two_operators()
    south_west, north_east = seed.offset(-1000, -1000), seed.offset(1000, 1000)
    bbox = {
        "minLatitude": south_west[0],
        "minLongitude": south_west[1],
        "maxLatitude": north_east[0],
        "maxLongitude": north_east[1],
    }
    body = await graphql(LOCATIONS, {"filter": {"bbox": bbox}})
    assert ids(body) == sorted([keys["a-west"], keys["b-west"]])
    assert all(edge["node"]["distanceMeters"] is None for edge in body["data"]["locations"]["edges"])


async def test_near_returns_exactly_the_locations_within_the_radius_nearest_first(graphql: Any) -> None:
    await seed.operators("op-a")
    # Along a meridian and at the corners of the enclosing box: the corners (1273 m away) are in
    # the SQL bounding-box prefilter but outside the circle, so they must be dropped.
    placements = {
        "d100": (100, 0),
        "d999": (0, 999),
        "d500": (-500, 0),
        "d1001": (1001, 0),
        "corner-ne": (900, 900),
        "corner-sw": (-900, -900),
        "d2000": (0, -2000),
        "d0": (0, 0),
    }
    sites = [seed.Site("op-a", name, *seed.offset(n, e)) for name, (n, e) in placements.items()]
    await seed.sites(sites)
    lat, lon = seed.CENTRE
    body = await graphql(LOCATIONS, {"filter": {"near": {"latitude": lat, "longitude": lon, "radiusMeters": 1000}}})
    assert "errors" not in body, body
    edges = body["data"]["locations"]["edges"]
    assert [e["node"]["id"] for e in edges] == ["op-a/d0", "op-a/d100", "op-a/d500", "op-a/d999"]
    distances = [e["node"]["distanceMeters"] for e in edges]
    assert distances == sorted(distances)
    for site in sites:
        expected = haversine_m(lat, lon, site.latitude, site.longitude)
        inside = site.key in [e["node"]["id"] for e in edges]
        assert inside == (expected <= 1000), (site.key, expected)
    assert distances[1] == pytest.approx(100, abs=0.5)
    assert body["data"]["locations"]["totalCount"] == 4


async def test_cursor_pagination_walks_every_page_without_duplicates_or_gaps(graphql: Any) -> None:
    await seed.operators("op-a", "op-b")
    sites = [
        seed.Site("op-a" if i % 3 else "op-b", f"P{i:03d}", *seed.offset(37 * i - 1000, (i * 53) % 700 - 350))
        for i in range(57)
    ]
    await seed.sites(sites)
    every = sorted(site.key for site in sites)

    seen = await walk(graphql, LOCATIONS, {"first": 10}, "locations")
    assert seen == every

    lat, lon = seed.CENTRE
    near = {"near": {"latitude": lat, "longitude": lon, "radiusMeters": 50_000}}
    seen_near = await walk(graphql, LOCATIONS, {"first": 7, "filter": near}, "locations")
    assert sorted(seen_near) == every
    assert len(seen_near) == len(set(seen_near))
    expected_order = sorted(every, key=lambda k: next(_distance(s) for s in sites if s.key == k))
    assert seen_near == expected_order


def _distance(site: seed.Site) -> float:
    return haversine_m(*seed.CENTRE, site.latitude, site.longitude)


async def test_location_by_id_with_nested_data_and_provenance(graphql: Any) -> None:
    keys = await seed_two_operators()
    await seed.tariffs("op-a", "STD")
    body = await graphql(FULL_LOCATION, {"id": keys["a-west"]})
    assert "errors" not in body, body
    loc = body["data"]["location"]
    assert loc["id"] == keys["a-west"]
    assert loc["borough"] == {"code": seed.WESTMINSTER[0], "name": "Westminster"}
    assert loc["operator"] == {"id": "op-a", "name": "Operator op-a", "protocol": "ocpi"}
    prov = loc["provenance"]
    assert prov["operatorId"] == "op-a" and prov["protocol"] == "ocpi" and prov["sourceId"] == "L1"
    assert prov["lastUpdated"].startswith("2025-06-02T12:00:00")
    assert prov["fetchedAt"].startswith("2025-06-02T12:00:30")
    assert [e["uid"] for e in loc["evses"]] == ["E0", "E1"]
    assert loc["evses"][0]["status"] == "AVAILABLE"
    connector = loc["evses"][0]["connectors"][0]
    assert connector["standard"] == "IEC_62196_T2" and connector["maxPowerKw"] == 22.0
    assert connector["provenance"] == {"operatorId": "op-a", "sourceId": "1"}
    assert connector["tariffs"] == [{"id": "op-a/STD", "currency": "GBP", "provenance": {"sourceId": "STD"}}]

    assert (await graphql(FULL_LOCATION, {"id": "op-a/nope"}))["data"]["location"] is None
    # Unpublished locations are not served, even by id.
    assert (await graphql(FULL_LOCATION, {"id": keys["hidden"]}))["data"]["location"] is None


async def test_operators_boroughs_evse_and_tariffs(graphql: Any) -> None:
    keys = await seed_two_operators()
    await seed.tariffs("op-a", "STD", "NIGHT")
    body = await graphql(
        """query($evse: ID!) {
          operators { id }
          boroughs { code name }
          evse(id: $evse) { uid connectors { id } location { id } }
          tariffs(operatorId: "op-a") { totalCount edges { node { id } } }
        }""",
        {"evse": f"{keys['a-west']}/E1"},
    )
    assert "errors" not in body, body
    data = body["data"]
    assert [o["id"] for o in data["operators"]] == ["op-a", "op-b"]
    assert [b["code"] for b in data["boroughs"]] == sorted([seed.WESTMINSTER[0], seed.CAMDEN[0]])
    assert data["evse"]["uid"] == "E1" and data["evse"]["location"]["id"] == keys["a-west"]
    assert len(data["evse"]["connectors"]) == 2
    assert [e["node"]["id"] for e in data["tariffs"]["edges"]] == ["op-a/NIGHT", "op-a/STD"]
    hidden = await graphql("query($id: ID!) { evse(id: $id) { uid } }", {"id": f"{keys['hidden']}/E0"})
    assert hidden["data"]["evse"] is None


NESTED_NODE = """
  id name borough { code name } operator { id }
  evses {
    id uid status statusSince capabilities coordinates { latitude longitude }
    connectors {
      id standard format powerType maxVoltage maxAmperage maxPowerKw
      provenance { operatorId sourceId fetchedAt lastUpdated }
      tariffs { id currency type elements provenance { sourceId } }
    }
  }
"""


async def test_a_page_and_single_lookups_serve_the_same_nested_data(graphql: Any) -> None:
    """`locations` prefetches its page's relations; `location(id)` goes through the DataLoaders.
    Both must give the same answer, including empty and missing relations."""
    keys = await seed_two_operators()
    await seed.tariffs("op-a", "STD")  # op-b's connectors name a tariff the gateway does not hold
    await seed.sites([seed.Site("op-b", "BARE", *seed.offset(900, 900), borough_code="E09999999", evses=0)])
    page = await graphql("{ locations(first: 100) { edges { node {" + NESTED_NODE + "} } } }")
    assert "errors" not in page, page
    nodes = {edge["node"]["id"]: edge["node"] for edge in page["data"]["locations"]["edges"]}
    for key, node in nodes.items():
        single = await graphql("query($id: ID!) { location(id: $id) {" + NESTED_NODE + "} }", {"id": key})
        assert "errors" not in single, single
        assert single["data"]["location"] == node
    assert nodes[keys["a-west"]]["evses"][0]["connectors"][0]["tariffs"][0]["id"] == "op-a/STD"
    assert nodes[keys["b-west"]]["evses"][0]["connectors"][0]["tariffs"] == []
    assert nodes[keys["b-outside"]]["borough"] is None
    bare = nodes["op-b/BARE"]
    assert bare["evses"] == [] and bare["borough"] is None  # a code the gateway has no borough for


async def test_a_connector_without_ratings_is_served_with_nulls(graphql: Any) -> None:
    """Real OCPI payloads omit format, power type and ratings: the connector is served, with nulls."""
    keys = await seed_two_operators()
    await Connector.filter(id=f"{keys['a-west']}/E0/1").update(
        format=None, power_type=None, max_voltage=None, max_amperage=None, max_power_kw=None
    )
    ratings = "connectors { id standard format powerType maxVoltage maxAmperage maxPowerKw }"
    expected = {
        "id": f"{keys['a-west']}/E0/1",
        "standard": "IEC_62196_T2",
        "format": None,
        "powerType": None,
        "maxVoltage": None,
        "maxAmperage": None,
        "maxPowerKw": None,
    }
    single = await graphql(
        "query($id: ID!) { location(id: $id) { evses { " + ratings + " } } }", {"id": keys["a-west"]}
    )
    assert "errors" not in single, single
    assert single["data"]["location"]["evses"][0]["connectors"][0] == expected
    page = await graphql(
        "query($ids: [String!]) { locations(filter: {operatorIds: $ids}) { edges { node { id evses { "
        + ratings
        + " } } } } }",
        {"ids": ["op-a"]},
    )
    assert "errors" not in page, page
    node = next(e["node"] for e in page["data"]["locations"]["edges"] if e["node"]["id"] == keys["a-west"])
    assert node["evses"][0]["connectors"][0] == expected
    assert node["evses"][0]["connectors"][1]["maxPowerKw"] == 50.0  # the other connector keeps its ratings


# ---------------------------------------------------------------------------------------------
# Protected data
# ---------------------------------------------------------------------------------------------


async def seed_sessions() -> dict[str, str]:
    keys = await seed_two_operators()
    t = seed.NOW
    loc = keys["a-west"]
    return {
        "before": await seed.session("op-a", "S0", loc, t - timedelta(hours=5), t - timedelta(hours=4)),
        "overlap-start": await seed.session("op-a", "S1", loc, t - timedelta(hours=1), t + timedelta(minutes=30)),
        "inside": await seed.session("op-b", "S2", keys["b-west"], t + timedelta(hours=1), t + timedelta(hours=2)),
        "ongoing": await seed.session("op-a", "S3", loc, t - timedelta(days=1), None),
        "after": await seed.session("op-a", "S4", loc, t + timedelta(hours=3), t + timedelta(hours=4)),
        "same-start": await seed.session("op-a", "S5", loc, t + timedelta(hours=1), t + timedelta(hours=3)),
    }


WINDOW = {"from": seed.NOW.isoformat(), "to": (seed.NOW + timedelta(hours=3)).isoformat()}


async def test_sessions_are_refused_to_anonymous_callers(graphql: Any) -> None:
    await seed_sessions()
    body = await graphql(SESSIONS, WINDOW)
    assert body["data"] == {"sessions": None}
    assert codes(body) == ["UNAUTHENTICATED"]
    assert body["errors"][0]["path"] == ["sessions"]


@pytest.mark.parametrize(
    "authorization", ["Bearer wrong-token", "Basic dXNlcjpwYXNz", "Bearer", "Bearer {admin}x", "{admin}"]
)
async def test_sessions_with_bad_credentials_are_unauthenticated(
    graphql: Any, admin_token: str, authorization: str
) -> None:
    await seed_sessions()
    authorization = authorization.format(admin=admin_token)
    body = await graphql(SESSIONS, WINDOW, authorization=authorization)
    assert body["data"] == {"sessions": None}
    assert codes(body) == ["UNAUTHENTICATED"]
    # Open data is still served alongside.
    body = await graphql("{ operators { id } }", authorization=authorization)
    assert "errors" not in body


async def test_admin_reads_sessions_overlapping_the_window(graphql: Any, admin_token: str) -> None:
    s = await seed_sessions()
    body = await graphql(SESSIONS, WINDOW, token=admin_token)
    assert "errors" not in body, body
    got = ids(body, "sessions")
    # Ordered by start, then id (S2 and S5 start together); the session that ended before the
    # window and the one starting at `to` (exclusive) are out, the still-open one is in.
    assert got == [s["ongoing"], s["overlap-start"], s["same-start"], s["inside"]]
    assert body["data"]["sessions"]["totalCount"] == 4
    node = body["data"]["sessions"]["edges"][1]["node"]
    assert node["totalCostExclVat"] == pytest.approx(5.63)
    assert node["provenance"] == {"operatorId": "op-a", "sourceId": "S1"}

    only_b = await graphql(SESSIONS, {**WINDOW, "filter": {"operatorIds": ["op-b"]}}, token=admin_token)
    assert ids(only_b, "sessions") == [s["inside"]]

    paged = await walk(graphql, SESSIONS, {**WINDOW, "first": 1}, "sessions", token=admin_token)
    assert paged == got


async def test_cdrs_are_protected_and_served_to_admin(graphql: Any, admin_token: str) -> None:
    keys = await seed_two_operators()
    t = seed.NOW
    await seed.cdr("op-a", "C1", keys["a-west"], t + timedelta(minutes=5), t + timedelta(minutes=50))
    query = """query($from: DateTime!, $to: DateTime!) {
      cdrs(from: $from, to: $to) { edges { node { id totalEnergy totalCostExclVat tariffs { id } } } }
    }"""
    anonymous = await graphql(query, WINDOW)
    assert anonymous["data"] == {"cdrs": None} and codes(anonymous) == ["UNAUTHENTICATED"]
    admin = await graphql(query, WINDOW, token=admin_token)
    assert "errors" not in admin, admin
    assert admin["data"]["cdrs"]["edges"][0]["node"]["totalCostExclVat"] == 9.0


async def test_token_pseudonym_is_not_in_the_schema(graphql: Any, admin_token: str) -> None:
    await seed_sessions()
    body = await graphql(
        """query($from: DateTime!, $to: DateTime!) {
          sessions(from: $from, to: $to) { edges { node { tokenPseudonym } } }
        }""",
        WINDOW,
        token=admin_token,
    )
    assert codes(body) == ["GRAPHQL_VALIDATION_FAILED"]
    admin = await graphql(SESSIONS, WINDOW, token=admin_token)
    assert "pseudonym-must-never-be-served" not in str(admin)


# ---------------------------------------------------------------------------------------------
# Error codes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("variables", "fragment"),
    [
        (
            {"filter": {"bbox": {"minLatitude": 51.6, "minLongitude": -0.2, "maxLatitude": 51.4, "maxLongitude": 0}}},
            "bbox.minLatitude",
        ),
        (
            {"filter": {"bbox": {"minLatitude": 51.4, "minLongitude": 0.1, "maxLatitude": 51.6, "maxLongitude": 0}}},
            "bbox.minLongitude",
        ),
        ({"filter": {"near": {"latitude": 51.5, "longitude": -0.1, "radiusMeters": 0}}}, "radiusMeters"),
        ({"filter": {"near": {"latitude": 51.5, "longitude": -0.1, "radiusMeters": -5}}}, "radiusMeters"),
        ({"filter": {"near": {"latitude": 51.5, "longitude": -0.1, "radiusMeters": 50_001}}}, "radiusMeters"),
        ({"filter": {"near": {"latitude": 91, "longitude": -0.1, "radiusMeters": 100}}}, "near.latitude"),
        ({"first": 101}, "first"),
        ({"first": 0}, "first"),
        ({"after": "not-a-cursor"}, "after"),
    ],
)
async def test_bad_arguments_are_bad_user_input(graphql: Any, variables: dict[str, Any], fragment: str) -> None:
    body = await graphql(LOCATIONS, variables)
    assert codes(body) == ["BAD_USER_INPUT"], body
    assert fragment in body["errors"][0]["message"]
    assert body["data"] is None  # locations is non-null, so the whole data is null


async def test_a_cursor_from_another_listing_is_bad_user_input(graphql: Any) -> None:
    await seed_two_operators()
    page = await graphql(LOCATIONS, {"first": 1})
    cursor = page["data"]["locations"]["pageInfo"]["endCursor"]
    lat, lon = seed.CENTRE
    near = {"near": {"latitude": lat, "longitude": lon, "radiusMeters": 500}}
    assert codes(await graphql(LOCATIONS, {"filter": near, "after": cursor})) == ["BAD_USER_INPUT"]


async def test_inverted_window_and_bad_variable_types_are_bad_user_input(graphql: Any, admin_token: str) -> None:
    inverted = {"from": WINDOW["to"], "to": WINDOW["from"]}
    body = await graphql(SESSIONS, inverted, token=admin_token)
    assert codes(body) == ["BAD_USER_INPUT"] and body["data"] == {"sessions": None}
    body = await graphql(SESSIONS, {"from": "yesterday", "to": WINDOW["to"]}, token=admin_token)
    assert codes(body) == ["BAD_USER_INPUT"]
    body = await graphql(LOCATIONS, {"first": "ten"})
    assert codes(body) == ["BAD_USER_INPUT"]


async def test_syntax_error_is_parse_failed(graphql: Any) -> None:
    body = await graphql("{ locations { edges { node { id } }")
    assert codes(body) == ["GRAPHQL_PARSE_FAILED"]
    assert "Syntax Error" in body["errors"][0]["message"]


async def test_unknown_field_is_validation_failed(graphql: Any) -> None:
    body = await graphql("{ locations { edges { node { id socketCount } } } }")
    assert codes(body) == ["GRAPHQL_VALIDATION_FAILED"]
    assert "socketCount" in body["errors"][0]["message"]


async def test_limits_reject_deep_aliased_and_huge_documents(graphql: Any) -> None:
    deep = '{ evse(id: "x") { id ' + "location { evses { " * 6 + "id" + " } }" * 6 + " } }"
    assert codes(await graphql(deep)) == ["GRAPHQL_VALIDATION_FAILED"]
    aliases = "{ " + " ".join(f"a{i}: operators {{ id }}" for i in range(20)) + " }"
    assert codes(await graphql(aliases)) == ["GRAPHQL_VALIDATION_FAILED"]
    huge = "{ " + " ".join("operators { id }" for _ in range(1000)) + " }"
    assert codes(await graphql(huge)) == ["GRAPHQL_PARSE_FAILED"]


async def test_unexpected_errors_are_masked(graphql: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway import catalog

    async def broken() -> list[Any]:
        raise RuntimeError('relation "operator" does not exist at /srv/evgate/secret.py line 3')

    monkeypatch.setattr(catalog, "operators", broken)
    body = await graphql("{ operators { id } }")
    assert codes(body) == ["INTERNAL_SERVER_ERROR"]
    assert body["errors"][0]["message"] == "Internal server error."
    assert "secret" not in str(body) and "relation" not in str(body)


async def test_malformed_http_requests_get_a_json_error_with_a_code(client: Any) -> None:
    bad_json = await client.post("/graphql", content=b"{not json", headers={"Content-Type": "application/json"})
    assert bad_json.status_code == 400
    assert bad_json.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
    no_query = await client.post("/graphql", json={"variables": {}})
    assert no_query.status_code == 400 and no_query.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"


async def test_get_requests_graphiql_and_healthz(client: Any) -> None:
    response = await client.get("/graphql", params={"query": "{ operators { id } }"})
    assert response.status_code == 200 and response.json() == {"data": {"operators": []}}
    ide = await client.get("/graphql", headers={"Accept": "text/html"})
    assert ide.status_code == 200 and "graphiql" in ide.text.lower()
    health = await client.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
