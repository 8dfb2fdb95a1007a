"""The blocking face's fast path: calls answered in the caller's thread, without the portal.

The blocking ``Socket`` (``duonet._blocking``) tries the function of this module named like the
method it is running before it hops to the portal and awaits the :class:`AsyncSocket` method.
Each function takes the same arguments as that method (a test checks the signatures) and checks
them the same way, then either answers the call from what is already there (duonet's buffer, or
for plain sockets what a non-blocking syscall gets from the kernel) or returns ``None``: the
awaited method must run, and finds in the buffer anything read here.

The thread rule, stated once: these functions run in the *caller's* thread, while the portal
loop may be running other calls of the same socket. They are safe because

* the caller holds the blocking face's token for the direction (reads or writes) of the call,
  so no awaited call of that direction is in flight, and only the holder touches the receive
  buffer (reads) or the send side of the socket (writes);
* they never wait (a syscall that would block returns ``None`` instead);
* they touch TLS state only while they *own the channel*: an ``SSLObject`` is not thread-safe,
  so a TLS socket's channel is used either by the portal's loop or by one caller's thread, never
  both. Every portal call of a blocking socket is counted (:class:`PortalCalls`, in its
  ``call``); a fast path uses the channel only while it holds the count's lock and the count is
  zero, and a portal call cannot start (its count goes up under the same lock) until the fast
  path is done. Otherwise they answer only from the plaintext already in the buffer, or return
  ``None``. (``close()`` from a caller's thread holds both directions' tokens, so nothing else
  runs: it may send close_notify itself.)

Nothing else of the core is called from another thread than the loop's. (One function here,
:func:`finish_recv_into`, is awaited in the loop's thread through the portal: it goes on with a
``recv_into`` from what :func:`begin_recv_into` already wrote into the caller's buffer, instead
of copying those bytes back into duonet's buffer first.)

Answering from the buffer
-------------------------
The first step of every blocking line or exact-size read is :data:`line_from_buffer` (``recv_line``
and line iteration) or :data:`bytes_from_buffer` (``recv``): a line or an exact-size body that
duonet's buffer already holds is the whole answer, with no syscall and no loop, so the blocking
face returns it before anything else (even before its event-loop check: no I/O, nothing to
block). Only when the step returns ``None`` does the blocking face go on to the functions below
(they look at the buffer again, then at the kernel), then to the portal. The caller checks the
arguments before this step (a refused call takes nothing).

The step is the buffer's own ``take_line`` / ``take_exact``, named here: one implementation,
sans-I/O, shared with ``AsyncSocket`` and covered by the buffer's property tests. It is the hot
path of line and line-then-body protocols, so it costs exactly one Python call per line or body
(a wrapper function here would add a second frame to every ``\\r\\n`` line and body: +4-7 %
measured on those paths): ``take_line`` hands out a line already split from a batch of ``\\n``
lines with one ``list.pop()``, and ``\\r\\n`` lines and exact bodies are sliced from the chunk
the kernel gave.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from .. import _portal
from .._args import DataLike, check_bytes_view, check_flags, check_size, check_timeout
from .._buffer import ReadBuffer
from .._enums import MAX_LINE_LENGTH, SocketFlag
from ._accept import accept_raw_nowait
from ._datagram import recv_datagram_nowait, recv_from_ready
from ._reading import writable_view
from ._socket import AsyncSocket
from ._state import CHUNK
from ._streams import recv_line_unbuffered_nowait, unbuffered_lines_supported
from ._transport import TlsStream

__all__ = ("accept", "accept_addr", "recv", "recv_from", "recv_into", "recv_line", "send", "skip")

SAFE_DISCONN = SocketFlag.SAFE_DISCONN
T = TypeVar("T")


class PortalCalls:
    """The portal calls of one blocking socket in flight, counted: while there are none, a
    caller's thread that holds :attr:`lock` may use the socket's TLS channel (the thread rule
    above). The blocking ``Socket`` makes every portal call through :meth:`call`."""

    __slots__ = ("lock", "running")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0

    def call(
        self, func: Callable[..., Awaitable[T]], *args: Any, undo: Callable[[T], None] | None = None
    ) -> T:
        """:func:`duonet._portal.call`, counted."""
        lock = self.lock
        with lock:
            self.running += 1
        try:
            return _portal.call(func, *args, undo=undo)
        finally:
            with lock:
                self.running -= 1


def _as_owner(sock: AsyncSocket, work: Callable[[], T], otherwise: T) -> T:
    """``work()`` run as the owner of the socket's TLS channel: under its count's lock, if no
    portal call of the socket is in flight; else ``otherwise`` (the caller hops instead)."""
    calls: PortalCalls | None = sock._portal_calls
    if calls is None or not calls.lock.acquire(blocking=False):
        return otherwise
    try:
        return otherwise if calls.running else work()
    finally:
        calls.lock.release()


def _pull(sock: AsyncSocket, flags: SocketFlag, limit: int = CHUNK) -> bool:
    """Move what has arrived into the buffer without waiting: from the kernel on a plain
    socket; on a buffered TLS socket, decrypted, while the caller owns the channel."""
    transport = sock._transport
    if not isinstance(transport, TlsStream):
        return transport.pull_nowait(sock, flags, limit)
    if not sock._buffered:
        return False  # (an unbuffered TLS read goes record by record, in the loop)
    return _as_owner(sock, lambda: transport.pull_nowait_in_loop(sock, flags, limit), False)


#: The first step of a blocking ``recv_line`` (and of each step of line iteration): the next
#: line, or ``max_length`` piece, if the buffer holds it, else ``None``. See "Answering from the
#: buffer" above.
line_from_buffer: Callable[[ReadBuffer, int], bytes | None] = ReadBuffer.take_line

#: The first step of a blocking ``recv(size)``: exactly ``size`` bytes if the buffer holds them,
#: else ``None`` (also for a ``size`` below 1). See "Answering from the buffer" above.
bytes_from_buffer: Callable[[ReadBuffer, int], bytes | None] = ReadBuffer.take_exact


def recv(
    sock: AsyncSocket, size: int, timeout: float | None = None, flags: SocketFlag = SAFE_DISCONN
) -> bytes | None:
    size = sock._check_io(size, timeout, flags, "recv")
    buf = sock._buf
    if size == 0 or sock._closed:
        return None
    if sock._type == socket.SOCK_DGRAM:
        return buf.take(size) if buf else recv_datagram_nowait(sock, size)
    if not sock._buffered:
        if not buf:
            _pull(sock, flags, size)
        return buf.take(size) if buf else None
    while len(buf) < size:
        if not _pull(sock, flags):
            return None
    return buf.take(size)


def recv_line(
    sock: AsyncSocket,
    timeout: float | None = None,
    flags: SocketFlag = SAFE_DISCONN,
    max_length: int = MAX_LINE_LENGTH,
) -> bytes | None:
    if timeout is not None or flags is not SAFE_DISCONN or max_length is not MAX_LINE_LENGTH:
        max_length = sock._check_line(timeout, flags, max_length, "recv_line")
    if sock._closed:
        return None
    line = sock._buf.take_line(max_length)  # (a never-connected socket has nothing buffered)
    if line is None:
        if sock._unconnected:
            raise sock._not_connected()
        if not sock._buffered:
            if unbuffered_lines_supported(sock) and not sock._gone_nowait():
                return recv_line_unbuffered_nowait(sock, flags, max_length)
            return None  # the awaited call reads no further than the line
        if _pull(sock, flags):
            line = sock._buf.take_line(max_length)
    return line


def recv_into(
    sock: AsyncSocket,
    buffer: bytearray | memoryview,
    size: int | None = None,
    timeout: float | None = None,
    flags: SocketFlag = SAFE_DISCONN,
) -> int | None:
    started = begin_recv_into(sock, buffer, size, timeout, flags)
    if started is None or isinstance(started, int):
        return started
    view, got = started
    sock._buf.unread(bytes(view[:got]))  # the awaited call goes on from here
    return None


def begin_recv_into(
    sock: AsyncSocket,
    buffer: bytearray | memoryview,
    size: int | None = None,
    timeout: float | None = None,
    flags: SocketFlag = SAFE_DISCONN,
) -> int | tuple[memoryview, int] | None:
    """:func:`recv_into` that keeps a partial result where it is: the count when the call is
    answered; ``None`` if nothing was written; else the target's view (cut to ``size``) and how
    many bytes are already in it, for :func:`finish_recv_into` to go on from (those bytes are
    counted by nothing until then: its caller must see that they are given back if the call
    fails)."""
    view = writable_view(buffer)
    size = sock._check_io(len(view) if size is None else size, timeout, flags, "recv_into")
    if sock._closed or sock._tls is not None or size == 0 or size > len(view):
        return None
    view = view[:size]
    got = sock._buf.take_into(view)
    if got < size and not sock._buf.direct_ok:
        # a \n to skip (or EOF): let the buffer see the next bytes first
        if not _pull(sock, flags, sock._limit(size - got)) and not sock._buf.eof:
            return (view, got) if got else None
        got += sock._buf.take_into(view[got:])
    raw = sock._sock
    while got < size and sock._buf.direct_ok and (sock._buffered or not got):
        try:
            n = raw.recv_into(view[got:])
        except (BlockingIOError, InterruptedError):
            break
        except OSError as exc:
            sock._buf.unread(bytes(view[:got]))
            sock._nowait_error(exc, flags)
            return None
        if n == 0:
            try:
                sock._eof(flags)
            except OSError:
                sock._buf.unread(bytes(view[:got]))  # the bytes stay for the next read
                raise
            break
        got += n
    if got == size or sock._buf.eof or (got and not sock._buffered):
        return got
    return (view, got) if got else None  # not enough yet: the awaited call goes on from here


async def finish_recv_into(
    sock: AsyncSocket,
    view: memoryview,
    got: int,
    timeout: float | None,
    flags: SocketFlag,
    claim: list[None],
) -> int:
    """In the loop's thread: the rest of a :func:`begin_recv_into` that wrote ``got`` bytes of
    ``view``, awaited. Returns the count of the whole call. If the awaited read fails (timeout,
    close, cancel, error), the first ``got`` bytes go back to the front of the buffer before the
    error goes on, so nothing is lost: the same outcome as one awaited ``recv_into``, without
    copying the bytes back into the buffer first (up to a whole value for a large read).

    ``claim`` (a one-element list) decides who gives those bytes back if the call fails: this
    coroutine if it pops the element first, else the caller (a Ctrl-C before the job ran)."""
    try:
        claim.pop()
    except IndexError:
        return 0  # the caller gave the bytes back already: touch nothing
    try:
        return got + await sock.recv_into(view[got:], None, timeout, flags)
    except BaseException:
        sock._buf.unread(bytes(view[:got]))
        raise


def skip(sock: AsyncSocket, size: int, timeout: float | None = None) -> int | None:
    size = sock._check_io(size, timeout, SAFE_DISCONN, "skip")
    if size == 0 or sock._closed:
        return None
    buf = sock._buf
    while len(buf) < size:
        if not _pull(sock, SAFE_DISCONN, sock._limit(size)):
            return None
    return buf.discard(size)


def send(
    sock: AsyncSocket,
    data: DataLike,
    flags: SocketFlag = SAFE_DISCONN,
    timeout: float | None = None,
) -> DataLike | None:
    """Send what the kernel takes now: None if all of it was sent, else what is left to send
    (the awaited ``send`` sends it, and reports any error with the flags' rules)."""
    view = check_bytes_view(data, "send")
    if type(flags) is not SocketFlag:
        check_flags(flags, "send")
    if timeout is not None:
        check_timeout(timeout)
    if sock._closed or sock._peer_gone or sock._unconnected or sock._eof_sent:
        return view
    transport = sock._transport
    if isinstance(transport, TlsStream):
        tls = transport
        rest: memoryview | None = view  # (what is left: all of it, if the caller hops)
        return _as_owner(sock, lambda: tls.send_nowait(sock, view, flags), rest)
    try:
        sent = sock._sock.send(view)
    except (BlockingIOError, InterruptedError):
        return view
    except OSError:
        return view  # let the awaited call report it, with the flags' rules
    return view[sent:] if sent < len(view) else None


def accept(
    sock: AsyncSocket,
    flags: SocketFlag = SAFE_DISCONN,
    inheritable: bool = False,
    timeout: float | None = None,
) -> AsyncSocket | None:
    accepted = accept_addr(sock, flags, inheritable, timeout)
    return None if accepted is None else accepted[0]


def accept_addr(
    sock: AsyncSocket,
    flags: SocketFlag = SAFE_DISCONN,
    inheritable: bool = False,
    timeout: float | None = None,
) -> tuple[AsyncSocket, str] | None:
    """A client already waiting in the backlog of a plain listener (a TLS listener's
    handshakes need the loop), with its address."""
    if type(flags) is not SocketFlag:
        check_flags(flags, "accept")
    check_timeout(timeout)
    if sock._closed or sock._ssl_context is not None:
        return None
    return accept_raw_nowait(sock, flags, inheritable)


def recv_from(
    sock: AsyncSocket, length: int, timeout: float | None = None
) -> tuple[bytes, str, int] | None:
    length = check_size(length, "length")
    check_timeout(timeout)
    return recv_from_ready(sock, length)
