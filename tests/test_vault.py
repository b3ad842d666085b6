"""Operator secrets at rest: encrypted, rotatable, never stored or printed in the clear."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.models import OperatorSecret
from gateway.vault import SecretError, SecretStore, generate_key
from tests.conftest import TestDb

TOKEN = "cpo-token-5f0c1d9e-never-in-clear"


async def test_a_secret_is_stored_encrypted_and_read_back(db: TestDb) -> None:
    vault = SecretStore([generate_key()])
    await vault.put("acme", "token", TOKEN)
    row = await OperatorSecret.get(id="acme:token")
    assert TOKEN not in row.ciphertext and row.ciphertext.startswith("gAAAA")  # a Fernet token
    assert await vault.get("acme", "token") == TOKEN
    assert await vault.get("acme", "api_key") is None
    with pytest.raises(SecretError, match="unknown secret"):
        await vault.put("acme", "password", "x")


async def test_rotation_moves_every_secret_to_the_new_key(db: TestDb) -> None:
    old, new = generate_key(), generate_key()
    await SecretStore([old]).put("acme", "token", TOKEN)
    await SecretStore([old]).put("beta", "api_key", "ocm-key")
    before = {r.id: r.ciphertext for r in await OperatorSecret.all()}

    assert await SecretStore([new, old]).rotate() == 2

    after = {r.id: r.ciphertext for r in await OperatorSecret.all()}
    assert all(after[k] != before[k] for k in before)
    only_new = SecretStore([new])
    assert await only_new.get("acme", "token") == TOKEN and await only_new.get("beta", "api_key") == "ocm-key"
    with pytest.raises(SecretError, match="no configured secret key"):
        await SecretStore([old]).get("acme", "token")


async def test_rotation_without_the_old_key_changes_nothing(db: TestDb) -> None:
    old = generate_key()
    await SecretStore([old]).put("acme", "token", TOKEN)
    before = (await OperatorSecret.get(id="acme:token")).ciphertext
    with pytest.raises(SecretError, match="opens with none"):
        await SecretStore([generate_key()]).rotate()
    assert (await OperatorSecret.get(id="acme:token")).ciphertext == before


def test_a_store_needs_a_well_formed_key() -> None:
    with pytest.raises(SecretError, match="no secret key configured"):
        SecretStore([])
    with pytest.raises(SecretError, match="malformed"):
        SecretStore(["not-a-fernet-key"])


def _evgate(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=60,
        check=False,
    )


def test_the_secrets_command_sets_lists_and_rotates_without_printing_values(tmp_path: Path) -> None:
    config = tmp_path / "evgate.toml"
    config.write_text(f'[gateway]\ndatabase_url = "sqlite://{tmp_path / "db.sqlite3"}"\npseudonym_key = "p"\n')
    old, new = generate_key(), generate_key()

    done = _evgate(["secrets", "set", "--config", str(config), "acme", "token"], {"EVGATE_SECRET_KEYS": old}, TOKEN)
    assert done.returncode == 0, done.stderr
    listed = _evgate(["secrets", "list", "--config", str(config)], {"EVGATE_SECRET_KEYS": old})
    assert "acme" in listed.stdout and "token" in listed.stdout
    rotated = _evgate(["secrets", "rotate", "--config", str(config)], {"EVGATE_SECRET_KEYS": f"{new},{old}"})
    assert rotated.returncode == 0 and "re-encrypted 1 secret" in rotated.stdout, rotated.stderr
    for run in (done, listed, rotated):
        assert TOKEN not in run.stdout + run.stderr
    assert TOKEN.encode() not in (tmp_path / "db.sqlite3").read_bytes()
    # After rotation the old key alone no longer opens it: the new one does.
    relisted = _evgate(["secrets", "rotate", "--config", str(config)], {"EVGATE_SECRET_KEYS": old})
    assert relisted.returncode != 0 and "opens with none" in relisted.stderr
