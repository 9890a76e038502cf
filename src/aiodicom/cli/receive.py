"""``aiodicom receive``: a C-STORE SCP that writes what it receives."""

from __future__ import annotations

import argparse
import os
import signal
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO

import anyio
import anyio.abc

from aiodicom.cli import EXIT_INTERRUPTED, number, single_error
from aiodicom.cli.net import (
    LOG_FORMATS,
    LOG_LEVELS,
    CliError,
    at_least_one,
    check_ae_options,
    configure_cli_logging,
    listen_port,
    load_cert_chain,
    seconds,
    tls_context,
)
from aiodicom.transport.address import describe_os_error

if TYPE_CHECKING:
    from aiodicom.dimse.store import AssociationInfo, ReceivedInstance
    from aiodicom.dimse.workers import WorkerChannel

def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``receive`` subcommand."""
    receive = subparsers.add_parser(
        "receive",
        help="run a C-STORE SCP that writes what it receives",
        description="Run a C-STORE SCP writing DIR/<Study>/<Series>/<SOP>.dcm. It listens on "
        "127.0.0.1 unless told otherwise: use --host 0.0.0.0 for modalities on the network.",
    )
    add_listen_options(receive)
    receive.add_argument("--output-dir", required=True, type=Path, help="where to write the files")
    receive.add_argument("--max-associations", type=at_least_one, default=64,
                         help="associations at once; with workers, each takes up to twice its share [%(default)s]")
    receive.add_argument("--workers", type=at_least_one, default=None, metavar="N",
                         help="processes sharing the port, each with its own event loop (Linux) "
                              "[number of cores; 1 with --metrics-port]")
    receive.add_argument("--max-operations", type=at_least_one, default=1, metavar="N",
                         help="requests served at once on one association when the sender proposes an "
                         "asynchronous operations window [%(default)s]")
    receive.add_argument("--max-connections-per-host", type=at_least_one, default=None, metavar="N",
                         help="open connections one peer address may hold [max-associations + 8]")
    receive.add_argument("--max-memory", type=at_least_one, default=512, metavar="MIB",
                         help="memory for PDU buffers and in-memory data sets, all associations [%(default)s]")
    receive.add_argument("--max-pdu", type=int, default=None, help="maximum PDU length we announce")
    receive.add_argument("--memory-threshold", type=number(int, 0), default=0,
                         help="data sets larger than this many bytes stream to disk as they arrive; "
                         "smaller ones are written once complete [%(default)s: stream everything]")
    receive.add_argument("--fsync", action="store_true",
                         help="flush each file and its folder to disk before answering success "
                         "(survives a power loss; batched across associations) [off: survives a crash]")
    receive.add_argument("--tls-cert", help="serve TLS with this certificate (PEM)")
    receive.add_argument("--tls-key", help="private key for --tls-cert (PEM)")
    receive.add_argument("--tls-ca", help="CA for client certificates")
    receive.add_argument("--tls-require-client-cert", action="store_true")
    receive.add_argument("--metrics-port", type=listen_port, default=None, metavar="P",
                         help="serve Prometheus metrics at http://HOST:P/metrics (needs aiodicom[metrics])")
    receive.add_argument("--metrics-host", default="127.0.0.1", help="address for --metrics-port [%(default)s]")
    add_running_options(receive)
    receive.set_defaults(func=_receive)


def add_listen_options(parser: argparse.ArgumentParser) -> None:
    """Where an SCP listens and whom it accepts (``receive``, ``qrscp``)."""
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; 0.0.0.0 for every interface [%(default)s]")
    parser.add_argument("--port", type=listen_port, default=11112,
                        help="TCP port (0: any free one) [%(default)s]")
    parser.add_argument("--aet", default="AIODICOM", help="our AE title [%(default)s]")
    parser.add_argument("--require-called-ae", action="store_true", help="reject other called AE titles")
    parser.add_argument("--allow", action="append", metavar="AE", help="accept only these calling AE titles")
    parser.add_argument("--accept-any-transfer-syntax", action="store_true", help="store compressed data untouched")


def add_running_options(parser: argparse.ArgumentParser) -> None:
    """An SCP's timeouts, shutdown grace and logs (``receive``, ``qrscp``)."""
    parser.add_argument("--acse-timeout", type=seconds, default=30.0, metavar="S",
                        help="seconds for association set-up and release [%(default)s]")
    parser.add_argument("--dimse-timeout", type=seconds, default=60.0, metavar="S",
                        help="seconds for a peer to take our messages or answer ours [%(default)s]")
    parser.add_argument("--idle-timeout", type=seconds, default=120.0, metavar="S",
                        help="seconds an association may stay silent [%(default)s]")
    parser.add_argument("--grace", type=number(float, 0.0), default=10.0,
                        help="seconds to finish associations on SIGTERM or a first Ctrl-C "
                        "(a second Ctrl-C stops at once) [%(default)s]")
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="warning", help="[%(default)s]")
    parser.add_argument("--log-format", choices=LOG_FORMATS, default="console",
                        help="console lines or one JSON object per line, on stderr [%(default)s]")
    parser.add_argument("-v", "--verbose", action="store_true", help="same as --log-level info")


