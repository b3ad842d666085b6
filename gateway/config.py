"""Gateway configuration: a TOML file (`evgate serve --config FILE`) or built in code (the demo).

Gateway secrets may be given in the file or, better, through the environment (`EVGATE_PSEUDONYM_KEY`,
`EVGATE_SECRET_KEYS`); they are never logged (the dataclass reprs hide them). Callers are not
configured here: administrators, boroughs, partners and operators are OAuth clients or API keys
(`evgate clients`, `evgate keys`), or come with tokens of a trusted identity provider
(`[[gateway.identity_providers]]`). Operator credentials live encrypted in the database
(`gateway.vault`); values given here only bootstrap that store.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from adapters.model import MODULES, PROTOCOL_MODULES

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SHARED = REPO_ROOT.parent / "shared"

# How often each module is polled, in seconds: status changes often, tariffs rarely.
DEFAULT_CADENCES: dict[str, float] = {
    "locations": 60.0,
    "statuses": 60.0,
    "sessions": 60.0,
    "cdrs": 300.0,
    "tariffs": 3600.0,
}
PROTOCOLS = tuple(PROTOCOL_MODULES)


def shared_dir() -> Path:
    """The shared reference folder (boroughs, fixtures): `EVGATE_SHARED`, else `../shared`."""
    return Path(os.environ.get("EVGATE_SHARED", str(DEFAULT_SHARED)))


def default_boroughs_path() -> Path:
    """The GLA London borough boundaries (33 boroughs, WGS84) from the shared folder."""
    return shared_dir() / "data" / "london_boroughs_gla_wgs84.geojson"


def _no_unknown_keys(
    cls: type,
    data: dict[str, Any],
    where: str,
    extra: frozenset[str] | set[str] = frozenset(),
    exclude: frozenset[str] | set[str] = frozenset(),
) -> None:
    """Refuse a misspelt setting instead of silently ignoring it."""
    known = ({f.name for f in fields(cls)} | set(extra)) - set(exclude)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown settings {unknown}; known: {sorted(known)}")


@dataclass
class OperatorConfig:
    """One operator: where to reach it, how to authenticate, how often to poll which module.

    `url` is the protocol's entry point: the OCPI versions URL, the OICP base URL (up to and
    including `/api/oicp`) or the Open Charge Map API base (`.../v3`). Secrets (`token`,
    `client_key`, `api_key`) may be given here to bootstrap, but belong in the encrypted store
    (`evgate secrets set`); the ones given here are stored there at start.
    """

    id: str
    name: str
    url: str
    protocol: str = "ocpi"
    token: str | None = field(default=None, repr=False)
    # OCPI authentication as the operator really does it: the header, the scheme before the
    # credential ("Token", "Bearer", "Basic" or "" for a bare key such as `apikey: KEY`), and
    # whether the token is base64-encoded (OCPI 2.2+) or sent raw (2.1.1 and many 2.2 servers).
    token_encoding: str = "base64"  # noqa: S105 - an encoding name, not a secret
    auth_header: str = "Authorization"
    auth_scheme: str = "Token"
    # Origins (scheme://host:port) besides the operator's own that its `Link` headers may point
    # to: a hub or proxy that rewrites pagination links onto itself.
    link_origins: tuple[str, ...] = ()
    # OICP: our provider id and the client certificate (PEM) presented in mutual TLS; the key is
    # a secret (`client_key`, a PEM file read at bootstrap) kept encrypted in the database.
    provider_id: str | None = None
    client_cert: str | None = None
    client_key: str | None = field(default=None, repr=False)
    # Open Charge Map: the API key (a secret) and the area to mirror, "(lat,lng),(lat2,lng2)".
    api_key: str | None = field(default=None, repr=False)
    bounding_box: str | None = None
    ca_bundle: str | None = None  # PEM file trusted in addition to the system store
    page_limit: int = 100
    window: float = 86400.0  # the longest window one transaction covers, in seconds
    backfill: float = 7 * 86400.0  # how far back the first run of a module reaches, in seconds
    safety_lag: float = 0.0  # seconds kept back from "now" for records committed late upstream
    cadences: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_CADENCES))
    modules: tuple[str, ...] = ()  # empty: every module the protocol offers
    timeout: float = 30.0
    # The data-sharing agreement (`gateway.policy`): which roles, among "borough" and "partner",
    # get this operator's USAGE and COMMERCIAL data, e.g.
    # `agreement = { USAGE = ["borough", "partner"], COMMERCIAL = ["partner"] }`. Empty: nothing
    # is shared beyond the operator itself and the hub's administrators.
    agreement: dict[str, list[str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOL_MODULES:
            raise ValueError(f"operator {self.id}: protocol must be one of {list(PROTOCOL_MODULES)}")
        offered = PROTOCOL_MODULES[self.protocol]
        if not self.modules:
            self.modules = offered
        unknown = set(self.modules) - set(offered)
        if unknown:
            raise ValueError(f"operator {self.id}: {self.protocol} offers no modules {sorted(unknown)}")
        if self.token_encoding not in ("base64", "raw"):
            raise ValueError(f"operator {self.id}: token_encoding must be 'base64' or 'raw'")
        self.link_origins = tuple(self.link_origins)
        # Imported here: gateway.policy depends on gateway.auth, which may come to read configuration.
        from gateway.policy import parse_agreement

        self.agreement = parse_agreement(self.agreement, f"operator {self.id}: agreement").as_json()

    @property
    def versions_url(self) -> str:
        """The OCPI name of `url`."""
        return self.url

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> OperatorConfig:
        """Build from a TOML table, validating the few values that have a fixed vocabulary."""
        data = dict(raw)
        if "versions_url" in data and "url" not in data:  # the name used before OICP and OCM
            data["url"] = data.pop("versions_url")
        _no_unknown_keys(cls, data, f"operator {data.get('id')}", extra={"cadence"})
        cadences = dict(DEFAULT_CADENCES)
        cadences.update({k: float(v) for k, v in data.pop("cadence", {}).items()})
        data["cadences"] = cadences
        if "modules" in data:
            unknown = set(data["modules"]) - set(MODULES)
            if unknown:
                raise ValueError(f"operator {data.get('id')}: unknown modules {sorted(unknown)}")
            data["modules"] = tuple(data["modules"])
        return cls(**data)


# Signature algorithms an external identity provider may use: asymmetric only. Never "none", and
# never HS*, which would let anyone holding the provider's public key sign tokens (key confusion).
IDP_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA")


@dataclass
class IdentityProviderConfig:
    """An external identity provider whose JWTs the gateway accepts (`[[gateway.identity_providers]]`).

    Tokens must carry `iss == issuer` and `audience` among their `aud`, be signed with one of
    `algorithms` by a key of the JWKS at `jwks_url` (HTTPS; `ca_bundle` is trusted in addition to the
    system store), cached `jwks_ttl` seconds and refetched when a token names an unknown key. The
    `*_claim` settings name the claims that carry the role and what it is scoped to.
    """

    issuer: str
    audience: str
    jwks_url: str
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    ca_bundle: str | None = None
    jwks_ttl: float = 300.0
    timeout: float = 10.0
    role_claim: str = "role"
    boroughs_claim: str = "boroughs"
    operator_claim: str = "operator"
    partner_claim: str = "partner"
    scope_claim: str = "scope"

    def __post_init__(self) -> None:
        self.algorithms = tuple(self.algorithms)
        where = f"identity provider {self.issuer!r}"
        if not self.issuer or not self.audience:
            raise ValueError(f"{where}: issuer and audience are required")
        if not self.jwks_url.startswith("https://"):
            raise ValueError(f"{where}: jwks_url must be an https:// URL")
        bad = sorted(set(self.algorithms) - set(IDP_ALGORITHMS))
        if bad or not self.algorithms:
            raise ValueError(f"{where}: algorithms {bad or '[]'} refused; allowed: {list(IDP_ALGORITHMS)}")
        if not 0 < self.jwks_ttl <= 86400 or not 0 < self.timeout <= 120:
            raise ValueError(f"{where}: jwks_ttl must be in (0, 86400] and timeout in (0, 120] seconds")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> IdentityProviderConfig:
        """Build from a TOML table, refusing unknown settings."""
        _no_unknown_keys(cls, raw, f"identity provider {raw.get('issuer')!r}")
        return cls(**raw)


@dataclass
class GatewayConfig:
    """The whole gateway: database, HTTP listener, secrets, operators."""

    database_url: str = "sqlite://evgate.sqlite3"
    host: str = "127.0.0.1"
    port: int = 8000
    pseudonym_key: str = field(default="", repr=False)
    # Keys that encrypt operator secrets at rest (gateway.vault), newest first.
    secret_keys: list[str] = field(default_factory=list, repr=False)
    boroughs_geojson: str | None = None
    operators: list[OperatorConfig] = field(default_factory=list)
    poll: bool = True
    # The GraphQL response cache (gateway.cache): "on" or "off", entry lifetime, total size.
    response_cache: str = "on"
    response_cache_ttl: float = 3.0
    response_cache_mb: float = 64.0
    # Abuse limits (gateway.limits): requests per minute and burst per principal ("off" or 0: no
    # limit), and the persisted-query mode, "off" or "safelist" (only the queries of
    # `persisted_queries_file`, a JSON {sha256: query} or a directory of .graphql files, run).
    rate_limit_per_minute: float | str = 600.0
    rate_limit_burst: int = 120
    persisted_queries: str = "off"
    persisted_queries_file: str | None = None
    # Serving (gateway.serving): TLS certificate chain and key (PEM; both or neither), the browser
    # origins allowed by CORS, and production mode (no GraphiQL, no introspection).
    tls_certfile: str | None = None
    tls_keyfile: str | None = None
    cors_origins: list[str] = field(default_factory=list)
    production: bool = False
    # Identity (gateway.identity): the tokens the gateway issues at /oauth/token (iss, aud, lifetime
    # in seconds) and the external identity providers whose tokens it accepts.
    token_issuer: str = "evgate"  # noqa: S105 - an issuer name, not a secret
    token_audience: str = "evgate"  # noqa: S105 - an audience name, not a secret
    token_ttl: float = 900.0
    identity_providers: list[IdentityProviderConfig] = field(default_factory=list)
    # Partner webhooks (gateway.webhooks): attempts before a delivery is dead-lettered, the
    # exponential backoff between attempts (base and cap, seconds, with jitter), the request
    # timeout, deliveries per tick, how often the outbox is filled and delivered (seconds), how
    # long a gap in event ids is waited for (a transaction still committing), and a PEM bundle
    # trusted for partners' TLS in addition to the system store.
    webhook_max_attempts: int = 8
    webhook_backoff_base: float = 10.0
    webhook_backoff_cap: float = 3600.0
    webhook_timeout: float = 10.0
    webhook_batch: int = 200
    webhook_interval: float = 2.0
    webhook_gap_wait: float = 30.0
    webhook_ca_bundle: str | None = None
    # Scale-out (gateway.broker_redis, gateway.lease): the commit-notification broker, "inprocess"
    # (one gateway process) or "redis" (several processes on one database, notified through
    # `redis_url` on `redis_channel`), and the lifetime in seconds of the lease that lets one
    # process at a time poll an operator (renewed every third of it).
    broker: str = "inprocess"
    redis_url: str = field(default="redis://127.0.0.1:6379/0", repr=False)  # may carry a password
    redis_channel: str = "evgate:events"
    lease_ttl: float = 30.0
    # Live streams (gateway.streams): events a subscriber may have unconsumed before it is closed
    # as too far behind (WebSocket close code 4429; it resumes with its cursor).
    stream_queue_size: int = 1000

    def __post_init__(self) -> None:
        self._check_identity()
        self._check_scale_out()
        if self.webhook_max_attempts < 1 or self.webhook_batch < 1:
            raise ValueError("webhook_max_attempts and webhook_batch must be at least 1")
        if not 0 < self.webhook_backoff_base <= self.webhook_backoff_cap or not 0 < self.webhook_timeout <= 120:
            raise ValueError("webhook backoff needs 0 < base <= cap, and webhook_timeout in (0, 120] seconds")

    def _check_scale_out(self) -> None:
        if self.broker not in ("inprocess", "redis"):
            raise ValueError("broker must be 'inprocess' or 'redis'")
        if not 1 <= self.lease_ttl <= 3600:
            raise ValueError("lease_ttl must be in [1, 3600] seconds")
        if not self.redis_channel:
            raise ValueError("redis_channel must not be empty")

    def _check_identity(self) -> None:
        """Identity providers from TOML tables; issuers distinct (a token's `iss` picks who verifies it)."""
        self.identity_providers = [
            p if isinstance(p, IdentityProviderConfig) else IdentityProviderConfig.from_dict(p)
            for p in self.identity_providers
        ]
        if not self.token_issuer or not self.token_audience:
            raise ValueError("token_issuer and token_audience must not be empty")
        if not 0 < self.token_ttl <= 86400:
            raise ValueError("token_ttl must be in (0, 86400] seconds")
        issuers = [self.token_issuer] + [p.issuer for p in self.identity_providers]
        if len(set(issuers)) != len(issuers):
            raise ValueError("every identity provider needs its own issuer, distinct from token_issuer")

    @classmethod
    def load(cls, path: str | Path) -> GatewayConfig:
        """Read a TOML file; environment variables override the secrets in it."""
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
        gw = dict(raw.get("gateway", {}))
        _no_unknown_keys(cls, gw, "[gateway]", exclude={"operators"})
        operators = [OperatorConfig.from_dict(o) for o in raw.get("operators", [])]
        cfg = cls(**gw, operators=operators)
        return cfg.with_env()

    def with_env(self) -> GatewayConfig:
        """Apply `EVGATE_*` environment overrides for secrets and the database URL."""
        if "EVGATE_ADMIN_TOKEN" in os.environ:
            raise ValueError(
                "EVGATE_ADMIN_TOKEN is no longer used: create an administrator with "
                "`evgate clients create --role admin` or `evgate keys create --role admin`"
            )
        self.pseudonym_key = os.environ.get("EVGATE_PSEUDONYM_KEY", self.pseudonym_key)
        self.database_url = os.environ.get("EVGATE_DATABASE_URL", self.database_url)
        if os.environ.get("EVGATE_SECRET_KEYS"):
            self.secret_keys = [k.strip() for k in os.environ["EVGATE_SECRET_KEYS"].split(",") if k.strip()]
        self.response_cache = os.environ.get("EVGATE_RESPONSE_CACHE", self.response_cache)
        self.response_cache_ttl = float(os.environ.get("EVGATE_RESPONSE_CACHE_TTL", self.response_cache_ttl))
        self.response_cache_mb = float(os.environ.get("EVGATE_RESPONSE_CACHE_MB", self.response_cache_mb))
        self.rate_limit_per_minute = os.environ.get("EVGATE_RATE_LIMIT_PER_MINUTE", self.rate_limit_per_minute)
        self.rate_limit_burst = int(os.environ.get("EVGATE_RATE_LIMIT_BURST", self.rate_limit_burst))
        if "EVGATE_PRODUCTION" in os.environ:
            self.production = os.environ["EVGATE_PRODUCTION"].strip().lower() in ("1", "true", "yes", "on")
        self.broker = os.environ.get("EVGATE_BROKER", self.broker)
        self.redis_url = os.environ.get("EVGATE_REDIS_URL", self.redis_url)
        self._check_scale_out()
        if not self.pseudonym_key:
            raise ValueError("a pseudonym key is required (EVGATE_PSEUDONYM_KEY or gateway.pseudonym_key)")
        return self

    def boroughs_path(self) -> Path:
        """The borough boundaries file to load at start."""
        return Path(self.boroughs_geojson) if self.boroughs_geojson else default_boroughs_path()
