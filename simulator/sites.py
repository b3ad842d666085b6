"""The static London estate of each operator: locations in every borough, EVSEs, connectors,
plus operator identities and the drivers' token pool.

London mix: mostly 3.7-7 kW on-street AC sockets, about a fifth 22 kW AC, about a tenth 50-150 kW
rapid DC hubs with CCS and CHAdeMO cables; every borough gets locations from every operator.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import random

from simulator.boroughs import Borough, sample_point, weight
from simulator.model import DAY, Connector, Evse, Location, OperatorSpec, Token, seed_int, weighted
from simulator.tariffs import Tariff

OPERATOR_NAMES = (
    ("alpha", "Alpha Charging", "ALP"),
    ("beta", "Beta Volt", "BET"),
    ("gamma", "Gamma Plug", "GAM"),
    ("delta", "Delta Charge", "DEL"),
    ("epsilon", "Epsilon Energy", "EPS"),
    ("zeta", "Zeta Power", "ZET"),
)
EMSPS = (("GB", "EVD"), ("GB", "ZAP"), ("GB", "PLG"), ("NL", "TNM"), ("DE", "ELC"))
STREETS = (
    "High Street", "Station Road", "Church Road", "Park Road", "Victoria Road", "Green Lane",
    "Manor Road", "Albert Road", "Kings Road", "Queens Road", "Grove Road", "London Road", "Mill Lane",
    "Springfield Road", "The Avenue", "Chestnut Grove", "Elm Road", "Windsor Road", "York Road",
    "Cedar Road", "Richmond Road", "Highfield Road", "Warwick Road", "Cambridge Road", "Stanley Road",
    "Alexandra Road", "Salisbury Road", "Granville Road", "St John's Road", "Mount Pleasant",
    "Lansdowne Road", "Palmerston Road", "Devonshire Road", "Clarence Road", "Marlborough Road",
    "Beaconsfield Road", "Tennyson Road", "Milton Road", "Shakespeare Road", "Belmont Road",
)  # fmt: skip

# Location kinds per class: probability of a location being of that class and its EVSE count
# weights for 1..6 EVSEs; chosen so that EVSEs come out ~70 % slow, ~20 % fast, ~10 % rapid.
LOCATION_CLASS_WEIGHTS = (("slow_ac", 0.745), ("fast_ac", 0.182), ("rapid_dc", 0.073))
EVSE_COUNT_WEIGHTS = {
    "slow_ac": (0.35, 0.35, 0.20, 0.10, 0.0, 0.0),
    "fast_ac": (0.20, 0.40, 0.20, 0.20, 0.0, 0.0),
    "rapid_dc": (0.15, 0.30, 0.20, 0.15, 0.10, 0.10),
}
TOKEN_TYPES = (
    ("RFID", "WHITELIST", 0.55),
    ("APP_USER", "COMMAND", 0.35),
    ("AD_HOC_USER", "AUTH_REQUEST", 0.10),
)


def operator_spec(seed: int, index: int) -> OperatorSpec:
    """Operator number `index`: names from a fixed list, a seed-derived token, and every third
    operator starting with the second one expecting the raw (not base64) token."""
    if index < len(OPERATOR_NAMES):
        op_id, name, party = OPERATOR_NAMES[index]
    else:
        op_id, name, party = f"op{index}", f"Operator {index}", f"O{index:02d}"[-3:]
    token = hashlib.sha256(f"evgate-sim-token:{seed}:{op_id}".encode()).hexdigest()[:32]
    return OperatorSpec(op_id, name, "GB", party, token, "raw" if index % 3 == 1 else "base64")


def make_tokens(seed: int, count: int) -> tuple[tuple[Token, ...], list[float]]:
    """A pool of drivers' tokens shared by all operators, with Zipf-like usage weights."""
    rng = random.Random(seed_int(seed, "tokens"))
    tokens = []
    for i in range(count):
        country, party = weighted(rng, tuple((e, 1.0) for e in EMSPS))
        kind = weighted(rng, tuple(((t, a), w) for t, a, w in TOKEN_TYPES))
        uid = f"{rng.getrandbits(56):014X}"
        contract = f"{country}-{party}-C{i:08d}-{rng.randrange(10)}"
        ocpi = {
            "country_code": country,
            "party_id": party,
            "uid": uid,
            "type": kind[0],
            "contract_id": contract,
        }
        tokens.append(Token(uid, kind[0], contract, country, party, kind[1], ocpi))
    rng.shuffle(tokens)
    cum = list(itertools.accumulate(1.0 / (i + 1) ** 0.8 for i in range(count)))
    return tuple(tokens), cum


