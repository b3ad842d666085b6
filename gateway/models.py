"""The stored, normalised model (tortoise-orm), the same on SQLite and PostgreSQL.

Keys are deterministic strings built from the operator id and the operator's own identifiers
(`gateway.keys`), so that ingest is a plain idempotent upsert on the primary key and children
(EVSEs, connectors) can be written in bulk without first reading back generated ids.
Every operator-sourced row carries its provenance (operator, protocol, source id, fetched at,
last updated).
"""

from __future__ import annotations

from tortoise import fields
from tortoise.models import Model


class Provenance(Model):
    """Where a row came from and how fresh it is."""

    operator_id = fields.CharField(max_length=64, db_index=True)
    protocol = fields.CharField(max_length=16)
    source_id = fields.CharField(max_length=128)
    fetched_at = fields.DatetimeField()
    # Not indexed: ingest compares it by primary key and nothing queries by it; every index costs
    # each of the tens of thousands of writes a second.
    last_updated = fields.DatetimeField()

    class Meta:
        abstract = True


class Operator(Model):
    """A charge point operator whose API the gateway polls (credentials live in configuration)."""

    id = fields.CharField(primary_key=True, max_length=64)
    name = fields.CharField(max_length=200)
    protocol = fields.CharField(max_length=16)
    base_url = fields.CharField(max_length=500)
    cadences = fields.JSONField(default=dict)  # module -> seconds
    agreement = fields.JSONField(default=dict)  # data-sharing agreement, see DESIGN.md
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "operator"


class Borough(Model):
    """A London borough (GSS code), with its boundary as GeoJSON for point-in-polygon."""

    gss_code = fields.CharField(primary_key=True, max_length=9)
    name = fields.CharField(max_length=100)
    geometry = fields.JSONField()

    class Meta:
        table = "borough"


class Location(Provenance):
    """A site with one or more EVSEs."""

    id = fields.CharField(primary_key=True, max_length=200)
    country_code = fields.CharField(max_length=2, null=True)
    party_id = fields.CharField(max_length=3, null=True)
    publish = fields.BooleanField(default=True)
    name = fields.CharField(max_length=255, null=True)
    address = fields.CharField(max_length=255)
    city = fields.CharField(max_length=100)
    postal_code = fields.CharField(max_length=16, null=True)
    country = fields.CharField(max_length=3)
    latitude = fields.FloatField(db_index=True)
    longitude = fields.FloatField(db_index=True)
    borough_code = fields.CharField(max_length=9, null=True, db_index=True)
    parking_type = fields.CharField(max_length=32, null=True)
    time_zone = fields.CharField(max_length=64, null=True)
    opening_times = fields.JSONField(null=True)
    facilities = fields.JSONField(default=list)
    operator_name = fields.CharField(max_length=200, null=True)
    # Set on an aggregator's record (Open Charge Map) that describes the same site as an operator's
    # own record: the operator's data is authoritative, so the copy is hidden from lists by default.
    duplicate_of = fields.CharField(max_length=200, null=True, db_index=True)

    class Meta:
        table = "location"


class Evse(Provenance):
    """A charge point; its live status is the latest StatusObservation."""

    id = fields.CharField(primary_key=True, max_length=300)
    location_id = fields.CharField(max_length=200, db_index=True)
    uid = fields.CharField(max_length=64)
    evse_id = fields.CharField(max_length=64, null=True)
    status = fields.CharField(max_length=16)
    status_since = fields.DatetimeField()
    capabilities = fields.JSONField(default=list)
    floor_level = fields.CharField(max_length=8, null=True)
    physical_reference = fields.CharField(max_length=32, null=True)
    latitude = fields.FloatField(null=True)
    longitude = fields.FloatField(null=True)

    class Meta:
        table = "evse"
        # Status pulls and OICP sessions name an EVSE by the operator's uid alone.
        indexes = (("operator_id", "uid"),)


