"""`evgate serve --config FILE`: the TOML format, its validation and the secrets it keeps out of logs."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import GatewayConfig

EXAMPLE = """
[gateway]
database_url = "postgres://evgate@127.0.0.1:5432/evgate"
port = 8080
pseudonym_key = "from-file"
response_cache_ttl = 5

[[operators]]
id = "acme"
name = "Acme Charging"
url = "https://ocpi.acme.example/ocpi/versions"
token = "s3cret-token"
token_encoding = "raw"
ca_bundle = "/etc/evgate/acme-ca.pem"
page_limit = 250
safety_lag = 60

[operators.cadence]
sessions = 120
tariffs = 86400
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_example_config_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVGATE_PSEUDONYM_KEY", raising=False)
    monkeypatch.setenv("EVGATE_RESPONSE_CACHE", "off")
    cfg = GatewayConfig.load(_write(tmp_path, EXAMPLE))
    assert cfg.response_cache == "off" and cfg.response_cache_ttl == 5.0 and cfg.response_cache_mb == 64.0
    assert cfg.port == 8080 and cfg.pseudonym_key == "from-file"
    (op,) = cfg.operators
    assert op.token_encoding == "raw" and op.page_limit == 250 and op.safety_lag == 60
    assert op.cadences == {"locations": 60.0, "statuses": 60.0, "sessions": 120.0, "cdrs": 300.0, "tariffs": 86400.0}
    assert "s3cret-token" not in repr(cfg) and "from-file" not in repr(cfg)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('token_encoding = "raw"', 'token_encoding = "rot13"'), "token_encoding"),
        (("page_limit = 250", 'modules = ["locations", "chargingprofiles"]'), "unknown modules"),
        (('pseudonym_key = "from-file"', ""), "pseudonym key is required"),
        (("safety_lag = 60", "safety_lagg = 60"), "unknown settings"),
        (("port = 8080", "prot = 8080"), "unknown settings"),
    ],
)
def test_bad_config_is_refused_with_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: tuple[str, str], message: str
) -> None:
    monkeypatch.delenv("EVGATE_PSEUDONYM_KEY", raising=False)
    with pytest.raises(ValueError, match=message):
        GatewayConfig.load(_write(tmp_path, EXAMPLE.replace(*change)))
