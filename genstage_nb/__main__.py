"""``genstage-nb demo`` / ``python -m genstage_nb demo``."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: genstage-nb demo [--events N] [--max-demand N] [--seconds-per-book S]")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "demo":
        from .demo import main as demo

        return demo(rest)
    print(f"genstage-nb: unknown command {command!r} (try: demo)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