class Connector(Provenance):
    """A plug or socket of an EVSE."""

    id = fields.CharField(primary_key=True, max_length=400)
    evse_id = fields.CharField(max_length=300, db_index=True)
    standard = fields.CharField(max_length=32)
    # Nullable because real payloads omit them (see adapters.model.ConnectorRecord).
    format = fields.CharField(max_length=8, null=True)
    power_type = fields.CharField(max_length=20, null=True)
    max_voltage = fields.IntField(null=True)
    max_amperage = fields.IntField(null=True)
    max_power_kw = fields.FloatField(null=True)
    tariff_ids = fields.JSONField(default=list)

    class Meta:
        table = "connector"


class StatusObservation(Model):
    """An EVSE's status from `since` until the next observation of the same EVSE (append-only).

    The end of a stretch is derived (the next row's `since`, SQL `LEAD`), never updated in place,
    so ingest only ever inserts history.
    """

    id = fields.BigIntField(primary_key=True)
    evse_id = fields.CharField(max_length=300, db_index=True)
    status = fields.CharField(max_length=16)
    since = fields.DatetimeField()

    class Meta:
        table = "status_observation"


class Tariff(Provenance):
    """A price list (OPEN data: tariffs are public under the 2023 regulations)."""

    id = fields.CharField(primary_key=True, max_length=200)
    currency = fields.CharField(max_length=3)
    type = fields.CharField(max_length=20, null=True)
    alt_text = fields.JSONField(default=list)
    alt_url = fields.CharField(max_length=500, null=True)
    min_price_excl_vat = fields.FloatField(null=True)
    max_price_excl_vat = fields.FloatField(null=True)
    elements = fields.JSONField(default=list)
    start = fields.DatetimeField(null=True)
    end = fields.DatetimeField(null=True)
    energy_mix = fields.JSONField(null=True)

    class Meta:
        table = "tariff"


class Session(Provenance):
    """A charging session (USAGE data; its cost is COMMERCIAL; its token only a pseudonym)."""

    id = fields.CharField(primary_key=True, max_length=200)
    # Indexed only as the queries need it (see Meta): every index costs each of the thousands of
    # session writes a second during a catch-up.
    operator_id = fields.CharField(max_length=64)
    location_id = fields.CharField(max_length=200, null=True)  # null: only the EVSE is known (OICP)
    evse_id = fields.CharField(max_length=300, null=True)
    connector_id = fields.CharField(max_length=400, null=True)
    borough_code = fields.CharField(max_length=9, null=True)
    start = fields.DatetimeField(db_index=True)
    end = fields.DatetimeField(null=True)
    kwh = fields.FloatField()
    status = fields.CharField(max_length=16)
    auth_method = fields.CharField(max_length=16, null=True)
    token_pseudonym = fields.CharField(max_length=64, null=True)
    currency = fields.CharField(max_length=3, null=True)
    total_cost_excl_vat = fields.FloatField(null=True)
    total_cost_incl_vat = fields.FloatField(null=True)

    class Meta:
        table = "charging_session"
        # Time-window queries, by operator or by borough.
        indexes = (("operator_id", "start"), ("borough_code", "start"))


class Cdr(Provenance):
    """A charge detail record: the final, priced session (credit CDRs included)."""

    id = fields.CharField(primary_key=True, max_length=200)
    session_id = fields.CharField(max_length=200, null=True, db_index=True)
    location_id = fields.CharField(max_length=200, null=True, db_index=True)  # null: only the EVSE is known
    evse_id = fields.CharField(max_length=300, null=True)
    connector_id = fields.CharField(max_length=400, null=True)
    borough_code = fields.CharField(max_length=9, null=True, db_index=True)
    start = fields.DatetimeField(db_index=True)
    end = fields.DatetimeField()
    total_energy = fields.FloatField()
    total_time = fields.FloatField()
    total_parking_time = fields.FloatField(null=True)
    currency = fields.CharField(max_length=3, null=True)  # null: OICP CDRs carry no price
    total_cost_excl_vat = fields.FloatField(null=True)
    total_cost_incl_vat = fields.FloatField(null=True)
    credit = fields.BooleanField(default=False)
    credit_reference_id = fields.CharField(max_length=64, null=True)
    auth_method = fields.CharField(max_length=16, null=True)
    token_pseudonym = fields.CharField(max_length=64, null=True)
    tariff_ids = fields.JSONField(default=list)

    class Meta:
        table = "cdr"


