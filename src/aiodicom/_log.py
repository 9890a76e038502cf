"""Loggers that import structlog only when something is actually logged.

A command-line client that logs nothing at its level (``aiodicom store``
logs only errors) then never pays structlog's import, a noticeable share of
its start-up. Everything logged still goes through structlog: the first
call at an enabled level builds the real bound logger.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

_minimum_level = logging.NOTSET
_configure: Callable[[], None] | None = None
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "exception": logging.ERROR,
    "critical": logging.CRITICAL,
}


def set_minimum_level(level: int, configure: Callable[[], None] | None = None) -> None:
    """Drop calls below ``level`` before structlog is involved (the CLI sets this).

    ``configure`` (e.g. a ``structlog.configure`` call) runs once, just before
    the first logger is really made, so configuring costs nothing until then.
    """
    global _minimum_level, _configure
    _minimum_level = level
    _configure = configure


class LazyLogger:
    """A structlog-like bound logger whose structlog logger is made on first use."""

    __slots__ = ("_name", "_context", "_real")

    def __init__(self, name: str, context: dict[str, Any] | None = None) -> None:
        self._name = name
        self._context = context or {}
        self._real: Any = None

    def bind(self, **values: Any) -> LazyLogger:
        return LazyLogger(self._name, {**self._context, **values})

    def __getattr__(self, method: str) -> Any:
        level = _LEVELS.get(method)
        if level is not None and level < _minimum_level:
            return _ignore
        if self._real is None:
            global _configure
            import structlog

            if _configure is not None:
                configure, _configure = _configure, None
                configure()
            self._real = structlog.get_logger(self._name).bind(**self._context)
        return getattr(self._real, method)


def _ignore(*_args: Any, **_kwargs: Any) -> None:
    return None


def get_logger(name: str = "aiodicom") -> LazyLogger:
    return LazyLogger(name)
