"""``aiodicom serve module:MyPipeline``: run a pipeline class until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from aiodicom.cli import EXIT_INTERRUPTED, number, startup
from aiodicom.cli.net import (
    LOG_FORMATS,
    LOG_LEVELS,
    CliError,
    at_least_one,
    configure_cli_logging,
    listen_port,
)

if TYPE_CHECKING:
    from aiodicom.pipeline import Pipeline


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``serve`` subcommand."""
    serve = subparsers.add_parser(
        "serve",
        help="run a pipeline (module:Class) until SIGTERM or Ctrl-C",
        description="Run a pipeline class, e.g. 'aiodicom serve mynode:MyPipeline'. The module is "
        "imported from the working directory (or PYTHONPATH). Options override the class's settings.",
    )
    serve.add_argument("target", metavar="MODULE:CLASS", help="the Pipeline subclass to run")
    serve.add_argument("--host", default=None, help="address to listen on [the class's host]")
    serve.add_argument("--port", type=listen_port, default=None, help="TCP port, 0 for any free one [the class's]")
    serve.add_argument("--aet", default=None, help="our AE title [the class's ae_title]")
    serve.add_argument("--data-directory", type=Path, default=None, metavar="DIR",
                       help="where acknowledged data, batches and exports live [the class's]")
    serve.add_argument("--workers", type=at_least_one, default=None, metavar="N",
                       help="receiving processes sharing the port (Linux) [the class's workers, 1]")
    serve.add_argument("--grace", type=number(float, 0.0), default=10.0,
                       help="seconds to finish associations and batches after SIGTERM/Ctrl-C [%(default)s]")
    serve.add_argument("--log-level", choices=LOG_LEVELS, default="info", help="log level [%(default)s]")
    serve.add_argument("--log-format", choices=LOG_FORMATS, default="console",
                       help="logs on stderr as console lines or JSON objects [%(default)s]")
    serve.set_defaults(func=_serve)


def load_pipeline(target: str) -> type[Pipeline]:
    """``module:Class`` -> the class; the working directory is importable, as for ``python -m``."""
    from aiodicom.pipeline import Pipeline

    module_name, _, class_name = target.partition(":")
    if not module_name or not class_name:
        raise CliError(f"expected MODULE:CLASS, not {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise CliError(f"cannot import {module_name!r}: {exc}") from None
    kind = getattr(module, class_name, None)
    if not (isinstance(kind, type) and issubclass(kind, Pipeline)):
        raise CliError(f"{target} is not a Pipeline subclass")
    return kind


def _settings(args: argparse.Namespace) -> dict[str, object]:
    chosen = {"host": args.host, "port": args.port, "ae_title": args.aet, "data_directory": args.data_directory,
              "grace": args.grace, "workers": args.workers}  # fmt: skip
    settings: dict[str, object] = {name: value for name, value in chosen.items() if value is not None}
    # receiving workers (if any) log as this process does
    settings["worker_setup"] = functools.partial(configure_cli_logging, args.log_level, args.log_format)
    return settings


def _serve(args: argparse.Namespace) -> int:
    with startup():  # the user's module and what it imports (numpy...) live as long as the process
        from aiodicom.cli.receive import Stopper, start_listening
        from aiodicom.runner import run

        kind = load_pipeline(args.target)
    configure_cli_logging(args.log_level, args.log_format)
    pipeline = kind(**_settings(args))
    stopper = Stopper(pipeline.shutdown, args.grace, None, command="serve")

    async def main() -> int:
        async with anyio.create_task_group() as watchers:
            watchers.start_soon(stopper.watch)
            try:
                async with anyio.create_task_group() as serving:
                    port = await start_listening(serving, pipeline.serve, pipeline.host, pipeline.port)
                    where = pipeline.data_directory or "memory only"
                    print(f"aiodicom serve: {args.target} listening on {pipeline.host}:{port} as "
                          f"{pipeline.ae_title}, data in {where}", flush=True)  # fmt: skip
            finally:
                watchers.cancel_scope.cancel()
        counts = pipeline.status().counts
        print(f"aiodicom serve: stopped (received {counts.get('received', 0)}, "
              f"processed {counts.get('processed', 0)}, failed {counts.get('quarantined', 0)})", flush=True)  # fmt: skip
        return EXIT_INTERRUPTED if stopper.interrupted else 0

    return run(main)
