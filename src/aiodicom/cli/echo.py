"""``aiodicom echo``: C-ECHO a DICOM node."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Any

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
    uses_asyncio,
)

if TYPE_CHECKING:
    from aiodicom.dimse.status import Status


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
    check_ae_options(args)
    status, elapsed = _echo_async(args) if uses_asyncio(args) else _echo_blocking(args)
    print(f"C-ECHO {args.host}:{args.port} ({args.aec}): {status} in {elapsed:.1f} ms")
    return 0 if status.is_success else 1


def _echo_blocking(args: argparse.Namespace) -> tuple[Status, float]:
    """The status and the milliseconds from connecting to the end of the release."""
    with startup():
        from aiodicom.dimse.blocking import connect_blocking
        from aiodicom.dimse.requesting import verification_contexts

    started = time.perf_counter()
    with connect_blocking(
        args.host, args.port, called_ae=args.aec, calling_ae=args.aet, contexts=verification_contexts(),
        ssl=client_ssl(args), timeouts=client_timeouts(args),
    ) as assoc:
        status = assoc.echo()
    return status, (time.perf_counter() - started) * 1000


def _echo_async(args: argparse.Namespace) -> tuple[Status, float]:
    with startup():
        from aiodicom.dimse.client import connect, verification_contexts
        from aiodicom.runner import run

    configure_logging(args.verbose, client=True)

    async def main() -> tuple[Status, float]:
        started = time.perf_counter()
        async with connect(
            args.host, args.port, called_ae=args.aec, calling_ae=args.aet, contexts=verification_contexts(),
            ssl=client_ssl(args), timeouts=client_timeouts(args),
        ) as assoc:
            status = await assoc.echo()
        return status, (time.perf_counter() - started) * 1000

    # One message: uvloop's speed would not show, its import (~5 ms) would.
    return run(main, use_uvloop=False)