class SyncState(Model):
    """Per operator and module: the cursor (end of the last fully ingested window) and health."""

    id = fields.CharField(primary_key=True, max_length=100)
    operator_id = fields.CharField(max_length=64, db_index=True)
    module = fields.CharField(max_length=16)
    cursor = fields.DatetimeField(null=True)
    last_attempt = fields.DatetimeField(null=True)
    last_success = fields.DatetimeField(null=True)
    last_error_code = fields.CharField(max_length=32, null=True)
    last_error_message = fields.TextField(null=True)
    last_error_at = fields.DatetimeField(null=True)
    consecutive_failures = fields.IntField(default=0)
    next_attempt = fields.DatetimeField(null=True)  # when the backoff (or Retry-After) lets us try again
    retry_after = fields.FloatField(null=True)  # the operator's last Retry-After, in seconds
    # The operator's clock minus ours at the last attempt, in seconds: lag is measured on the
    # operator's clock, which is what the cursor follows.
    clock_offset = fields.FloatField(null=True)
    records_ingested = fields.BigIntField(default=0)
    records_quarantined = fields.BigIntField(default=0)

    class Meta:
        table = "sync_state"


class PollerLease(Model):
    """Which gateway process polls an operator (`gateway.lease`): one holder at a time, until
    `expires_at` unless renewed; an expired lease may be taken over by another process."""

    operator_id = fields.CharField(primary_key=True, max_length=64)
    holder = fields.CharField(max_length=200)  # "host:pid:random:scope" of the holding process
    token = fields.CharField(max_length=32)  # new at each acquisition (not renewal): the fencing token
    expires_at = fields.DatetimeField()
    acquired_at = fields.DatetimeField()

    class Meta:
        table = "poller_lease"


class SyncError(Model):
    """One failed attempt (or one window with quarantined records) of an operator's module.

    Append-only and trimmed per operator and module, so sync health can show what went wrong
    recently, not just the last error.
    """

    id = fields.BigIntField(primary_key=True)
    operator_id = fields.CharField(max_length=64)
    module = fields.CharField(max_length=16)
    code = fields.CharField(max_length=32)
    message = fields.TextField()
    retry_after = fields.FloatField(null=True)
    at = fields.DatetimeField()

    class Meta:
        table = "sync_error"
        indexes = (("operator_id", "module", "id"),)


class OperatorSecret(Model):
    """An operator credential (API token, client key), encrypted with the gateway's secret keys.

    Only `gateway.secrets` reads or writes the ciphertext; nothing else ever sees the plain value.
    """

    id = fields.CharField(primary_key=True, max_length=100)  # "operator:name"
    operator_id = fields.CharField(max_length=64, db_index=True)
    name = fields.CharField(max_length=32)  # "token", "client_key", "api_key"
    ciphertext = fields.TextField()
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "operator_secret"


class Event(Model):
    """The event log: the source of truth for streams, read by cursor (monotonic id)."""

    id = fields.BigIntField(primary_key=True)
    kind = fields.CharField(max_length=32)  # few distinct values: filtered, not indexed
    operator_id = fields.CharField(max_length=64)  # streams read by id range, then filter
    borough_code = fields.CharField(max_length=9, null=True)
    subject_id = fields.CharField(max_length=400)
    payload = fields.JSONField()
    created_at = fields.DatetimeField()

    class Meta:
        table = "event"


class QuarantinedRecord(Model):
    """An operator record that failed validation, kept with its reason and raw JSON.

    The id is a digest of (operator, module, raw JSON), so that re-crawling a window does not
    quarantine the same record twice.
    """

    id = fields.CharField(primary_key=True, max_length=64)
    operator_id = fields.CharField(max_length=64, db_index=True)
    module = fields.CharField(max_length=16)
    source_id = fields.CharField(max_length=128, null=True)
    code = fields.CharField(max_length=32)
    reason = fields.TextField()
    raw_json = fields.TextField()
    fetched_at = fields.DatetimeField()

    class Meta:
        table = "quarantined_record"


