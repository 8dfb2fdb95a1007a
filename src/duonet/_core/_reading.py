"""Stream reads of ``AsyncSocket``: exact sizes, lines, skipping, iteration, anyio's ``receive``.

These are the semantics; the bytes come from the socket's transport
(:mod:`duonet._core._transport`) through its buffer. Every read checks its arguments before any
I/O, holds the read token for its whole run (a second reader gets ``BusyError``), and is
cancel-safe: a chunk the transport returns is in the buffer before the next ``await``, and bytes
leave the buffer only at a ``return``.

*Iteration* owns no byte: each step is one ``recv_line`` of the socket with the iterator's
arguments, so the socket's own buffer does the reading ahead, and any other read made between two
steps (or after the loop was left) sees exactly the bytes not yet yielded.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator

import anyio

from .._args import check_flags, check_max_length, check_timeout, describe
from .._enums import MAX_LINE_LENGTH, ReadLineResult, SocketFlag
from .._errors import BusyError, SocketClosedError
from ._datagram import recv_datagram
from ._state import CHUNK, SAFE_DISCONN, SocketState
from ._streams import (
    recv_line_unbuffered,
    recv_line_unbuffered_nowait,
    tls_line_from_record,
    unbuffered_lines_supported,
)

__all__ = ("LineIterator", "StreamReads", "writable_view")


class StreamReads(SocketState):
    """``AsyncSocket``'s stream reads."""

    async def recv(
        self, size: int, timeout: float | None = None, flags: SocketFlag = SAFE_DISCONN
    ) -> bytes:
        """Receive ``size`` bytes (buffered socket) or what one read gives (unbuffered).

        A buffered socket returns exactly ``size`` bytes unless the peer closes first (then what
        there was). An unbuffered socket returns what is buffered, or else what one read from the
        kernel gives (at least 1 byte). ``b""`` means the peer closed; a reset peer reads as
        closed under ``SAFE_DISCONN``. ``recv(0)`` returns ``b""`` at once.

        Args:
            size: how many bytes to return.
            timeout: seconds for the whole call; ``None`` or negative: forever; ``0``: only what
                has already arrived.
            flags: ``SocketFlag.SAFE_DISCONN`` (default) turns a reset into ``b""``.

        Cancelling or timing out is safe: every byte received so far stays buffered for the next
        call.

        Raises:
            TimeoutError: the timeout expired (nothing was lost).
            ConnectionResetError: the peer reset the connection (without ``SAFE_DISCONN``).
            SocketClosedError: the socket is closed, or was closed during the call.
            BusyError: another task is reading this socket.
            TypeError, ValueError: an argument of the wrong type or value (nothing was read).
            OSError: ``ENOTCONN``, the socket was never connected.
        """
        if (
            type(size) is not int
            or size < 1
            or timeout is not None
            or flags is not SAFE_DISCONN
            or self._unconnected
        ):  # (the default arguments need no further check: the body read of a protocol)
            size = self._check_io(size, timeout, flags, "recv")
            if size == 0:
                return b""
        if not self._reading:  # the body of a line-then-bytes protocol, already buffered
            data = self._buf.take_exact(size)
            if data is not None:
                return data
        self._begin_read()
        try:
            buf = self._buf
            if self._type == socket.SOCK_DGRAM:
                return await recv_datagram(self, size, timeout)
            if not self._buffered:
                # One read of at most `size` bytes: nothing is left behind in user space.
                with self._deadline(timeout, "recv"):
                    while not buf and await self._transport.fill(self, flags, size):
                        pass  # (a read that gave only the \n of a \r\n: read again)
                return buf.take(size)
            if len(buf) >= size:
                return buf.take(size)
            with self._deadline(timeout, "recv"):
                while len(buf) < size and await self._transport.fill(self, flags):
                    pass
            return buf.take(size)
        finally:
            self._reading = False

    async def recv_into(
        self,
        buffer: bytearray | memoryview,
        size: int | None = None,
        timeout: float | None = None,
        flags: SocketFlag = SAFE_DISCONN,
    ) -> int:
        """Receive into ``buffer``; return the number of bytes written.

        Follows :meth:`recv`: a buffered socket fills exactly ``size`` bytes (default
        ``len(buffer)``) unless the peer closes; unbuffered gives what one read gives. Plain
        sockets read straight into ``buffer`` once the socket's own buffer is empty. Cancelling
        or timing out is safe: bytes already written into ``buffer`` are counted by
        nothing, so they are copied back into the socket's buffer for the next call.
        """
        view = writable_view(buffer)
        size = self._check_io(len(view) if size is None else size, timeout, flags, "recv_into")
        if size > len(view):
            raise ValueError(f"size {size} is larger than the buffer ({len(view)} bytes)")
        if size == 0:
            return 0
        view = view[:size]
        self._begin_read()
        try:
            got = self._buf.take_into(view)
            if got == size or (got and not self._buffered):
                return got
            transport = self._transport
            with self._deadline(timeout, "recv_into"):
                try:
                    while got < size:
                        if transport.direct and self._buf.direct_ok:
                            n = await transport.read_into(self, view[got:], flags)
                            if n == 0:
                                break
                            got += n
                        else:
                            limit = CHUNK if self._buffered else size - got
                            if not await self._transport.fill(self, flags, limit):
                                got += self._buf.take_into(view[got:])
                                break
                            got += self._buf.take_into(view[got:])
                        if not self._buffered and got:
                            break
                except BaseException:
                    # Cancelled or failed mid-way: give the bytes back, lose nothing.
                    self._buf.unread(bytes(view[:got]))
                    raise
            return got
        finally:
            self._reading = False

    async def recv_line(
        self,
        timeout: float | None = None,
        flags: SocketFlag = SAFE_DISCONN,
        max_length: int = MAX_LINE_LENGTH,
    ) -> bytes:
        """Read one line, without its terminator.

        ``\\r\\n``, ``\\n`` and a lone ``\\r`` end a line (a ``\\n`` right after a lone ``\\r``,
        even in a later packet, belongs to it). An empty line is returned as ``b"\\r\\n"``, so
        ``b""`` always means the peer closed. A line longer than ``max_length`` comes back in
        pieces of ``max_length`` bytes, nothing discarded. A last line cut by the peer closing is
        returned as it is, then ``b""``.

        Args:
            timeout: seconds for the whole call; ``None`` or negative: forever; ``0``: only a line
                that has already arrived.
            flags: ``SAFE_DISCONN`` (default) reads a reset as "closed".
            max_length: the longest piece returned (at least 1).

        Cancelling or timing out is safe: the partial line stays buffered for the next call.

        Raises:
            TimeoutError: no full line within the timeout (nothing was lost).
            ValueError: ``max_length`` < 1, or a NaN timeout (nothing was read).
            TypeError: an argument of the wrong type (nothing was read).
            ConnectionResetError: the peer reset the connection (without ``SAFE_DISCONN``).
            SocketClosedError: the socket is closed, or was closed during the call.
            BusyError: another task is reading this socket.
            OSError: ``ENOTCONN``, the socket was never connected.
        """
        if timeout is not None or flags is not SAFE_DISCONN or max_length is not MAX_LINE_LENGTH:
            max_length = self._check_line(timeout, flags, max_length, "recv_line")
        if self._reading:
            raise BusyError(f"another task is already reading socket {self._describe()}")
        line = self._buf.take_line(max_length)  # (a never-connected socket has nothing buffered)
        if line is not None:
            return line
        if self._unconnected:
            raise self._not_connected()
        self._begin_read()
        try:
            buf = self._buf
            with self._deadline(timeout, "recv_line"):
                if not self._buffered:
                    if unbuffered_lines_supported(self) and not self._gone_nowait():
                        return await recv_line_unbuffered(self, flags, max_length)
                    # TLS (no peeking into an SSLObject): one byte at a time, never past the line
                    while True:
                        line = buf.take_line(max_length)
                        if line is None and self._tls is not None:
                            line = tls_line_from_record(self, max_length)
                        if line is not None:
                            return line
                        if not await self._transport.fill(self, flags, 1):
                            return buf.take_rest_line(max_length)
                while await self._transport.fill(self, flags):
                    line = buf.take_line(max_length)
                    if line is not None:
                        return line
            return buf.take_rest_line(max_length)
        finally:
            self._reading = False

    async def read_line(
        self,
        timeout: float | None = None,
        flags: SocketFlag = SAFE_DISCONN,
        max_length: int = MAX_LINE_LENGTH,
    ) -> bytes:
        """The same as :meth:`recv_line` (Nim's ``readLine``)."""
        return await self.recv_line(timeout, flags, max_length)

    def read_line_nowait(self) -> tuple[ReadLineResult, bytes]:
        """A line if one is buffered, without ever blocking.

        Returns ``(FULL_LINE, line)``; ``(NONE, b"")`` when no full line has arrived yet (nothing
        is consumed); ``(DISCONNECTED, b"")`` when the peer closed; ``(PARTIAL_LINE, rest)`` when
        it closed mid-line. Data already sitting in the kernel is read first (without waiting).
        """
        if self._reading:
            raise BusyError(f"another task is already reading socket {self._describe()}")
        self._check_open()
        buf = self._buf
        line = buf.take_line(MAX_LINE_LENGTH)
        if line is not None:
            return ReadLineResult.FULL_LINE, line
        if not self._buffered and unbuffered_lines_supported(self) and not self._gone_nowait():
            line = recv_line_unbuffered_nowait(self, SAFE_DISCONN, MAX_LINE_LENGTH)
            if line is None:
                return ReadLineResult.NONE, b""
            if not line:
                return ReadLineResult.DISCONNECTED, b""
            return (ReadLineResult.PARTIAL_LINE if buf.eof else ReadLineResult.FULL_LINE), line
        exact = not self._buffered  # (TLS, or plain with bytes buffered): never past the line
        while True:  # everything the kernel holds, up to and including EOF
            if exact and self._tls is not None:
                line = tls_line_from_record(self, MAX_LINE_LENGTH)
                if line is not None:
                    return ReadLineResult.FULL_LINE, line
            if not self._transport.pull_nowait_in_loop(self, SAFE_DISCONN, 1 if exact else CHUNK):
                break
            line = buf.take_line(MAX_LINE_LENGTH)
            if line is not None:
                return ReadLineResult.FULL_LINE, line
        if buf.eof:
            rest = buf.take_rest_line(MAX_LINE_LENGTH)
            if rest:
                return ReadLineResult.PARTIAL_LINE, rest
            return ReadLineResult.DISCONNECTED, b""
        return ReadLineResult.NONE, b""

    async def skip(self, size: int, timeout: float | None = None) -> int:
        """Read and drop ``size`` bytes; return how many were skipped (fewer if the peer closed).

        All or nothing: the bytes are dropped only once ``size`` of them (or EOF) have arrived, so
        cancelling or timing out leaves every received byte buffered for the next call (which
        means up to ``size`` bytes are held in memory meanwhile).
        """
        size = self._check_io(size, timeout, SAFE_DISCONN, "skip")
        if size == 0:
            return 0
        self._begin_read()
        try:
            buf = self._buf
            if len(buf) < size:
                with self._deadline(timeout, "skip"):
                    while len(buf) < size and await self._transport.fill(
                        self, SAFE_DISCONN, self._limit(size)
                    ):
                        pass
            return buf.discard(size)
        finally:
            self._reading = False

    def has_data_buffered(self) -> bool:
        """True if bytes are waiting in duonet's own buffer (never blocks, reads nothing)."""
        return bool(self._buf)

    async def _read_line_nowait_in_loop(self) -> tuple[ReadLineResult, bytes]:
        """:meth:`read_line_nowait` for the blocking face of a TLS socket: the ``SSLObject`` may
        only be used from the loop's thread, so the call is run there (it still never waits)."""
        return self.read_line_nowait()

    async def receive(self, max_bytes: int = 65536) -> bytes:
        """:class:`anyio.abc.ByteStream`'s read: 1 to ``max_bytes`` bytes, buffered ones first.

        Shares the buffer of ``recv``/``recv_line``: mixing them loses nothing.

        Raises:
            anyio.EndOfStream: where ``recv`` (default flags) returns ``b""``: the peer closed,
                reset, or closed TLS without close_notify.
            anyio.ClosedResourceError: the socket is closed (or was closed during the call).
            anyio.BrokenResourceError: any other failure (the cause is chained).
        """
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
            raise TypeError(f"max_bytes must be an integer, not {type(max_bytes).__name__}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, not {max_bytes}")
        if self._closed:
            raise anyio.ClosedResourceError
        buf = self._buf
        if not buf:
            self._begin_read()
            try:
                with self._deadline(None, "receive"):
                    limit = CHUNK if self._buffered else max_bytes
                    while not buf and await self._transport.fill(self, SAFE_DISCONN, limit):
                        pass
            except SocketClosedError:
                raise anyio.ClosedResourceError from None
            except (OSError, ssl.SSLError) as exc:
                raise anyio.BrokenResourceError(
                    f"receiving from {self._describe()} failed: {exc}"
                ) from exc
            finally:
                self._reading = False
            if not buf:
                raise anyio.EndOfStream
        return buf.take(max_bytes)

    def lines(
        self,
        timeout: float | None = None,
        flags: SocketFlag = SAFE_DISCONN,
        max_length: int = MAX_LINE_LENGTH,
    ) -> AsyncIterator[bytes]:
        """An async iterator over the lines that successive :meth:`recv_line` calls with these
        arguments return, ending (without yielding it) at ``b""``.

        ``async for line in sock`` is ``async for line in sock.lines()``. Empty lines come as
        ``b"\\r\\n"``, long lines in pieces of at most ``max_length`` bytes, a last line cut by
        the peer closing as it is. ``timeout`` bounds the wait for each line (``TimeoutError``
        ends the loop). The iterator owns no byte: another read of the socket between two
        steps, or after the loop was left (``break``, an exception, a timeout, a cancellation),
        sees exactly the bytes not yet yielded. On an unbuffered socket it reads no further
        ahead than ``recv_line``.
        """
        check_timeout(timeout)
        check_flags(flags, "lines")
        return LineIterator(self, timeout, flags, check_max_length(max_length))

    async def __anext__(self) -> bytes:
        if not self._reading:  # a line already split out: recv_line's own first step, inlined
            line = self._buf.take_line(MAX_LINE_LENGTH)
            if line is not None:
                return line
        line = await self.recv_line()
        if not line:
            raise StopAsyncIteration
        return line


def writable_view(buffer: object) -> memoryview:
    """``buffer`` as a flat writable byte view (``recv_into``'s target)."""
    try:
        view = memoryview(buffer)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            "buffer must be a writable bytes-like object (bytearray, memoryview, array...), "
            f"not {describe(buffer)}"
        ) from None
    if view.readonly:
        raise TypeError(f"buffer must be writable, not read-only {describe(buffer)}")
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


class LineIterator(AsyncIterator[bytes]):
    """``AsyncSocket.lines()``: one ``recv_line`` per step, ending (unyielded) at ``b""``."""

    __slots__ = ("_args", "_sock")

    def __init__(
        self, sock: StreamReads, timeout: float | None, flags: SocketFlag, max_length: int
    ) -> None:
        self._sock = sock
        self._args = (timeout, flags, max_length)

    def __aiter__(self) -> LineIterator:
        return self

    async def __anext__(self) -> bytes:
        sock = self._sock
        if not sock._reading:  # a line already split out: recv_line's own first step, inlined
            line = sock._buf.take_line(self._args[2])
            if line is not None:
                return line
        line = await sock.recv_line(*self._args)
        if not line:
            raise StopAsyncIteration
        return line
