"""The committed schema.graphql is exactly what the code generates."""

from __future__ import annotations

import re

from resolvers.export import SCHEMA_PATH
from resolvers.schema import sdl


def test_committed_sdl_matches_the_code() -> None:
    committed = SCHEMA_PATH.read_text(encoding="utf-8") if SCHEMA_PATH.exists() else ""
    assert committed == sdl(), (
        "schema.graphql is out of date with the code: regenerate it with "
        "`.venv/bin/python -m resolvers.export` and commit the result"
    )


def test_sdl_declares_the_protected_directive_and_never_the_token() -> None:
    text = sdl()
    assert "directive @protected(dataClass: DataClass!) on FIELD_DEFINITION | OBJECT" in text
    assert "@protected(dataClass: USAGE)" in text
    assert "@protected(dataClass: COMMERCIAL)" in text
    # PERSONAL data is never served: no field or argument may even be named after the token.
    names = re.findall(r"^\s*(\w+)\s*[:(]", text, flags=re.MULTILINE)
    assert names and not [n for n in names if "token" in n.lower() or "pseudonym" in n.lower()]
