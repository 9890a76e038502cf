"""``aiodicom receive``: a C-STORE SCP that writes what it receives."""

from __future__ import annotations

import argparse
import os
import signal
import ssl
from pathlib import Path
from typing import Any

import anyio

from aiodicom.cli.net import check_ae_options, configure_logging


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the ``receive`` subcommand."""
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
    receive.add_argument("--fsync", action="store_true",
                         help="flush each file and its folder to disk before answering success "
                         "(survives a power loss; batched across associations) [off: survives a crash]")
    receive.add_argument("--tls-cert", help="serve TLS with this certificate (PEM)")
    receive.add_argument("--tls-key", help="private key for --tls-cert (PEM)")
    receive.add_argument("--tls-ca", help="CA for client certificates")
    receive.add_argument("--tls-require-client-cert", action="store_true")
    receive.add_argument("--grace", type=float, default=10.0, help="seconds to finish associations on SIGTERM")
    receive.add_argument("--metrics-port", type=int, default=None, metavar="P",
                         help="serve Prometheus metrics at http://HOST:P/metrics (needs aiodicom[metrics])")
    receive.add_argument("--metrics-host", default="127.0.0.1", help="address for --metrics-port [%(default)s]")
    receive.add_argument("-v", "--verbose", action="store_true")
    receive.set_defaults(func=_receive)


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

    check_ae_options(args)
    configure_logging(args.verbose)
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
        fsync=args.fsync,
        observer=_metrics_observer(args),
    )

    async def main() -> int:
        async with anyio.create_task_group() as task_group:
            port = await task_group.start(server.serve)
            metrics = anyio.CancelScope()
            if server.observer is not None:
                metrics_port = await task_group.start(_serve_metrics, server.observer, args, metrics)
                print(f"aiodicom receive: metrics at http://{args.metrics_host}:{metrics_port}/metrics",
                      flush=True)
            print(f"aiodicom receive: listening on {args.host}:{port} as {args.aet}, writing to {output_dir}",
                  flush=True)
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _signum in signals:
                    server.shutdown(args.grace)
                    metrics.cancel()
                    break
        print(f"aiodicom receive: stored {writer.count} instances", flush=True)
        return 0

    return run(main)


def _metrics_observer(args: argparse.Namespace) -> Any:
    """A Prometheus observer when ``--metrics-port`` is given (prometheus_client imported only then)."""
    if args.metrics_port is None:
        return None
    from aiodicom.cli.net import CliError

    try:
        from aiodicom.metrics import PrometheusObserver
    except ImportError as exc:
        raise CliError(str(exc)) from None
    return PrometheusObserver()


async def _serve_metrics(observer: Any, args: argparse.Namespace, scope: anyio.CancelScope, *,
                         task_status: Any) -> None:
    """Serve metrics until ``scope`` is cancelled (when the server is told to stop)."""
    with scope:
        await observer.serve(args.metrics_host, args.metrics_port, task_status=task_status)
