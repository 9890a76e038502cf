"""The ``aiodicom`` command line.

Subcommands live in sibling modules; each exposes ``register(subparsers)``
that adds its parsers and sets ``func`` (``args -> exit code``). Errors we
raise on purpose are printed as one line, never as a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from aiodicom.errors import AiodicomError

#: Which module registers each command. Only that module is imported when the
#: command is known, so ``aiodicom store`` does not pay for nibabel's import.
_COMMANDS = {
    "echo": "echo",
    "store": "store",
    "receive": "receive",
    "generate": "generate",
    "show": "data",
    "to-nifti": "data",
    "anonymize": "factory",
    "from-nifti": "factory",
    "masks": "segmentation",
    "contours": "segmentation",
}
_MODULES = ("echo", "store", "receive", "generate", "data", "factory", "segmentation")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aiodicom", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = (_COMMANDS[command],) if command in _COMMANDS else _MODULES
    for name in modules:
        importlib.import_module(f"aiodicom.cli.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in arguments if not a.startswith("-")), None)
    parser = build_parser(command)
    args = parser.parse_args(arguments)
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
