"""The adapters' upstream codes and the GraphQL codes come from one catalogue, documented in the README."""

from __future__ import annotations

from pathlib import Path

import adapters.http as http
from gateway.errors import DESCRIPTIONS, ErrorCode

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_adapter_code_is_in_the_catalogue() -> None:
    codes = {v for k, v in vars(http).items() if k.startswith("UPSTREAM_") and isinstance(v, str)}
    assert len(codes) >= 7
    assert codes <= {c.value for c in ErrorCode}


def test_every_code_is_described_and_documented() -> None:
    readme = README.read_text()
    for code in ErrorCode:
        assert DESCRIPTIONS[code].strip()
        assert f"`{code.value}`" in readme, f"{code.value} is missing from the README's error table"