class FileWriter:
    """Store handler writing ``DIR/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm``."""

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = output_dir.resolve()
        self.count = 0
        #: A path in each (study, series) folder, whose name is replaced per instance:
        #: ``with_name`` does not parse the folder's components again, as a new Path would.
        self._folders: dict[tuple[str, str], Path] = {}

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
            folder = self._folders[(study, series)] = path / "instance.dcm"
        name = safe_component(instance.sop_instance_uid, "unknown-instance") + ".dcm"
        instance.save(folder.with_name(name), create_parents=False)
        self.count += 1
        return 0


class _Totals(Protocol):
    instances: int
    bytes: int


class Tally:
    """What ``receive`` reports: one line per association at its end, a live status line.

    Instances and failures per association come from the server's count of the
    C-STORE statuses it answered (``AssociationInfo.store_statuses``); bytes are
    counted here, around the store handler. Lines go to ``emit`` (default: written to
    ``out``); a worker's tally sends them to the parent, the one writer of stdout.
    """

    def __init__(self, out: TextIO, live: bool, emit: Callable[[str], None] | None = None) -> None:
        self.out = out
        self.live = live
        self._emit = emit
        self.instances = 0
        self.bytes = 0
        self._bytes_by_association: dict[int, int] = {}
        self._shown = False

    def counting(
        self, handler: Callable[[ReceivedInstance], Awaitable[int | None]]
    ) -> Callable[[ReceivedInstance], Awaitable[int | None]]:
        async def on_store(instance: ReceivedInstance) -> int | None:
            code = await handler(instance)
            if not code:
                key = instance.association.id
                self._bytes_by_association[key] = self._bytes_by_association.get(key, 0) + instance.size
                self.instances += 1
                self.bytes += instance.size
            return code

        return on_store

    async def released(self, info: AssociationInfo) -> None:
        self._report(info, "released")

    async def aborted(self, info: AssociationInfo) -> None:
        self._report(info, "aborted")

    def _report(self, info: AssociationInfo, ending: str) -> None:
        from aiodicom.dimse.status import Status

        statuses = info.store_statuses
        stored = sum(n for code, n in statuses.items() if Status(code).is_success or Status(code).is_warning)
        failed = sum(statuses.values()) - stored
        size = self._bytes_by_association.pop(info.id, 0)
        seconds = time.monotonic() - info.started
        line = (
            f"association {info.id} from {info.calling_ae.strip() or '?'} at "
            f"{info.peer_host}:{info.peer_port} {ending} after {seconds:.2f} s: "
            f"{stored} instances, {_size(size)}, {failed} failed"
        )
        if self._emit is not None:
            self._emit(line)
        else:
            self.show(line)

    def show(self, line: str) -> None:
        """Write ``line`` on ``out`` in one write, clearing the live status line first."""
        from aiodicom.dimse.workers import write_line

        self.clear()
        write_line(line, self.out)

    def clear(self) -> None:
        if self._shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self._shown = False

    async def show_live(
        self, active: Callable[[], int], interval: float = 0.5, totals: _Totals | None = None
    ) -> None:
        """Rewrite one status line on the terminal: totals, recent rate, open associations.

        ``totals`` counts instances and bytes (default: this tally; with workers, the pool).
        """
        totals = totals or self
        last_count, last_time = totals.instances, time.monotonic()
        while True:
            await anyio.sleep(interval)
            now = time.monotonic()
            rate = (totals.instances - last_count) / (now - last_time)
            last_count, last_time = totals.instances, now
            sys.stderr.write(
                f"\r\x1b[K{totals.instances} instances, {_size(totals.bytes)}, "
                f"{rate:.0f}/s, {active()} associations open"
            )
            sys.stderr.flush()
            self._shown = True


