"""One deadline per call: :class:`Deadline`, used by every timed call of the core, ``dial``
included.

``timeout`` is in seconds for the *whole* call (resolution, connecting, handshakes and reading
all count against it). ``None``, a negative number or ``inf`` never expires. ``0`` means "do not
wait": the call may use what is already buffered or already in the kernel, but its first wait
fails. With a :class:`~duonet._core._io.Waiter` that is exact (the waiter refuses to wait); a call
with no socket of its own yet (``dial``) gets a deadline that has already passed, which fails its
first wait just the same.

On expiry the call raises the builtin :class:`TimeoutError`, naming the call and the address.
Reads add that nothing was lost: the bytes received so far stay buffered.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import TracebackType

import anyio

from .._errors import SocketClosedError
from ._io import Waiter

__all__ = ("Deadline",)


class Deadline:
    """The one timeout of one call: enter it once around the whole call body.

    Args:
        timeout: seconds, checked by the caller (``None``, negative or ``inf``: no limit).
        what: the call, as the message names it (``"recv_line"``, ``"connect to host:port"``).
        waiter: the socket's waiter, set to "do not wait" for ``timeout=0``.
        where: gives the socket's address for messages (``None``: ``what`` says it all).
        keeps: the call is a read, whose message says that nothing received was lost.
    """

    __slots__ = ("_keeps", "_scope", "_timeout", "_waiter", "_what", "_where")

    def __init__(
        self,
        timeout: float | None,
        what: str,
        waiter: Waiter | None = None,
        where: Callable[[], str] | None = None,
        keeps: bool = False,
    ) -> None:
        self._timeout = timeout
        self._what = what
        self._waiter = waiter
        self._where = where
        self._keeps = keeps
        self._scope: anyio.CancelScope | None = None

    def __enter__(self) -> Deadline:
        timeout = self._timeout
        if timeout is None or timeout < 0 or timeout == math.inf:
            return self
        if timeout == 0 and self._waiter is not None:
            self._waiter.nowait = True
            return self
        self._scope = anyio.CancelScope(deadline=anyio.current_time() + timeout)
        self._scope.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._waiter is not None:
            self._waiter.nowait = False
        scope = self._scope
        if scope is not None:
            scope.__exit__(exc_type, exc, tb)  # swallows the cancellation it caused
            if scope.cancelled_caught:
                raise TimeoutError(self.message()) from None
        if exc_type is anyio.WouldBlock:
            raise TimeoutError(self.message()) from None
        if exc_type is anyio.ClosedResourceError:
            where = self._where() if self._where is not None else self._what
            raise SocketClosedError(f"socket {where}") from None

    def settle(self, where: str) -> None:
        """Name ``where`` in messages from now on instead of asking the socket: for a closing
        socket's shared deadline, so that it no longer refers back to its socket (a reference
        cycle that left every closed socket to the cycle collector)."""
        self._where = where.__str__

    def message(self) -> str:
        """``recv_line on 127.0.0.1:80 timed out after 5 s (...)``."""
        where = self._where() if self._where is not None else ""
        head = self._what if where in self._what else f"{self._what} on {where}"
        text = f"{head} timed out after {self._timeout:g} s"
        if self._keeps:
            text += " (everything received so far stays buffered)"
        return text
