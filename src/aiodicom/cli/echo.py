"""``aiodicom echo``: C-ECHO a DICOM node."""

from __future__ import annotations

import argparse
import time
from typing import Any

from aiodicom.cli import startup
from aiodicom.cli.net import (
    add_ae_options,
    add_timeout_options,
    add_tls_client_options,
    check_ae_options,
    client_ssl,
    client_timeouts,
    configure_logging,
    port_number,
)


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``echo`` subcommand."""
    echo = subparsers.add_parser("echo", help="C-ECHO a DICOM node")
    echo.add_argument("host")
    echo.add_argument("port", type=port_number)
    add_ae_options(echo)
    add_timeout_options(echo)
    add_tls_client_options(echo)
    echo.add_argument("-v", "--verbose", action="store_true")
    echo.set_defaults(func=_echo)


def _echo(args: argparse.Namespace) -> int:
    with startup():
        from aiodicom.dimse.client import connect, verification_contexts
        from aiodicom.runner import run

    check_ae_options(args)
    configure_logging(args.verbose, client=True)

    async def main() -> int:
        started = time.perf_counter()
        async with connect(
            args.host, args.port, called_ae=args.aec, calling_ae=args.aet, contexts=verification_contexts(),
            ssl=client_ssl(args), timeouts=client_timeouts(args),
        ) as assoc:
            status = await assoc.echo()
        elapsed = (time.perf_counter() - started) * 1000
        print(f"C-ECHO {args.host}:{args.port} ({args.aec}): {status} in {elapsed:.1f} ms")
        return 0 if status.is_success else 1

    # One message: uvloop's speed would not show, its import (~5 ms) would.
    return run(main, use_uvloop=False)
