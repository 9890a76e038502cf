"""``aiodicom store``: C-STORE files and folders to a DICOM node, and say what got through.

Every file named or found ends in exactly one outcome, kept in a :class:`StoreRun`
whatever stops the run (the peer aborting, a timeout, Ctrl-C), so the summary
and the ``--report`` JSON always tell which files the peer acknowledged:

``acknowledged``
    the peer answered success (0x0000);
``warning``
    the peer stored it with a warning status (e.g. 0xB000 coercion);
``failed``
    the peer answered a failure status, or no context fits, or the association
    ended while it was in flight (no answer: it may or may not be stored);
``refused``
    refused locally: unreadable, not DICOM or truncated, never sent;
``not_sent``
    the run stopped before it was sent;
``skipped``
    found in a folder but not a DICOM file (not counted as a failure).

Files are resent as they are; a file with odd-length values is padded first
and a losslessly compressed one is decompressed for a peer that accepted no
compressed context: both are counted and listed in ``local_changes``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from aiodicom._record import Record, field
from aiodicom.cli import startup
from aiodicom.cli.net import (
    CliError,
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
from aiodicom.errors import AiodicomError, DicomFileError

if TYPE_CHECKING:
    from aiodicom.dimse.requesting import ContextSpec
    from aiodicom.dimse.status import Status

#: The version of the ``--report`` JSON layout (docs/guide/sending.md, "What got through").
REPORT_VERSION = 1
#: How many per-file lines each kind of problem prints on stderr (the report has them all).
_MAX_LINES = 20


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``store`` subcommand."""
    store = subparsers.add_parser("store", help="C-STORE files and folders to a DICOM node")
    store.add_argument("host")
    store.add_argument("port", type=port_number)
    store.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (searched recursively)")
    add_ae_options(store)
    add_timeout_options(store)
    add_tls_client_options(store)
    store.add_argument("--max-pdu", type=int, default=None, help="maximum PDU length we announce")
    store.add_argument("--no-progress", action="store_true", help="no progress bar")
    store.add_argument("--report", metavar="FILE.json",
                       help="write the outcome of every file as JSON (also when the run is cut short)")
    store.add_argument("-v", "--verbose", action="store_true")
    store.set_defaults(func=_store)


def iter_files(paths: list[str]) -> Iterator[tuple[str, bool]]:
    """``(file, found in a folder)`` for files named and files under folders named, in a stable order.

    Plain ``os.path`` strings: pathlib's import is a sizeable part of a one-file store's start-up.
    """
    for name in paths:
        if os.path.isdir(name):
            for root, dirs, files in os.walk(name):
                dirs.sort()
                for file_name in sorted(files):
                    if not file_name.startswith("."):
                        yield os.path.join(root, file_name), True
        elif os.path.isfile(name):
            yield name, False
        else:
            raise CliError(f"no such file or folder: {name}")


class FileResult(Record):
    """One file's outcome, as the report writes it."""

    path: str
    outcome: str = "not_sent"
    sop_instance_uid: str | None = None
    status: int | None = None
    status_text: str | None = None
    error_comment: str | None = None
    reason: str | None = None
    local_changes: list[str] = field(default_factory=list)

    def answered(self, status: Status) -> None:
        self.status = int(status)
        self.status_text = status.description
        self.error_comment = status.error_comment
        self.local_changes = list(status.local_changes)
        self.outcome = "acknowledged" if status.is_success else "warning" if status.is_warning else "failed"

    def line(self) -> str:
        if self.status is not None:
            detail = f"0x{self.status:04X} ({self.status_text})"
            if self.error_comment:
                detail += f": {self.error_comment}"
        else:
            detail = self.reason or self.outcome
        return f"{self.path}: {detail}"


_OUTCOMES = ("acknowledged", "warning", "failed", "refused", "not_sent", "skipped")
_CHANGES = (("padded", "repaired", "odd-length values padded, as DCMTK does"),
            ("decompressed", "decompressed", "lossless, for a peer that accepted no compressed context"))


