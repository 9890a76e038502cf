"""The ``aiodicom`` command line.

Subcommands live in sibling modules; each exposes ``register(subparsers)``
that adds its parsers and sets ``func`` (``args -> exit code``). Errors we
raise on purpose are printed as one line, never as a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from aiodicom.errors import AiodicomError


def build_parser() -> argparse.ArgumentParser:
    from aiodicom.cli import data, factory, generate, net

    parser = argparse.ArgumentParser(prog="aiodicom", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (net, generate, data, factory):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except AiodicomError as exc:
        print(f"aiodicom {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"aiodicom {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return code
