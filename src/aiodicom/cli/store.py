"""``aiodicom store``: C-STORE files and folders to a DICOM node."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

from aiodicom.cli.net import (
    CliError,
    add_ae_options,
    add_timeout_options,
    add_tls_client_options,
    client_ssl,
    client_timeouts,
    configure_logging,
)
from aiodicom.errors import AiodicomError


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``store`` subcommand."""
    store = subparsers.add_parser("store", help="C-STORE files and folders to a DICOM node")
    store.add_argument("host")
    store.add_argument("port", type=int)
    store.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (searched recursively)")
    add_ae_options(store)
    add_timeout_options(store)
    add_tls_client_options(store)
    store.add_argument("--max-pdu", type=int, default=None, help="maximum PDU length we announce")
    store.add_argument("--no-progress", action="store_true", help="no progress bar")
    store.add_argument("-v", "--verbose", action="store_true")
    store.set_defaults(func=_store)


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

    configure_logging(args.verbose, client=True)
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
                ssl=client_ssl(args), timeouts=client_timeouts(args),
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