class StoreRun:
    """Every file's outcome and why the run stopped, whatever happens to the association."""

    def __init__(self, host: str, port: int, called_ae: str, calling_ae: str) -> None:
        self.peer = {"host": host, "port": port, "called_ae": called_ae, "calling_ae": calling_ae}
        self.results: list[FileResult] = []
        self.stopped: list[str] = []
        self.in_flight: FileResult | None = None
        self.elapsed = 0.0

    def add(self, path: str, outcome: str = "not_sent", reason: str | None = None) -> FileResult:
        result = FileResult(path, outcome, reason=reason)
        self.results.append(result)
        return result

    def stop(self, reason: str, batch: list[FileResult] | None = None) -> None:
        """The association (or the whole run) ended: the file in flight had no answer."""
        if reason not in self.stopped:
            self.stopped.append(reason)
        if self.in_flight is not None and self.in_flight.outcome == "not_sent":
            self.in_flight.outcome = "failed"
            self.in_flight.reason = f"no response: {reason}"
        self.in_flight = None
        for result in batch if batch is not None else self.results:
            if result.outcome == "not_sent" and result.reason is None:
                result.reason = reason

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(_OUTCOMES, 0)
        for result in self.results:
            counts[result.outcome] += 1
        return counts

    def changed(self, prefix: str) -> int:
        return sum(any(c.startswith(prefix) for c in r.local_changes) for r in self.results)

    @property
    def succeeded(self) -> bool:
        counts = self.counts()
        return counts["acknowledged"] + counts["warning"] + counts["skipped"] == len(self.results)

    def summary(self) -> list[str]:
        counts = self.counts()
        total = len(self.results) - counts["skipped"]
        done = counts["acknowledged"] + counts["warning"]
        rate = done / self.elapsed if self.elapsed > 0 else 0.0
        peer = self.peer
        lines = [
            f"sent {done} of {total} files to {peer['host']}:{peer['port']} ({peer['called_ae']}) "
            f"in {self.elapsed:.2f} s ({rate:.0f}/s)",
            f"  acknowledged  {done} ({counts['warning']} with warnings)",
        ]
        labels = {"failed": "failed", "refused": "refused locally (unreadable, not DICOM or truncated)",
                  "not_sent": "not sent"}
        lines += [f"  {key.replace('_', ' '):<13} {counts[key]}" + (f"  {labels[key]}" if key == "refused" else "")
                  for key in labels if counts[key]]
        for prefix, name, meaning in _CHANGES:
            if number := self.changed(prefix):
                lines.append(f"  {name:<13} {number} ({meaning})")
        if counts["skipped"]:
            lines.append(f"  skipped       {counts['skipped']} non-DICOM files found in folders")
        return lines

    def problems(self) -> list[str]:
        """stderr lines: each warned, failed or refused file, then why the run stopped."""
        lines: list[str] = []
        for outcome, label in (("warning", "warning"), ("failed", "failed"), ("refused", "refused")):
            chosen = [r for r in self.results if r.outcome == outcome]
            lines += [f"{label}: {r.line()}" for r in chosen[:_MAX_LINES]]
            if len(chosen) > _MAX_LINES:
                lines.append(f"... and {len(chosen) - _MAX_LINES} more {label} files (see --report)")
        not_sent = self.counts()["not_sent"]
        for reason in self.stopped:
            # One line per problem: a stop that only cut the file in flight is already shown.
            if not_sent or not any(r.reason and reason in r.reason for r in self.results):
                lines.append(f"stopped: {reason}" + (f" ({not_sent} not sent)" if not_sent else ""))
        return lines

    def report(self) -> dict[str, Any]:
        return {
            "version": REPORT_VERSION,
            "peer": self.peer,
            "elapsed_seconds": round(self.elapsed, 3),
            "stopped": self.stopped,
            "counts": self.counts(),
            "files": [result._asdict() for result in self.results],
        }


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


def _scan(args: argparse.Namespace, run: StoreRun) -> dict[tuple[str, str], list[FileResult]]:
    """Read each file's meta once: it decides the contexts and the batches.

    A non-DICOM file found in a folder is skipped (folders hold READMEs,
    thumbnails, DICOMDIRs' neighbours); one named on the command line is refused.
    """
    from aiodicom.codec.part10 import read_file_meta

    by_encoding: dict[tuple[str, str], list[FileResult]] = {}
    for path, in_folder in iter_files(args.paths):
        try:
            meta = read_file_meta(path)
        except (AiodicomError, OSError) as exc:
            run.add(path, "skipped" if in_folder else "refused", reason=_reason(exc))
            continue
        result = run.add(path)
        result.sop_instance_uid = meta.sop_instance_uid
        by_encoding.setdefault((meta.sop_class_uid, meta.transfer_syntax), []).append(result)
    return by_encoding


def _reason(exc: BaseException) -> str:
    # Our errors first: DicomTimeoutError is also a TimeoutError, hence an OSError.
    if isinstance(exc, OSError) and not isinstance(exc, AiodicomError):
        return f"cannot read: {exc.strerror or exc}"
    return str(exc) or type(exc).__name__


def _batches(
    by_encoding: Mapping[tuple[str, str], list[FileResult]],
) -> Iterator[tuple[list[ContextSpec], list[FileResult]]]:
    """One association's contexts (at most 128) and the files it sends."""
    from aiodicom.dimse.requesting import contexts_for_encodings

    for group in contexts_for_encodings(by_encoding) if by_encoding else []:
        classes = {abstract for abstract, _ in group}
        batch = [r for (sop, _ts), results in by_encoding.items() if sop in classes for r in results]
        if batch:
            yield group, batch


