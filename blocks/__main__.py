"""``python -m blocks register``: register snaprestore's block types with the Prefect API."""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    """Run the command; return the exit status."""
    if argv != ["register"]:
        print("usage: python -m blocks register", file=sys.stderr)
        return 2
    from blocks.registry import register_block_types

    for slug in register_block_types():
        print(f"registered block type {slug}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
