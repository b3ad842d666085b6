"""Operator credentials at rest: encrypted with the gateway's keys, decrypted only to use them.

Tokens, OICP client keys and API keys are stored in `operator_secret` as Fernet tokens
(`cryptography`: AES-128-CBC with HMAC-SHA256, authenticated, timestamped). The keys come from
configuration (`secret_keys`, or `EVGATE_SECRET_KEYS`), newest first: the first encrypts, all
decrypt (MultiFernet), so a key is rotated by putting a new key first, running
`evgate secrets rotate`, then dropping the old key. Plain values are never logged and never
leave this module except to the adapter that sends them.
"""

from __future__ import annotations

from collections.abc import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from gateway.models import GatewayKey, OperatorSecret

SECRET_NAMES = ("token", "client_key", "api_key")


class SecretError(Exception):
    """A secret cannot be stored or read: no key configured, or no configured key opens it."""


def generate_key() -> str:
    """A new random secret key, in the form `secret_keys` expects."""
    return Fernet.generate_key().decode()


def _secret_id(operator_id: str, name: str) -> str:
    return f"{operator_id}:{name}"


class SecretStore:
    """Encrypts and decrypts operator secrets with the configured keys."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise SecretError(
                "no secret key configured: set EVGATE_SECRET_KEYS or gateway.secret_keys "
                "(`evgate secrets generate-key` makes one)"
            )
        try:
            self._fernet = MultiFernet([Fernet(k.encode() if isinstance(k, str) else k) for k in keys])
        except ValueError as exc:
            raise SecretError(f"a configured secret key is malformed: {exc}") from None

    def encrypt(self, value: str) -> str:
        """Ciphertext of a value under the newest key."""
        return self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        """The plain value, or SecretError when no configured key opens it."""
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken:
            raise SecretError("no configured secret key decrypts this secret (was its key removed?)") from None

    async def put(self, operator_id: str, name: str, value: str, conn: BaseDBAsyncClient | None = None) -> None:
        """Store (or replace) one secret of an operator."""
        if name not in SECRET_NAMES:
            raise SecretError(f"unknown secret {name!r}; known: {', '.join(SECRET_NAMES)}")
        await OperatorSecret.update_or_create(
            id=_secret_id(operator_id, name),
            defaults={"operator_id": operator_id, "name": name, "ciphertext": self.encrypt(value)},
            using_db=conn,
        )

    async def get(self, operator_id: str, name: str) -> str | None:
        """The plain value of one secret, or None if the operator has none by that name."""
        row = await OperatorSecret.get_or_none(id=_secret_id(operator_id, name))
        return None if row is None else self.decrypt(row.ciphertext)

    async def delete(self, operator_id: str, name: str) -> bool:
        """Remove one secret; whether it existed."""
        return bool(await OperatorSecret.filter(id=_secret_id(operator_id, name)).delete())

    async def rotate(self) -> int:
        """Re-encrypt every stored secret under the newest key, in one transaction; how many.

        That is the operator secrets and the gateway's own token signing keys (`gateway.tokens`).
        Fails without changing anything if some secret opens with none of the configured keys.
        """
        async with in_transaction() as conn:
            rows: list[OperatorSecret | GatewayKey] = [
                *await OperatorSecret.all().using_db(conn),
                *await GatewayKey.all().using_db(conn),
            ]
            for row in rows:
                try:
                    row.ciphertext = self._fernet.rotate(row.ciphertext.encode()).decode()
                except InvalidToken:
                    raise SecretError(f"secret {row.pk} opens with none of the configured keys") from None
                await row.save(using_db=conn, update_fields=["ciphertext"])
        return len(rows)
