"""The one way to run CPU-heavy pipeline code off the event loop: worker processes.

``process()`` runs on the event loop that also receives data; a numpy or model
call that takes seconds there stops every association for seconds. ::

    async def process(self, container):
        mask = await aiodicom.offload(segment, container["ct"])   # in a worker process

``function`` and its arguments go to a worker by pickle, so ``function`` must be
importable (defined at module level in a module, not in ``__main__`` or a
closure), and its result comes back by pickle. Workers are reused between calls
(anyio's process pool: at most one per CPU busy at once); a cancelled call (the
process timeout, shutdown) kills its worker. No threads are involved.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar, TypeVarTuple, Unpack

import anyio.to_process

__all__ = ["offload"]

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


async def offload(function: Callable[[Unpack[Ts]], T], *args: *Ts) -> T:
    """Run ``function(*args)`` in a worker process and return its result."""
    return await anyio.to_process.run_sync(function, *args, cancellable=True)