def _connectors(klass: str, power_kw: float, tariff_ids: tuple[str, ...]) -> tuple[Connector, ...]:
    """The connectors an EVSE of this class and power has."""
    if klass == "rapid_dc":
        ccs_volts, ccs_amps = (500, 125) if power_kw <= 50 else (920, 250)
        return (
            Connector(
                "1",
                "IEC_62196_T2_COMBO",
                "CABLE",
                "DC",
                ccs_volts,
                ccs_amps,
                int(power_kw * 1000),
                tariff_ids,
            ),
            Connector("2", "CHADEMO", "CABLE", "DC", 500, 125, 50_000, tariff_ids),
        )
    if klass == "fast_ac":
        return (Connector("1", "IEC_62196_T2", "SOCKET", "AC_3_PHASE", 230, 32, 22_080, tariff_ids),)
    amps = 16 if power_kw < 5 else 32
    return (Connector("1", "IEC_62196_T2", "SOCKET", "AC_1_PHASE", 230, amps, 230 * amps, tariff_ids),)


def _borough_picks(rng: random.Random, boroughs: tuple[Borough, ...], budget: int) -> itertools.chain[Borough]:
    """Boroughs to place locations in: every borough first (twice when the EVSE budget allows),
    then weighted draws for the rest."""
    rounds = 2 if budget >= 6 * len(boroughs) else 1
    first: list[Borough] = []
    for _ in range(rounds):
        order = list(boroughs)
        rng.shuffle(order)
        first.extend(order)
    cum = list(itertools.accumulate(weight(b) for b in boroughs))
    rest = (boroughs[bisect.bisect_right(cum, rng.random() * cum[-1])] for _ in itertools.count())
    return itertools.chain(first, rest)


def build_locations(
    rng: random.Random,
    spec: OperatorSpec,
    boroughs: tuple[Borough, ...],
    budget: int,
    tariffs: dict[str, Tariff],
    base: int,
) -> tuple[list[Location], list[Evse]]:
    """Locations and EVSEs for one operator until its EVSE budget is spent."""
    locations: list[Location] = []
    evses: list[Evse] = []
    picks = _borough_picks(rng, boroughs, budget)
    while len(evses) < budget:
        borough = next(picks)
        klass = weighted(rng, LOCATION_CLASS_WEIGHTS)
        count = min(
            budget - len(evses),
            weighted(rng, tuple(zip(range(1, 7), EVSE_COUNT_WEIGHTS[klass], strict=True))),
        )
        if klass == "rapid_dc":
            power = weighted(rng, ((50.0, 0.6), (100.0, 0.25), (150.0, 0.15)))
            parking = weighted(rng, (("PARKING_LOT", 0.7), ("ON_STREET", 0.2), ("PARKING_GARAGE", 0.1)))
            facilities = tuple(sorted(rng.sample(("SUPERMARKET", "CAFE", "RESTAURANT", "MALL", "WIFI"), 2)))
            suffix = "Rapid Hub"
            capabilities = (
                "CONTACTLESS_CARD_SUPPORT",
                "CREDIT_CARD_PAYABLE",
                "REMOTE_START_STOP_CAPABLE",
                "RFID_READER",
            )
        elif klass == "fast_ac":
            power = 22.0
            parking = weighted(rng, (("PARKING_LOT", 0.5), ("PARKING_GARAGE", 0.2), ("ON_STREET", 0.3)))
            facilities = ("PARKING_LOT",) if parking != "ON_STREET" else ()
            suffix = "Car Park" if parking != "ON_STREET" else "Charging Bay"
            capabilities = ("REMOTE_START_STOP_CAPABLE", "RFID_READER")
        else:
            power = 3.7 if rng.random() < 0.3 else 7.4
            parking = "ON_STREET" if rng.random() < 0.8 else "PARKING_LOT"
            facilities = ()
            suffix = "Lamp Post Charging" if power < 5 else "On-street Charging"
            capabilities = ("REMOTE_START_STOP_CAPABLE", "RFID_READER")
        street = rng.choice(STREETS)
        lat, lon = sample_point(borough, rng)
        location = Location(
            id=f"LOC{len(locations) + 1:05d}",
            name=f"{street} {suffix}, {borough.name}",
            address=f"{rng.randint(1, 240)} {street}",
            city="London",
            latitude=f"{lat:.6f}",
            longitude=f"{lon:.6f}",
            borough_gss=borough.gss_code,
            borough_name=borough.name,
            parking_type=parking,
            facilities=facilities,
            base_updated=base - rng.randrange(200 * DAY),
        )
        tariff_ids = (tariffs[klass].id, tariffs["adhoc"].id)
        for n in range(count):
            index = len(evses)
            evse = Evse(
                index=index,
                uid=f"EVSE{index + 1:05d}",
                evse_id=f"{spec.country_code}*{spec.party_id}*E{index + 1:05d}",
                klass=klass,
                power_kw=power,
                connectors=_connectors(klass, power, tariff_ids),
                capabilities=capabilities,
                physical_reference=str(n + 1),
                location=location,
            )
            location.evses.append(evse)
            evses.append(evse)
        locations.append(location)
    return locations, evses
