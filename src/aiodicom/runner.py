"""Running aiodicom when the application does not bring its own event loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Callable[..., Coroutine[Any, Any, T]], *args: Any, use_uvloop: bool = True) -> T:
    """Run ``main(*args)`` on asyncio, with uvloop when it is installed.

    Plain :class:`asyncio.Runner` rather than ``anyio.run``: anyio code (the server's
    task groups) runs on any asyncio loop, and a one-shot client command does not pay
    for importing anyio. Applications that already run an event loop (FastAPI,
    Starlette, plain asyncio) just ``await`` aiodicom's coroutines instead.
    """
    with asyncio.Runner(loop_factory=_uvloop_factory() if use_uvloop else None) as runner:
        return runner.run(main(*args))


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory
