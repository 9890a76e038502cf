"""Prometheus metrics for a :class:`~aiodicom.Server` (the ``metrics`` extra: prometheus-client).

::

    metrics = aiodicom.metrics.PrometheusObserver()
    server = aiodicom.Server("MYAE", on_store=handle, observer=metrics)
    async with anyio.create_task_group() as tg:
        await tg.start(metrics.serve, "127.0.0.1", 9102)   # GET /metrics
        await tg.start(server.serve)

Everything is counted on the event loop, inline, by the server's observer
calls (:mod:`aiodicom.dimse.events`); scraping is answered by a small asyncio
HTTP endpoint in the same loop, so no extra thread runs. Without an observer
the server pays nothing.
"""

from __future__ import annotations

import asyncio

import anyio
import anyio.abc

try:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
    from prometheus_client.exposition import CONTENT_TYPE_LATEST
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("aiodicom.metrics needs prometheus-client: pip install 'aiodicom[metrics]'") from exc

from aiodicom._log import get_logger
from aiodicom.dimse.status import Status

_log = get_logger("aiodicom.metrics")

#: Handler and association times span a millisecond to minutes.
_HANDLER_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_ASSOCIATION_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
_MAX_REQUEST = 8192


class PrometheusObserver:
    """A :class:`~aiodicom.dimse.events.ServerObserver` keeping Prometheus metrics.

    Metrics (prefix ``aiodicom_``): ``associations_total{outcome}``,
    ``associations_active``, ``association_duration_seconds``,
    ``rejections_total{reason}``, ``requests_total{command,status,category}``,
    ``instances_total{category}``, ``received_bytes_total``,
    ``handler_duration_seconds{command}``. Pass ``registry`` to keep them
    apart from the process-wide default registry (one per server, or tests).
    """

    def __init__(self, registry: CollectorRegistry | None = None, namespace: str = "aiodicom") -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r, ns = self.registry, namespace
        self.associations = Counter("associations", "Associations that ended, by outcome", ["outcome"],
                                    namespace=ns, registry=r)
        self.active = Gauge("associations_active", "Associations open now", namespace=ns, registry=r)
        self.association_duration = Histogram("association_duration_seconds", "Association lifetimes",
                                              namespace=ns, registry=r, buckets=_ASSOCIATION_BUCKETS)
        self.rejections = Counter("rejections", "Connections and associations turned away, by reason",
                                  ["reason"], namespace=ns, registry=r)
        self.requests = Counter("requests", "DIMSE requests answered, by command and status",
                                ["command", "status", "category"], namespace=ns, registry=r)
        self.instances = Counter("instances", "C-STORE instances answered, by status category", ["category"],
                                 namespace=ns, registry=r)
        self.received_bytes = Counter("received_bytes", "C-STORE data set bytes received",
                                      namespace=ns, registry=r)
        self.handler_duration = Histogram("handler_duration_seconds", "Time in the application's handler",
                                          ["command"], namespace=ns, registry=r, buckets=_HANDLER_BUCKETS)

    # --- ServerObserver ------------------------------------------------------------------

    def association_rejected(self, reason: str) -> None:
        self.rejections.labels(reason).inc()

    def association_started(self) -> None:
        self.active.inc()

    def association_ended(self, outcome: str, duration: float) -> None:
        self.active.dec()
        self.associations.labels(outcome).inc()
        self.association_duration.observe(duration)

    def request_handled(self, command: str, status: int, size: int, handler_seconds: float) -> None:
        category = Status(status).category.value
        self.requests.labels(command, f"0x{status:04X}", category).inc()
        if command == "C-STORE":
            self.instances.labels(category).inc()
            self.received_bytes.inc(size)
            self.handler_duration.labels(command).observe(handler_seconds)

    # --- exposition ----------------------------------------------------------------------

    def exposition(self) -> bytes:
        """The metrics in the Prometheus text format."""
        return generate_latest(self.registry)

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 9102,
        *,
        task_status: anyio.abc.TaskStatus[int] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Answer ``GET /metrics`` over HTTP until cancelled; ``task_group.start`` returns the port."""
        server = await asyncio.start_server(self._answer, host, port)
        try:
            bound: int = server.sockets[0].getsockname()[1]
            _log.info("metrics_listening", host=host, port=bound)
            task_status.started(bound)
            await anyio.sleep_forever()
        finally:
            server.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
            request_line = head[: min(len(head), _MAX_REQUEST)].split(b"\r\n", 1)[0].split()
            if len(request_line) >= 2 and request_line[0] == b"GET" and request_line[1].split(b"?")[0] == b"/metrics":
                body, status, content_type = self.exposition(), b"200 OK", CONTENT_TYPE_LATEST.encode()
            else:
                body, status, content_type = b"not found: try GET /metrics\n", b"404 Not Found", b"text/plain"
            writer.write(
                b"HTTP/1.1 " + status + b"\r\nContent-Type: " + content_type
                + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()


__all__ = ["PrometheusObserver"]