def _size(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def _server_ssl(args: argparse.Namespace) -> ssl.SSLContext | None:
    if not args.tls_cert:
        if args.tls_key or args.tls_ca or args.tls_require_client_cert:
            raise CliError("--tls-key, --tls-ca and --tls-require-client-cert need --tls-cert")
        return None
    context = tls_context(ssl.Purpose.CLIENT_AUTH, args.tls_ca)
    load_cert_chain(context, args.tls_cert, args.tls_key)
    context.verify_mode = ssl.CERT_REQUIRED if args.tls_require_client_cert else (
        ssl.CERT_OPTIONAL if args.tls_ca else ssl.CERT_NONE
    )
    return context


def prepare_output_dir(path: Path) -> Path:
    """Create the output folder and prove we can write in it, before listening.

    A folder we cannot write to would otherwise show up only as every C-STORE
    refused with 0xA700 once a modality sends; root ignores permission bits, so
    this tries for real (a read-only file system stops root too).
    """
    if path.exists() and not path.is_dir():
        raise CliError(f"output folder {path} is a file")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".aiodicom-write-test-{os.getpid()}"
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        probe.unlink()
    except OSError as exc:
        raise CliError(f"cannot write to output folder {path}: {describe_os_error(exc)}") from None
    return path


def _build_server(
    args: argparse.Namespace, tally: Tally, output_dir: Path, channel: WorkerChannel | None = None
) -> Any:
    """The Server that ``receive`` runs, or each of its workers (``channel``: on the shared port)."""
    from aiodicom.dimse.server import Server
    from aiodicom.ul.negotiation import DEFAULT_MAX_PDU_LENGTH

    on_store = tally.counting(FileWriter(output_dir))
    return Server(
        on_store=on_store if channel is None else channel.reporting(on_store),
        **server_options(args, tally),
        max_operations=args.max_operations,
        max_connections_per_host=args.max_connections_per_host,
        max_memory=args.max_memory * 1024 * 1024,
        max_pdu_length=args.max_pdu or DEFAULT_MAX_PDU_LENGTH,
        ssl=_server_ssl(args),
        spool_dir=output_dir / ".incoming",
        memory_threshold=args.memory_threshold,
        fsync=args.fsync,
        observer=_metrics_observer(args),
        listen_fd=None if channel is None else channel.listen_fd,
    )


def server_options(args: argparse.Namespace, tally: Tally) -> dict[str, Any]:
    """The ``Server`` arguments of the options every SCP command shares (see
    :func:`add_listen_options`, :func:`add_running_options`), its reports going to ``tally``."""
    from aiodicom.transport.association import Timeouts

    return {
        "ae_title": args.aet,
        "host": args.host,
        "port": args.port,
        "on_released": tally.released,
        "on_aborted": tally.aborted,
        "accept_any_transfer_syntax": args.accept_any_transfer_syntax,
        "require_called_ae": args.require_called_ae,
        "calling_ae_allowlist": args.allow,
        "max_associations": args.max_associations,
        "timeouts": Timeouts(acse=args.acse_timeout, dimse=args.dimse_timeout, network_idle=args.idle_timeout),
    }


def _workers(args: argparse.Namespace) -> int:
    """``--workers``, defaulting to the number of cores (1 with ``--metrics-port``: one registry)."""
    from aiodicom.dimse.workers import usable_workers

    if args.workers is None:
        return 1 if args.metrics_port is not None else usable_workers(os.cpu_count() or 1)
    if args.workers > 1 and args.metrics_port is not None:
        raise CliError("--metrics-port needs --workers 1 (metrics are not gathered across processes yet)")
    return usable_workers(args.workers)


class Stopper:
    """SIGTERM or a first Ctrl-C drains within --grace; a second one stops at once.

    Shared by ``aiodicom receive`` and ``aiodicom serve`` (``command`` names it in the
    message; ``tally``'s live line, if any, is cleared first).
    """

    def __init__(
        self, shutdown: Callable[[float], None], grace: float, tally: Tally | None, command: str = "receive"
    ) -> None:
        self.shutdown = shutdown
        self.grace = grace
        self.tally = tally
        self.command = command
        self.interrupted = False
        self.stopping = False

    async def watch(self) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                self.interrupted = self.interrupted or signum == signal.SIGINT
                if self.stopping:
                    self.shutdown(0)
                    continue
                self.stopping = True
                self.shutdown(self.grace)
                if signum == signal.SIGINT:  # someone at a terminal: say what happens next
                    if self.tally is not None:
                        self.tally.clear()
                    print(
                        f"aiodicom {self.command}: finishing open associations (up to {self.grace:g} s); "
                        "Ctrl-C again stops at once",
                        file=sys.stderr,
                        flush=True,
                    )


async def start_listening(
    group: anyio.abc.TaskGroup, serve: Callable[..., Coroutine[Any, Any, None]], host: str, port: int
) -> int:
    """``await group.start(serve)``; an address that cannot be bound is one line, not a traceback.

    The OSError may come wrapped in the exception group of ``serve``'s own task group (a pipeline).
    """
    try:
        bound: int = await group.start(serve)
    except Exception as exc:
        error = single_error(exc)
        if isinstance(error, OSError):
            raise CliError(f"cannot listen on {host}:{port}: {describe_os_error(error)}") from None
        raise
    return bound


def _receive(args: argparse.Namespace) -> int:
    check_ae_options(args)
    configure_cli_logging("info" if args.verbose else args.log_level, args.log_format)
    output_dir = prepare_output_dir(args.output_dir)
    workers = _workers(args)
    if workers > 1:
        return _receive_with_workers(args, output_dir, workers)
    tally = Tally(sys.stdout, live=sys.stderr.isatty())
    server = _build_server(args, tally, output_dir)
    return _run_receiver(
        args, output_dir, tally, server.serve, server.shutdown, lambda: server.active_associations, tally,
        server.observer,
    )  # fmt: skip


def _run_receiver(
    args: argparse.Namespace,
    output_dir: Path,
    tally: Tally,
    serve: Callable[..., Coroutine[Any, Any, None]],
    shutdown: Callable[[float], None],
    active: Callable[[], int],
    totals: _Totals,
    observer: Any = None,
) -> int:
    """Serve until a signal stops it (one Server, or the pool of workers); the lines users read."""
    from aiodicom.runner import run

    stopper = Stopper(shutdown, args.grace, tally)

    async def main() -> int:
        async with anyio.create_task_group() as watchers:
            watchers.start_soon(stopper.watch)
            try:
                async with anyio.create_task_group() as serving:
                    port = await start_listening(serving, serve, args.host, args.port)
                    if observer is not None:  # served until the receiver stops
                        metrics_port = await _start_metrics(watchers, observer, args)
                        print(f"aiodicom receive: metrics at http://{args.metrics_host}:{metrics_port}/metrics",
                              flush=True)
                    print(f"aiodicom receive: listening on {args.host}:{port} as {args.aet}, "
                          f"writing to {output_dir}", flush=True)
                    if tally.live:
                        watchers.start_soon(tally.show_live, active, 0.5, totals)
            finally:
                watchers.cancel_scope.cancel()
        tally.clear()
        print(f"aiodicom receive: stored {totals.instances} instances ({_size(totals.bytes)})", flush=True)
        return EXIT_INTERRUPTED if stopper.interrupted else 0

    return run(main)


def _receive_with_workers(args: argparse.Namespace, output_dir: Path, workers: int) -> int:
    """``receive`` as ``workers`` processes on one port (see aiodicom.dimse.workers).

    The parent checks the options, reserves the port, starts the workers and
    forwards SIGTERM/Ctrl-C; it is the only writer of stdout: the listening line,
    the association lines the workers report, the total they reported.
    """
    from aiodicom.dimse.workers import WorkerPool, share, split

    shares = {
        "max_associations": share(args.max_associations, workers),
        "max_memory": split(args.max_memory, workers),
        "output_dir": output_dir,
        "workers": 1,
    }

    def worker_args(port: int) -> argparse.Namespace:
        return argparse.Namespace(**{**vars(args), **shares, "port": port})

    tally = Tally(sys.stdout, live=sys.stderr.isatty())
    shares["live"] = tally.live  # workers then report their open associations
    _build_server(worker_args(args.port), tally, output_dir)  # a bad option: one error here, not N
    pool = WorkerPool(
        receive_worker, worker_args, host=args.host, port=args.port, workers=workers, on_line=tally.show
    )
    return _run_receiver(args, output_dir, tally, pool.serve, pool.shutdown, lambda: pool.active_associations, pool)


async def receive_worker(args: argparse.Namespace, channel: WorkerChannel) -> None:
    """One worker of ``receive --workers N``: a Server on the shared port, reporting what it stores."""
    from aiodicom.dimse.workers import serve_until_stopped

    configure_cli_logging("info" if args.verbose else args.log_level, args.log_format)
    tally = Tally(sys.stdout, live=False, emit=channel.say)
    server = _build_server(args, tally, args.output_dir, channel)
    async with anyio.create_task_group() as group:
        if getattr(args, "live", False):
            group.start_soon(channel.report_active, lambda: server.active_associations)
        await serve_until_stopped(server.serve, server.shutdown, channel)
        group.cancel_scope.cancel()


def _metrics_observer(args: argparse.Namespace) -> Any:
    """A Prometheus observer when ``--metrics-port`` is given (prometheus_client imported only then)."""
    if args.metrics_port is None:
        return None
    try:
        from aiodicom.metrics import PrometheusObserver
    except ImportError as exc:
        raise CliError(str(exc)) from None
    return PrometheusObserver()


async def _start_metrics(task_group: anyio.abc.TaskGroup, observer: Any, args: argparse.Namespace) -> int:
    """Serve ``/metrics`` in ``task_group``; a port that cannot be bound is a one-line error."""
    try:
        port: int = await task_group.start(observer.serve, args.metrics_host, args.metrics_port)
    except OSError as exc:
        raise CliError(
            f"cannot serve metrics on {args.metrics_host}:{args.metrics_port}: {describe_os_error(exc)}"
        ) from None
    return port
