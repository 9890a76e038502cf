"""Structured logs that go through the standard library's ``logging``, silent until configured.

Every logger is named ``aiodicom.*`` and is a plain :mod:`logging` logger
underneath, so an application decides what it sees with the logging set-up it
already has; ``aiodicom`` carries a ``NullHandler``, which keeps the library
quiet (no "last resort" warnings on stderr) until then.

Calls stay cheap on the hot path: a :class:`LazyLogger` asks the standard
logger ``isEnabledFor`` (cached by :mod:`logging`) before anything else, so
a disabled call formats nothing and never imports structlog. The first
enabled call builds a structlog ``stdlib.BoundLogger`` around the standard
logger; its last processor hands the record to :mod:`logging` as the text
``event key=value ...`` (for any handler) with the structured event attached
as ``record.aiodicom_event`` (for :class:`JsonLogFormatter`).

The structlog wrappers are private to aiodicom: nothing here calls
``structlog.configure``, so an application's own structlog set-up is untouched.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import MutableMapping
from typing import IO, Any, Literal

ROOT = "aiodicom"
#: The attribute of a :class:`logging.LogRecord` holding the structured event.
EVENT_ATTRIBUTE = "aiodicom_event"

logging.getLogger(ROOT).addHandler(logging.NullHandler())

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
    "fatal": logging.CRITICAL,
}


def _to_stdlib(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Last structlog processor: the arguments of the ``logging.Logger`` call."""
    exc_info = event_dict.pop("exc_info", None)
    event = str(event_dict.pop("event", ""))
    text = " ".join([event, *(f"{key}={value!r}" for key, value in event_dict.items())])
    return (text,), {"exc_info": exc_info, "extra": {EVENT_ATTRIBUTE: {"event": event, **event_dict}}}


class LazyLogger:
    """A structlog-like bound logger over ``logging.getLogger(name)``, built on first enabled use."""

    __slots__ = ("_name", "_context", "_stdlib", "_real")

    def __init__(self, name: str, context: dict[str, Any] | None = None) -> None:
        self._name = name
        self._context = context or {}
        self._stdlib = logging.getLogger(name)
        self._real: Any = None

    def bind(self, **values: Any) -> LazyLogger:
        return LazyLogger(self._name, {**self._context, **values})

    def is_enabled_for(self, level: int) -> bool:
        """For callers that would compute something costly just to log it."""
        return self._stdlib.isEnabledFor(level)

    def __getattr__(self, method: str) -> Any:
        level = _LEVELS.get(method)
        if level is not None and not self._stdlib.isEnabledFor(level):
            return _ignore
        if self._real is None:
            import structlog

            self._real = structlog.wrap_logger(
                self._stdlib,
                processors=[_to_stdlib],
                wrapper_class=structlog.stdlib.BoundLogger,
                context_class=dict,
            ).bind(**self._context)
        return getattr(self._real, method)


def _ignore(*_args: Any, **_kwargs: Any) -> None:
    return None


def get_logger(name: str = ROOT) -> LazyLogger:
    return LazyLogger(name)


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger name, event and its key-values.

    Records from aiodicom carry their structured event; any other record is
    shown with its message as the event, so one handler serves a whole application.
    """

    def format(self, record: logging.LogRecord) -> str:
        structured = getattr(record, EVENT_ATTRIBUTE, None)
        event: dict[str, Any] = {
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        event.update(structured if structured is not None else {"event": record.getMessage()})
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        import json  # here: every command imports this module, few print JSON

        return json.dumps(event, default=str)


_CONSOLE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_HANDLER_MARK = "_aiodicom_handler"


def configure_logging(
    level: int | str = "INFO",
    fmt: Literal["console", "json"] = "console",
    *,
    stream: IO[str] | None = None,
    logger: str = ROOT,
) -> logging.Handler:
    """Show aiodicom's logs (``logger`` and below) at ``level`` on ``stream`` (stderr).

    ``fmt="console"`` prints ``time LEVEL logger: event key=value ...``;
    ``fmt="json"`` prints one JSON object per line (:class:`JsonLogFormatter`).
    Calling it again replaces the handler it installed before. Applications
    with their own logging set-up do not need this: aiodicom's records
    propagate to the root logger like any others.
    """
    if isinstance(level, str):
        resolved = logging.getLevelName(level.upper())
        if not isinstance(resolved, int):
            raise ValueError(f"unknown log level {level!r}")
        level = resolved
    formatters: dict[str, logging.Formatter] = {
        "console": logging.Formatter(_CONSOLE_FORMAT),
        "json": JsonLogFormatter(),
    }
    if fmt not in formatters:
        raise ValueError(f"unknown log format {fmt!r}; use 'console' or 'json'")
    target = logging.getLogger(logger)
    for old in [h for h in target.handlers if getattr(h, _HANDLER_MARK, False)]:
        target.removeHandler(old)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatters[fmt])
    setattr(handler, _HANDLER_MARK, True)
    target.addHandler(handler)
    target.setLevel(level)
    # Shown here; an application's root handlers would print it a second time.
    target.propagate = False
    return handler