class _Batch:
    """Takes the outcomes of one association's files, in order, into the run."""

    def __init__(self, run: StoreRun, batch: list[FileResult], progress: _Progress) -> None:
        self.run = run
        self.batch = batch
        self.progress = progress
        self.index = 0
        run.in_flight = batch[0]

    def record(self, outcome: Status | AiodicomError) -> None:
        result = self.batch[self.index]
        self.index += 1
        self.run.in_flight = self.batch[self.index] if self.index < len(self.batch) else None
        if isinstance(outcome, DicomFileError):
            result.outcome, result.reason = "refused", _reason(outcome)
        elif isinstance(outcome, AiodicomError):
            result.outcome, result.reason = "failed", _reason(outcome)
        else:
            result.answered(outcome)
        self.progress.step()

    def done(self) -> None:
        self.run.in_flight = None


def _connect_options(args: argparse.Namespace, contexts: list[ContextSpec]) -> dict[str, Any]:
    """What :func:`aiodicom.connect` and the blocking driver are given alike."""
    from aiodicom.ul.negotiation import DEFAULT_MAX_PDU_LENGTH

    return {"called_ae": args.aec, "calling_ae": args.aet, "contexts": contexts, "ssl": client_ssl(args),
            "timeouts": client_timeouts(args), "max_pdu_length": args.max_pdu or DEFAULT_MAX_PDU_LENGTH}


def _send_blocking(
    args: argparse.Namespace, run: StoreRun, by_encoding: Mapping[tuple[str, str], list[FileResult]]
) -> None:
    from aiodicom.dimse.blocking import connect_blocking

    progress = _Progress(sum(map(len, by_encoding.values())), not args.no_progress)
    for group, batch in _batches(by_encoding):
        try:
            with connect_blocking(args.host, args.port, **_connect_options(args, group)) as assoc:
                taker = _Batch(run, batch, progress)
                for _path, outcome in assoc.store_files([r.path for r in batch]):
                    taker.record(outcome)
                taker.done()
        except AiodicomError as exc:
            run.stop(_reason(exc), batch)


async def _send(args: argparse.Namespace, run: StoreRun, by_encoding: Mapping[tuple[str, str], list[FileResult]]) -> None:
    from aiodicom.dimse.client import connect

    progress = _Progress(sum(map(len, by_encoding.values())), not args.no_progress)
    for group, batch in _batches(by_encoding):
        try:
            async with connect(args.host, args.port, **_connect_options(args, group)) as assoc:
                taker = _Batch(run, batch, progress)
                async with aclosing(assoc.store_files([r.path for r in batch])) as outcomes:
                    async for _path, outcome in outcomes:  # in the order given
                        taker.record(outcome)
                taker.done()
        except AiodicomError as exc:
            run.stop(_reason(exc), batch)


def _store(args: argparse.Namespace) -> int:
    with startup():  # everything the run needs, imported here: _scan and _send find it loaded
        import aiodicom.codec.part10
        import aiodicom.codec.walk

        if uses_asyncio(args):
            import aiodicom.dimse.client
        else:
            import aiodicom.dimse.blocking  # noqa: F401

    check_ae_options(args)
    if uses_asyncio(args):
        configure_logging(args.verbose, client=True)
    run = StoreRun(args.host, args.port, args.aec, args.aet)
    by_encoding = _scan(args, run)
    if not run.results:
        raise CliError("no files to send")
    if all(result.outcome == "skipped" for result in run.results):
        raise CliError(f"no DICOM files to send ({len(run.results)} non-DICOM files skipped)")
    started = time.perf_counter()
    interrupted = False
    try:
        if uses_asyncio(args):
            from aiodicom.runner import run as run_async

            # One file: uvloop's speed would not show, its import (~5 ms) would.
            run_async(_send, args, run, by_encoding, use_uvloop=len(run.results) > 1)
        else:
            _send_blocking(args, run, by_encoding)
    except KeyboardInterrupt:
        interrupted = True
        run.stop("interrupted (Ctrl-C)")
    finally:
        run.elapsed = time.perf_counter() - started
        _finish(args, run)
    if interrupted:
        return 130
    return 0 if run.succeeded else 1


def _finish(args: argparse.Namespace, run: StoreRun) -> None:
    for line in run.problems():
        print(line, file=sys.stderr)
    print("\n".join(run.summary()), flush=True)
    if args.report is not None:
        import json  # only with --report: a one-file store starts faster without it

        try:
            with open(args.report, "w", encoding="utf-8") as report:
                report.write(json.dumps(run.report(), indent=1) + "\n")
        except OSError as exc:
            print(f"aiodicom store: error: cannot write the report {args.report}: {exc.strerror or exc}",
                  file=sys.stderr)
