"""Options and helpers shared by ``aiodicom echo``, ``store`` and ``receive``."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from aiodicom.cli import number
from aiodicom.errors import AiodicomError

if TYPE_CHECKING:
    # ssl is imported when a TLS option is given: a plain echo or store starts without it.
    import ssl

    from aiodicom.transport.timeouts import Timeouts


class CliError(AiodicomError):
    """A command-line usage problem (bad path, bad option combination)."""


#: The peer's port (1-65535).
port_number = number(int, 1, 65535)
#: A port to listen on (0 lets the system pick a free one).
listen_port = number(int, 0, 65535)
#: A count of something that must exist at least once (associations, operations).
at_least_one = number(int, 1)
#: Seconds to wait: more than 0.
seconds = number(float, 0.0, above=True)


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
    parser.add_argument("--timeout", type=seconds, default=30.0, help="connect/ACSE timeout in seconds [%(default)s]")
    parser.add_argument("--dimse-timeout", type=seconds, default=60.0, help="DIMSE timeout in seconds [%(default)s]")


def add_tls_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls", action="store_true", help="use TLS")
    parser.add_argument("--tls-ca", help="CA certificate(s) to verify the peer (PEM)")
    parser.add_argument("--tls-cert", help="our certificate (PEM), for client authentication")
    parser.add_argument("--tls-key", help="our private key (PEM)")
    parser.add_argument("--tls-no-verify", action="store_true", help="do not verify the peer's certificate")


def client_ssl(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not args.tls:
        return None
    import ssl

    context = tls_context(ssl.Purpose.SERVER_AUTH, args.tls_ca)
    if args.tls_no_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if args.tls_cert:
        load_cert_chain(context, args.tls_cert, args.tls_key)
    return context


def _readable(path: str, what: str) -> None:
    """Name the file when it is missing or unreadable: ``ssl`` only says "No such file"."""
    from aiodicom.transport.address import describe_os_error  # socket: not for --help

    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise CliError(f"cannot read {what} {path}: {describe_os_error(exc)}") from None


def load_cert_chain(context: ssl.SSLContext, cert: str, key: str | None) -> None:
    """Our TLS certificate and key, or a one-line error naming the file at fault."""
    import ssl

    _readable(cert, "TLS certificate")
    if key:
        _readable(key, "TLS private key")
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError as exc:
        files = f"{cert} and {key}" if key else cert
        raise CliError(f"TLS certificate/key {files} not usable: {_ssl_reason(exc)}") from None


def tls_context(purpose: ssl.Purpose, ca: str | None) -> ssl.SSLContext:
    """A default context trusting ``ca`` (the system's CAs without it); errors name the file."""
    import ssl

    if ca:
        _readable(ca, "TLS CA file")
    try:
        return ssl.create_default_context(purpose, cafile=ca)
    except ssl.SSLError as exc:
        raise CliError(f"TLS CA file {ca} not usable: {_ssl_reason(exc)}") from None


def _ssl_reason(exc: ssl.SSLError) -> str:
    # OpenSSL's "PEM lib" says little; what it means for a user is a file that is not PEM.
    reason = exc.reason or str(exc)
    return "not a PEM file, or the key does not match" if "PEM" in reason else reason


def client_timeouts(args: argparse.Namespace) -> Timeouts:
    from aiodicom.transport.timeouts import Timeouts

    return Timeouts(connect=args.timeout, acse=args.timeout, dimse=args.dimse_timeout)


def uses_asyncio(args: argparse.Namespace) -> bool:
    """Whether a client command needs the asyncio client: only for ``-v``, whose
    association logs (structlog) come from it. Everything else runs on the blocking
    driver (:mod:`aiodicom.dimse.blocking`), which spares the start-up of asyncio."""
    return bool(args.verbose)


def configure_logging(verbose: bool, *, client: bool = False) -> None:
    """INFO with ``-v``; otherwise warnings, or only errors for client commands.

    A client command reports its own failure as one line, so the warning the
    association logged about the same failure would just repeat it.
    """
    import logging

    from aiodicom._log import configure_logging as configure

    configure(logging.INFO if verbose else logging.ERROR if client else logging.WARNING)


#: ``--log-format`` choices.
LOG_FORMATS = ("console", "json")
#: ``--log-level`` choices.
LOG_LEVELS = ("debug", "info", "warning", "error")


def configure_cli_logging(level: str, fmt: str) -> None:
    """Logs at ``level`` on stderr, as console lines or one JSON object per line."""
    from aiodicom._log import configure_logging as configure

    configure(level.upper(), "json" if fmt == "json" else "console")
