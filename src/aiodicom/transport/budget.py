"""A byte budget shared by every connection of a server.

Each association alone is bounded (one PDU body up to the PDU cap, in-memory data
sets up to the memory threshold), but a server with many associations multiplies
those bounds. The budget caps their sum: a PDU body buffer that cannot be charged
waits (its connection stops reading) until another one is released, and an
in-memory data set that cannot be charged spills to the spool instead. Nothing
grows past the budget.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable


class MemoryBudget:
    """Counts bytes held in memory; never lets the count pass :attr:`limit`."""

    __slots__ = ("limit", "used", "_waiters")

    def __init__(self, limit: int) -> None:
        if limit <= 0:
            raise ValueError(f"memory budget must be positive, got {limit}")
        self.limit = limit
        self.used = 0
        self._waiters: deque[tuple[int, Callable[[], None]]] = deque()

    def take(self, nbytes: int) -> bool:
        """Charge ``nbytes`` if they fit (and nobody waits before us); True when charged."""
        if self._waiters or self.used + nbytes > self.limit:
            return False
        self.used += nbytes
        return True

    def give(self, nbytes: int) -> None:
        """Release bytes charged earlier; grants waiters, oldest first, that now fit."""
        self.used -= nbytes
        waiters = self._waiters
        while waiters and self.used + waiters[0][0] <= self.limit:
            need, granted = waiters.popleft()
            self.used += need
            granted()

    def wait(self, nbytes: int, granted: Callable[[], None]) -> None:
        """Queue a request: ``granted()`` runs once ``nbytes`` are charged for the caller."""
        self._waiters.append((nbytes, granted))

    def cancel(self, granted: Callable[[], None]) -> None:
        """Withdraw a queued request (its connection closed first)."""
        for item in self._waiters:
            if item[1] == granted:
                self._waiters.remove(item)
                # The next in line may fit now that this one no longer blocks the queue.
                self.give(0)
                return
