"""``aiodicom echo``, ``aiodicom store`` and ``aiodicom receive``."""

from __future__ import annotations

import argparse
import os
import signal
import ssl
import sys
import time
from collections.abc import Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import anyio

from aiodicom.errors import AiodicomError


class CliError(AiodicomError):
    """A command-line usage problem (bad path, bad option combination)."""


def _add_ae_options(parser: argparse.ArgumentParser, *, called_default: str = "ANY-SCP") -> None:
    parser.add_argument("--aet", default="AIODICOM", help="our (calling) AE title [%(default)s]")
    parser.add_argument("--aec", default=called_default, help="the peer's (called) AE title [%(default)s]")


def _add_timeout_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--timeout", type=float, default=30.0, help="connect/ACSE timeout in seconds [%(default)s]")
    parser.add_argument("--dimse-timeout", type=float, default=60.0, help="DIMSE timeout in seconds [%(default)s]")


def _add_tls_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tls", action="store_true", help="use TLS")
    parser.add_argument("--tls-ca", help="CA certificate(s) to verify the peer (PEM)")
    parser.add_argument("--tls-cert", help="our certificate (PEM), for client authentication")
    parser.add_argument("--tls-key", help="our private key (PEM)")
    parser.add_argument("--tls-no-verify", action="store_true", help="do not verify the peer's certificate")


def _client_ssl(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not args.tls:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=args.tls_ca)
    if args.tls_no_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if args.tls_cert:
        context.load_cert_chain(args.tls_cert, args.tls_key)
    return context


def _timeouts(args: argparse.Namespace) -> Any:
    from aiodicom.transport.association import Timeouts

    return Timeouts(connect=args.timeout, acse=args.timeout, dimse=args.dimse_timeout)


def _configure_logging(verbose: bool, *, client: bool = False) -> None:
    """INFO with ``-v``; otherwise warnings, or only errors for client commands.

    A client command reports its own failure as one line, so the warning the
    association logged about the same failure would just repeat it.
    """
    import logging

    from aiodicom._log import configure_logging

    configure_logging(logging.INFO if verbose else logging.ERROR if client else logging.WARNING)


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    echo = subparsers.add_parser("echo", help="C-ECHO a DICOM node")
    echo.add_argument("host")
    echo.add_argument("port", type=int)
    _add_ae_options(echo)
    _add_timeout_options(echo)
    _add_tls_client_options(echo)
    echo.add_argument("-v", "--verbose", action="store_true")
    echo.set_defaults(func=_echo)

    store = subparsers.add_parser("store", help="C-STORE files and folders to a DICOM node")
    store.add_argument("host")
    store.add_argument("port", type=int)
    store.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (searched recursively)")
    _add_ae_options(store)
    _add_timeout_options(store)
    _add_tls_client_options(store)
    store.add_argument("--max-pdu", type=int, default=None, help="maximum PDU length we announce")
    store.add_argument("--no-progress", action="store_true", help="no progress bar")
    store.add_argument("-v", "--verbose", action="store_true")
    store.set_defaults(func=_store)

    receive = subparsers.add_parser("receive", help="run a C-STORE SCP that writes what it receives")
    receive.add_argument("--host", default="127.0.0.1", help="address to listen on [%(default)s]")
    receive.add_argument("--port", type=int, default=11112, help="TCP port (0: any free one) [%(default)s]")
    receive.add_argument("--aet", default="AIODICOM", help="our AE title [%(default)s]")
    receive.add_argument("--output-dir", required=True, type=Path, help="where to write the files")
    receive.add_argument("--require-called-ae", action="store_true", help="reject other called AE titles")
    receive.add_argument("--allow", action="append", metavar="AE", help="accept only these calling AE titles")
    receive.add_argument("--accept-any-transfer-syntax", action="store_true", help="store compressed data untouched")
    receive.add_argument("--max-associations", type=int, default=64)
    receive.add_argument("--max-pdu", type=int, default=None, help="maximum PDU length we announce")
    receive.add_argument("--memory-threshold", type=int, default=0,
                         help="data sets larger than this many bytes stream to disk as they arrive; "
                         "smaller ones are written once complete [%(default)s: stream everything]")
    receive.add_argument("--tls-cert", help="serve TLS with this certificate (PEM)")
    receive.add_argument("--tls-key", help="private key for --tls-cert (PEM)")
    receive.add_argument("--tls-ca", help="CA for client certificates")
    receive.add_argument("--tls-require-client-cert", action="store_true")
    receive.add_argument("--grace", type=float, default=10.0, help="seconds to finish associations on SIGTERM")
    receive.add_argument("-v", "--verbose", action="store_true")
    receive.set_defaults(func=_receive)


# --- echo -------------------------------------------------------------------------------


def _echo(args: argparse.Namespace) -> int:
    from aiodicom.dimse.client import connect
    from aiodicom.runner import run

    _configure_logging(args.verbose, client=True)

    async def main() -> int:
        started = time.perf_counter()
        async with connect(
            args.host, args.port, called_ae=args.aec, calling_ae=args.aet,
            ssl=_client_ssl(args), timeouts=_timeouts(args),
        ) as assoc:
            status = await assoc.echo()
        elapsed = (time.perf_counter() - started) * 1000
        print(f"C-ECHO {args.host}:{args.port} ({args.aec}): {status} in {elapsed:.1f} ms")
        return 0 if status.is_success else 1

    return run(main)


# --- store ------------------------------------------------------------------------------


def iter_files(paths: list[str]) -> Iterator[Path]:
    """Files named, and files under folders named, in a stable order."""
    for name in paths:
        path = Path(name)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for file_name in sorted(files):
                    if not file_name.startswith("."):
                        yield Path(root) / file_name
        elif path.is_file():
            yield path
        else:
            raise CliError(f"no such file or folder: {name}")