class OAuthClient(Model):
    """A client of the token endpoint (OAuth 2 client credentials), scoped to what its role may see.

    Only a SHA-256 hash of the secret is stored (`gateway.credentials`); revoking keeps the row, so
    that tokens it already holds are refused too and the id is never reused.
    """

    client_id = fields.CharField(primary_key=True, max_length=64)
    secret_hash = fields.CharField(max_length=64)  # hex SHA-256 of the secret
    name = fields.CharField(max_length=200)
    role = fields.CharField(max_length=16)
    boroughs = fields.JSONField(default=list)  # BOROUGH: GSS codes
    operator_id = fields.CharField(max_length=64, null=True)
    partner_id = fields.CharField(max_length=64, null=True)
    scopes = fields.JSONField(default=list)
    created_at = fields.DatetimeField(auto_now_add=True)
    revoked_at = fields.DatetimeField(null=True)

    class Meta:
        table = "oauth_client"


class ApiKey(Model):
    """A partner's or vehicle's API key `evg_<prefix>_<secret>`: the prefix is public (listings, logs),
    the secret is stored only as a SHA-256 hash and looked up on every request (no cache)."""

    prefix = fields.CharField(primary_key=True, max_length=16)
    secret_hash = fields.CharField(max_length=64)
    name = fields.CharField(max_length=200)
    role = fields.CharField(max_length=16)
    boroughs = fields.JSONField(default=list)
    operator_id = fields.CharField(max_length=64, null=True)
    partner_id = fields.CharField(max_length=64, null=True)
    scopes = fields.JSONField(default=list)
    created_at = fields.DatetimeField(auto_now_add=True)
    revoked_at = fields.DatetimeField(null=True)
    last_used_at = fields.DatetimeField(null=True)  # refreshed at most every few minutes

    class Meta:
        table = "api_key"


class GatewayKey(Model):
    """A key the gateway signs its tokens with (ES256): the public JWK in the clear (verification,
    the JWKS endpoint), the private key as PEM encrypted with the gateway's secret keys."""

    kid = fields.CharField(primary_key=True, max_length=64)  # RFC 7638 thumbprint
    algorithm = fields.CharField(max_length=16)
    public_jwk = fields.JSONField()
    ciphertext = fields.TextField()
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "gateway_key"


class Partner(Model):
    """A partner of the hub (`gateway.partners`): receives events by webhook (PUSH) and/or pulls
    them (`/partners/v1/events`), once it has accepted the licence. Its webhook signing secret is
    stored encrypted (`gateway.vault`), shown once at registration."""

    id = fields.CharField(primary_key=True, max_length=64)
    name = fields.CharField(max_length=200)
    scopes = fields.JSONField(default=list)
    licence_accepted_at = fields.DatetimeField(null=True)
    webhook_url = fields.CharField(max_length=500, null=True)
    webhook_secret = fields.TextField(null=True)  # Fernet ciphertext
    created_at = fields.DatetimeField(auto_now_add=True)
    disabled_at = fields.DatetimeField(null=True)

    class Meta:
        table = "partner"


class WebhookDelivery(Model):
    """The webhook outbox: one event owed to one partner, until delivered or dead-lettered."""

    id = fields.BigIntField(primary_key=True)
    partner_id = fields.CharField(max_length=64)
    event_id = fields.BigIntField()
    attempts = fields.IntField(default=0)
    next_attempt_at = fields.DatetimeField()
    last_status = fields.IntField(null=True)  # HTTP status of the last attempt (None: no answer)
    last_error = fields.TextField(null=True)
    delivered_at = fields.DatetimeField(null=True)
    dead_at = fields.DatetimeField(null=True)

    class Meta:
        table = "webhook_delivery"
        unique_together = (("partner_id", "event_id"),)
        indexes = (("delivered_at", "dead_at", "next_attempt_at"),)


class PartnerCursor(Model):
    """How far the outbox filler has enqueued the event log for one partner (exact resumption)."""

    partner_id = fields.CharField(primary_key=True, max_length=64)
    last_enqueued_event_id = fields.BigIntField(default=0)

    class Meta:
        table = "partner_cursor"
