"""Options and helpers shared by ``aiodicom echo``, ``store`` and ``receive``."""

from __future__ import annotations

import argparse
import ssl
from typing import Any

from aiodicom.errors import AiodicomError


class CliError(AiodicomError):
    """A command-line usage problem (bad path, bad option combination)."""


def add_ae_options(parser: argparse.ArgumentParser, *, called_default: str = "ANY-SCP") -> None:
    parser.add_argument("--aet", default="AIODICOM", help="our (calling) AE title [%(default)s]")
    parser.add_argument("--aec", default=called_default, help="the peer's (called) AE title [%(default)s]")


def check_ae_options(args: argparse.Namespace) -> None:
    """Refuse an invalid ``--aet``/``--aec``/``--allow`` before anything else happens.

    Raises :class:`~aiodicom.errors.InvalidAETitleError` (printed as one line).
    """
    from aiodicom.codec.ae import normalize_ae_title

    for option, value in (("--aet", args.aet), ("--aec", getattr(args, "aec", None))):
        if value is not None:
            normalize_ae_title(value, option)
    for value in getattr(args, "allow", None) or ():
        normalize_ae_title(value, "--allow")


def add_timeout_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, default=30.0, help="connect/ACSE timeout in seconds [%(default)s]")
    parser.add_argument("--dimse-timeout", type=float, default=60.0, help="DIMSE timeout in seconds [%(default)s]")


def add_tls_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls", action="store_true", help="use TLS")
    parser.add_argument("--tls-ca", help="CA certificate(s) to verify the peer (PEM)")
    parser.add_argument("--tls-cert", help="our certificate (PEM), for client authentication")
    parser.add_argument("--tls-key", help="our private key (PEM)")
    parser.add_argument("--tls-no-verify", action="store_true", help="do not verify the peer's certificate")


def client_ssl(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not args.tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=args.tls_ca)
    if args.tls_no_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if args.tls_cert:
        context.load_cert_chain(args.tls_cert, args.tls_key)
    return context


def client_timeouts(args: argparse.Namespace) -> Any:
    from aiodicom.transport.association import Timeouts

    return Timeouts(connect=args.timeout, acse=args.timeout, dimse=args.dimse_timeout)


def configure_logging(verbose: bool, *, client: bool = False) -> None:
    """INFO with ``-v``; otherwise warnings, or only errors for client commands.

    A client command reports its own failure as one line, so the warning the
    association logged about the same failure would just repeat it.
    """
    import logging

    from aiodicom._log import configure_logging as configure

    configure(logging.INFO if verbose else logging.ERROR if client else logging.WARNING)
