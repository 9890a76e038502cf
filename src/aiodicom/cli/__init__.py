"""The ``aiodicom`` command line.

Subcommands live in sibling modules; each exposes ``register(subparsers)``
that adds its parsers and sets ``func`` (``args -> exit code``). Errors we
raise on purpose are printed as one line, never as a traceback.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

from aiodicom.errors import AiodicomError

#: Which module registers each command. Only that module is imported when the
#: command is known, so ``aiodicom store`` does not pay for nibabel's import.
_COMMANDS = {
    "echo": "echo",
    "store": "store",
    "receive": "receive",
    "serve": "serve",
    "qrscp": "qrscp",
    "generate": "generate",
    "show": "data",
    "to-nifti": "data",
    "anonymize": "factory",
    "from-nifti": "factory",
    "masks": "segmentation",
    "contours": "segmentation",
    "find": "qr",
    "get": "qr",
    "move": "qr",
}
_MODULES = ("echo", "store", "receive", "serve", "qr", "qrscp", "generate", "data", "factory", "segmentation")


N = TypeVar("N", int, float)

#: Exit code after Ctrl-C (128 + SIGINT), as shells report an interrupted command.
EXIT_INTERRUPTED = 130


class _Version(argparse.Action):
    """``--version`` from the installed package's metadata, looked up only when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="show the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any, **_kwargs: Any) -> None:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("aiodicom")
        except PackageNotFoundError:  # running from a source tree that was never installed
            from aiodicom import __version__ as number
        print(f"aiodicom {number}")
        parser.exit()


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line too (argparse would print the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse makes a formatter for every add_argument, and its default width comes
        # from shutil, whose import (bz2, lzma, ...) every command would pay at start.
        formatter: type[argparse.HelpFormatter] = self.formatter_class  # type: ignore[assignment]
        return formatter(prog=self.prog, width=_terminal_width() - 2)


def _terminal_width() -> int:
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


def number(
    kind: Callable[[str], N], low: N, high: N | None = None, *, above: bool = False
) -> Callable[[str], N]:
    """An argparse type: ``kind(text)`` no less than ``low`` (more, with ``above``) and
    at most ``high``; anything else is a one-line usage error, never a silent surprise
    (a port of 70000 would otherwise become 4464 in the socket layer)."""

    def convert(text: str) -> N:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < low or (above and value == low) or (high is not None and value > high):
            bounds = f"{'more than' if above else 'at least'} {low}"
            bounds += f" and at most {high}" if high is not None else ""
            raise argparse.ArgumentTypeError(f"must be {bounds}, not {text}")
        return value

    return convert


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="aiodicom", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = (_COMMANDS[command],) if command in _COMMANDS else _MODULES
    for name in modules:
        importlib.import_module(f"aiodicom.cli.{name}").register(sub)
    return parser


#: True while :func:`main` runs as the program (console script, ``python -m aiodicom``).
_owns_process = False


@contextmanager
def startup() -> Iterator[None]:
    """Around a command's start-up imports: the cyclic garbage collector stays out of them.

    Start-up creates tens of thousands of objects that live as long as the process
    (modules, classes, functions, tables). Collecting while they are made finds no
    garbage, and the interpreter's last collection at exit traverses them all again:
    about a tenth of a one-shot ``aiodicom echo``. So, when :func:`main` is the
    program, the collector pauses here and what exists at the end is frozen
    (:func:`gc.freeze`): later collections, the last one included, skip it, and
    the garbage a long run makes is collected as usual. Called from Python
    (``main(argv)``), it does nothing: a host process's objects are not ours to freeze.
    """
    if not _owns_process or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
        gc.freeze()
    finally:
        gc.enable()


def single_error(exc: BaseException) -> BaseException:
    """The one error inside (nested) exception groups of one, as task groups wrap it."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; a mistake or a failure is one line on stderr, never a traceback.

    Exit codes: the command's own, 1 for an error, 2 for bad usage (argparse),
    130 after Ctrl-C.
    """
    global _owns_process
    _owns_process = argv is None
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in arguments if not a.startswith("-")), None)
    try:
        with startup():
            args = build_parser(command).parse_args(arguments)
        code: int = args.func(args)
    except BaseException as exc:
        error = single_error(exc)
        if isinstance(error, KeyboardInterrupt):
            return EXIT_INTERRUPTED
        if not isinstance(error, AiodicomError | OSError):
            raise
        print(f"aiodicom {command}: error: {error}", file=sys.stderr)
        return 1
    return code
