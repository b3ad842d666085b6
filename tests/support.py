"""Helpers shared by the tests: where the shared reference folder is, and skipping without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(os.environ.get("EVGATE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared; the calling test module is skipped (never in CI) when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        if os.environ.get("CI") == "true":
            raise RuntimeError(f"{path} is missing: CI must run with ../shared beside the clone")
        pytest.skip(f"shared reference data not found at {path}", allow_module_level=True)
    return path
