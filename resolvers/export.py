"""Write the schema's SDL to `schema.graphql` at the repository root: `python -m resolvers.export`.

`tests/test_schema_sdl.py` fails when the committed file and the code disagree.
"""

from __future__ import annotations

import sys
from pathlib import Path

from resolvers.schema import sdl

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schema.graphql"


def main(argv: list[str] | None = None) -> int:
    """Write the SDL (to the path given as the only argument, else `schema.graphql`)."""
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else SCHEMA_PATH
    path.write_text(sdl(), encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
