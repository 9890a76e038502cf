"""Running aiodicom when the application does not bring its own event loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")


def run(main: Callable[..., Awaitable[T]], *args: Any, use_uvloop: bool = True) -> T:
    """Run ``main(*args)`` on asyncio, with uvloop when it is installed.

    Applications that already run an event loop (FastAPI, Starlette, plain
    asyncio) just ``await`` aiodicom's coroutines instead.
    """
    if use_uvloop:
        try:
            import uvloop  # noqa: F401
        except ImportError:
            use_uvloop = False
    return anyio.run(main, *args, backend="asyncio", backend_options={"use_uvloop": use_uvloop})