class _Progress:
    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.done = 0
        self.enabled = enabled and sys.stderr.isatty()
        self._last = 0.0

    def step(self) -> None:
        self.done += 1
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and self.done != self.total:
            return
        self._last = now
        width = 30
        filled = int(width * self.done / max(self.total, 1))
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}")
        if self.done == self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _store(args: argparse.Namespace) -> int:
    from aiodicom.codec.part10 import read_file_meta
    from aiodicom.dimse.client import connect, contexts_for_encodings
    from aiodicom.runner import run
    from aiodicom.ul.negotiation import DEFAULT_MAX_PDU_LENGTH

    _configure_logging(args.verbose, client=True)
    files = list(iter_files(args.paths))
    if not files:
        raise CliError("no files to send")
    failures: list[str] = []
    # (SOP class, transfer syntax) -> files, read once: it decides the contexts and the batches.
    by_encoding: dict[tuple[str, str], list[Path]] = {}
    for path in files:
        try:
            meta = read_file_meta(path)
        except AiodicomError as exc:
            failures.append(f"{path}: not sent: {exc}")
            continue
        by_encoding.setdefault((meta.sop_class_uid, meta.transfer_syntax), []).append(path)
    readable = sum(len(paths) for paths in by_encoding.values())

    async def main() -> tuple[int, int]:
        sent = warned = 0
        progress = _Progress(readable, not args.no_progress)
        groups = contexts_for_encodings(by_encoding) if by_encoding else []
        for group in groups:
            classes = {abstract for abstract, _ in group}
            batch = [p for (sop, _ts), paths in by_encoding.items() if sop in classes for p in paths]
            if not batch:
                continue
            async with connect(
                args.host, args.port, called_ae=args.aec, calling_ae=args.aet, contexts=group,
                ssl=_client_ssl(args), timeouts=_timeouts(args),
                max_pdu_length=args.max_pdu or DEFAULT_MAX_PDU_LENGTH,
            ) as assoc:
                async with aclosing(assoc.store_files(batch)) as results:
                    async for path, status in results:
                        if isinstance(status, AiodicomError):
                            failures.append(f"{path}: {status}")
                        elif status.is_failure or status.is_cancel:
                            failures.append(f"{path}: {status}")
                        else:
                            sent += 1
                            warned += int(status.is_warning)
                        progress.step()
        return sent, warned

    started = time.perf_counter()
    sent, warned = run(main)
    elapsed = time.perf_counter() - started
    for line in failures[:20]:
        print(f"failed: {line}", file=sys.stderr)
    if len(failures) > 20:
        print(f"... and {len(failures) - 20} more failures", file=sys.stderr)
    rate = sent / elapsed if elapsed > 0 else 0.0
    print(
        f"sent {sent} of {len(files)} files to {args.host}:{args.port} ({args.aec}) in {elapsed:.2f} s "
        f"({rate:.0f}/s); {warned} with warnings; {len(failures)} failed"
    )
    return 0 if not failures and sent == len(files) else 1


# --- receive ------------------------------------------------------------------------------


class FileWriter:
    """Store handler writing ``DIR/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm``."""

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = output_dir.resolve()
        self.count = 0
        self._folders: dict[tuple[str, str], str] = {}

    async def __call__(self, instance: Any) -> int:
        from aiodicom.dimse.store import safe_component

        study = instance.study_instance_uid
        series = instance.series_instance_uid
        folder = self._folders.get((study, series))
        if folder is None:
            path = self.output_dir / safe_component(study, "unknown-study") / safe_component(
                series, "unknown-series"
            )
            path.mkdir(parents=True, exist_ok=True)
            folder = self._folders[(study, series)] = str(path)
        name = safe_component(instance.sop_instance_uid, "unknown-instance") + ".dcm"
        instance.save(os.path.join(folder, name), create_parents=False)
        self.count += 1
        return 0


def _server_ssl(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not args.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=args.tls_ca)
    context.load_cert_chain(args.tls_cert, args.tls_key)
    context.verify_mode = ssl.CERT_REQUIRED if args.tls_require_client_cert else (
        ssl.CERT_OPTIONAL if args.tls_ca else ssl.CERT_NONE
    )
    return context


def _receive(args: argparse.Namespace) -> int:
    from aiodicom.dimse.server import Server
    from aiodicom.runner import run
    from aiodicom.ul.negotiation import DEFAULT_MAX_PDU_LENGTH

    _configure_logging(args.verbose)
    output_dir: Path = args.output_dir
    output_dir.mkdir(parents=True, exist_ok=True)
    spool = output_dir / ".incoming"
    writer = FileWriter(output_dir)
    server = Server(
        args.aet,
        args.host,
        args.port,
        on_store=writer,
        accept_any_transfer_syntax=args.accept_any_transfer_syntax,
        require_called_ae=args.require_called_ae,
        calling_ae_allowlist=args.allow,
        max_associations=args.max_associations,
        max_pdu_length=args.max_pdu or DEFAULT_MAX_PDU_LENGTH,
        ssl=_server_ssl(args),
        spool_dir=spool,
        memory_threshold=args.memory_threshold,
    )

    async def main() -> int:
        async with anyio.create_task_group() as task_group:
            port = await task_group.start(server.serve)
            print(f"aiodicom receive: listening on {args.host}:{port} as {args.aet}, writing to {output_dir}",
                  flush=True)
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _signum in signals:
                    server.shutdown(args.grace)
                    break
        print(f"aiodicom receive: stored {writer.count} instances", flush=True)
        return 0

    return run(main)
