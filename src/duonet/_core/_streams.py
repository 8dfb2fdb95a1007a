"""Stream helpers of ``AsyncSocket``: unbuffered line reads, the drain at close, anyio attributes.

Theory of operation
-------------------
*Unbuffered line reads* (``buffered=False``, plain sockets) take from the kernel exactly the line
and its terminator: the kernel's queue is peeked (``MSG_PEEK``), the extent of the next line is
found with the buffer's rules (:func:`line_extent`), and exactly that many bytes are read and run
through the buffer, which applies the line rules and remembers the ``\\n`` that may still follow
a lone ``\\r`` as state. While no line end has arrived, nothing is consumed: the wait for *more*
bytes uses ``SO_RCVLOWAT`` (honoured by TCP's poll; Unix sockets ignore it, so there the wait
backs off with short sleeps), and the end of the stream behind a partial line is told by
``POLLRDHUP``. A partial line that outgrows the kernel's queue (it stops growing past
``_HOLD_AFTER`` bytes) is moved to the buffer, or its end would never arrive. TLS cannot be
peeked at: unbuffered TLS lines are taken a byte at a time from the record OpenSSL has already
decrypted (:func:`tls_line_from_record`); where ``POLLRDHUP`` is missing, plain lines are read
from the kernel a byte at a time.

*The drain at close*: Linux answers the close of a socket that still holds unread bytes with a
reset instead of a FIN, and a reset destroys what was still on its way to the peer (measured: a
client that sent 4 MiB and closed with unread TLS 1.3 session tickets, or an unread greeting, had
its peer receive only part of them, then ``ECONNRESET``). So ``close`` first reads, without
waiting and bounded, whatever the kernel holds, unless (for an unbuffered socket, the only kind
whose stream can be shared) another descriptor shares the socket, in this process or in a child
it was handed to: then the close is not the last one, no reset can happen, and those bytes are
the other reader's.
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import SocketAttribute

from .._enums import SocketFlag

if TYPE_CHECKING:
    from ._state import SocketState

__all__ = (
    "drain_unread",
    "extra_attributes",
    "line_extent",
    "pending_lf",
    "recv_line_unbuffered",
    "recv_line_unbuffered_nowait",
    "tls_line_from_record",
    "unbuffered_lines_supported",
)

#: How many bytes a drain at close reads at most (a peer flooding a closing socket is not
#: followed forever).
_DRAIN_LIMIT = 1 << 24
_POLLRDHUP: int | None = getattr(select, "POLLRDHUP", None)
try:  # FIONREAD: how many bytes the kernel holds unread (Linux, BSD, macOS)
    import fcntl
    import termios

    _FIONREAD: int | None = termios.FIONREAD
except ImportError:  # Windows
    _FIONREAD = None
_NO_BYTES = bytes(4)  # FIONREAD's int, zero
#: First peek of an unbuffered line read; doubled while no line end is in sight.
_PEEK_START = 4096
#: A partial unbuffered line this long that stops growing is moved to the buffer (the kernel's
#: queue is full: waiting for its end without taking anything would wait forever).
_HOLD_AFTER = 1 << 16


# -- unbuffered line reads --------------------------------------------------------------------


def line_extent(data: bytes, max_length: int) -> int | None:
    """How many bytes at the front of ``data`` make the next line (or ``max_length`` piece) with
    its terminator, by the buffer's rules; ``None`` if that cannot be told yet."""
    size = len(data)
    limit = min(size, max_length + 1)
    lf = data.find(b"\n", 0, limit)
    cr = data.find(b"\r", 0, limit if lf == -1 else lf)
    if cr != -1:
        if cr + 1 < size and data[cr + 1] == 10:
            return cr + 2
        return cr + 1  # a lone \r ends the line at once; a \n after it is remembered as state
    if lf != -1:
        return lf + 1
    if size > max_length:
        return max_length
    return None


def pending_lf(sock: SocketState) -> bool:
    # The buffer is empty: it refuses direct reads only while a \n after a lone \r is to be
    # skipped.
    buf = sock._buf
    return not buf and not buf.eof and not buf.direct_ok


def _peer_shut(fd: int) -> bool:
    """True if the peer has shut its side down (the data in the kernel is all there is)."""
    assert _POLLRDHUP is not None
    poller = select.poll()
    poller.register(fd, select.POLLIN | _POLLRDHUP)
    return any(
        events & (_POLLRDHUP | select.POLLHUP | select.POLLERR) for _, events in poller.poll(0)
    )


def _line_step(sock: SocketState, flags: SocketFlag, max_length: int, window: int) -> Any:
    """One non-blocking look at the kernel for an unbuffered ``recv_line``.

    Returns the line (``bytes``, ``b""`` at the end of the stream), or the number of bytes peeked
    (``int``) when no line end has arrived yet; nothing is consumed then. Raises
    ``BlockingIOError`` when nothing at all is there. The start of the line may already be
    buffered (see :func:`recv_line_unbuffered`): the kernel then holds its rest.
    """
    raw = sock._sock
    buf = sock._buf
    while True:
        try:
            data = raw.recv(window, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            raise BlockingIOError from None
        except OSError as exc:
            sock._nowait_error(exc, flags)  # a disconnection under flags: the end of the stream
            return buf.take_rest_line(max_length)
        if not data:
            sock._eof(flags)  # (reports a reset that connect() left, as an ordinary read does)
            return buf.take_rest_line(max_length)
        if data[0] == 10 and pending_lf(sock):
            buf.feed(raw.recv(1))  # the \n of a \r\n whose \r ended the last line
            continue
        count = line_extent(data, max_length - len(buf))
        if count is None:
            if len(data) >= window or not _peer_shut(raw.fileno()):
                return len(data)
            # The last line, cut by the peer closing: all of it, then the end of the stream.
            buf.feed(raw.recv(len(data)))
            sock._eof(flags)
            return buf.take_rest_line(max_length)
        if count:
            buf.feed(raw.recv(count))
        line = buf.take_line(max_length)
        return line if line is not None else buf.take_rest_line(max_length)


def tls_line_from_record(sock: SocketState, max_length: int) -> bytes | None:
    """The next line of an unbuffered TLS socket, taken a byte at a time from what the
    ``SSLObject`` has already decrypted (never past the line); ``None`` if the record ran out
    first. Loop thread only (``SSLObject``)."""
    tls = sock._tls
    assert tls is not None
    sslobj = tls.ssl_object
    read = sslobj.read
    buf = sock._buf
    while sslobj.pending():
        # Collect up to a terminator byte (or a full piece) here, then let the buffer apply the
        # line rules to it: one feed per line, not per byte.
        part = bytearray()
        limit = max_length + 1
        try:
            while len(part) < limit and sslobj.pending():
                byte = read(1)
                part += byte
                if byte == b"\n" or byte == b"\r":
                    break
        except ssl.SSLError:
            buf.feed(part)
            return None  # the awaited read reports it
        buf.feed(part)
        line = buf.take_line(max_length)
        if line is not None:
            return line
    return None


def unbuffered_lines_supported(sock: SocketState) -> bool:
    """Can ``recv_line`` on this socket take exactly one line from the kernel?"""
    return sock._tls is None and _POLLRDHUP is not None


def _full_window(sock: SocketState, max_length: int) -> int:
    # the rest of the longest piece, and a \r\n after it
    return max_length - len(sock._buf) + 2


def recv_line_unbuffered_nowait(
    sock: SocketState, flags: SocketFlag, max_length: int
) -> bytes | None:
    """The next line if the kernel already holds all of it, else ``None`` (nothing consumed)."""
    full = _full_window(sock, max_length)
    try:
        found = _line_step(sock, flags, max_length, min(full, _PEEK_START))
    except BlockingIOError:
        return None
    if isinstance(found, int):
        if found < min(full, _PEEK_START) or full <= _PEEK_START:
            return None
        found = _line_step(sock, flags, max_length, full)
        if isinstance(found, int):
            return None
    assert isinstance(found, bytes)
    return found


async def recv_line_unbuffered(sock: SocketState, flags: SocketFlag, max_length: int) -> bytes:
    """``recv_line`` of an unbuffered plain socket: takes exactly the line from the kernel.

    A partial line is left in the kernel while more is awaited, except when it grows past what
    the kernel's queue can hold (more than :data:`_HOLD_AFTER` bytes and no more arriving): its
    start is then moved to the buffer, or the wait would never end.
    """
    raw = sock._sock
    buf = sock._buf
    window = min(_full_window(sock, max_length), _PEEK_START)
    seen = 0
    delay = 0.0
    while True:
        try:
            found = _line_step(sock, flags, max_length, window)
        except BlockingIOError:
            await sock._waiter.readable()
            continue
        if isinstance(found, bytes):
            return found
        full = _full_window(sock, max_length)
        if found >= window and window < full:
            window = min(window * 2, full)
            continue
        if found > seen:
            seen, delay = found, 0.0
            await _wait_more(sock, raw, found + 1)
            continue
        if found >= _hold_after(raw):  # no more arrives: the kernel's queue is full
            buf.feed(raw.recv(found))
            seen = 0
            window = min(_full_window(sock, max_length), _PEEK_START)
            continue
        # The wait did not honour SO_RCVLOWAT (Unix sockets): back off.
        if sock._waiter.nowait:
            raise anyio.WouldBlock
        delay = min(delay * 2 or 0.001, 0.05)
        await anyio.sleep(delay)


def _hold_after(raw: socket.socket) -> int:
    try:
        return min(_HOLD_AFTER, raw.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 4)
    except OSError:
        return _HOLD_AFTER


async def _wait_more(sock: SocketState, raw: socket.socket, low: int) -> None:
    """Wait until the kernel holds at least ``low`` bytes (or the stream ends)."""
    try:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, low)
    except OSError:
        pass
    try:
        await sock._waiter.readable()
    finally:
        try:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)
        except OSError:
            pass


# -- closing ----------------------------------------------------------------------------------


def _socket_inode(fd: int) -> str:
    return f"socket:[{os.fstat(fd).st_ino}]"


def _holds(pid: str, target: str, skip_fd: int = -1) -> bool:
    """Does process ``pid`` have a descriptor (other than ``skip_fd``) on socket ``target``?"""
    folder = f"/proc/{pid}/fd"
    try:
        names = os.listdir(folder)
    except OSError:
        return False
    for name in names:
        if name == str(skip_fd):
            continue
        try:
            if os.readlink(f"{folder}/{name}") == target:
                return True
        except OSError:
            continue
    return False


def _descendants() -> list[str]:
    """The pids of this process's children, their children, ... (Linux ``/proc``)."""
    found: list[str] = []
    todo = [str(os.getpid())]
    while todo and len(found) < 4096:
        pid = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{pid}/task/{task}/children") as children:
                    kids = children.read().split()
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def _shared(fd: int) -> bool:
    """True if another descriptor refers to this socket: in this process or in a descendant
    (a child it was handed to). Linux only (``/proc``); elsewhere False."""
    try:
        target = _socket_inode(fd)
    except OSError:
        return False
    if _holds("self", target, skip_fd=fd):
        return True
    return any(_holds(pid, target) for pid in _descendants())


def _unread(raw: socket.socket) -> bool:
    """Does the kernel hold bytes not yet read from the stream socket ``raw``? Asked with
    ``FIONREAD`` where there is one (a ``MSG_PEEK`` read that finds nothing raises, which costs
    several times more: every accepted client that is closed asks)."""
    if _FIONREAD is not None:
        try:
            return fcntl.ioctl(raw.fileno(), _FIONREAD, _NO_BYTES) != _NO_BYTES
        except OSError:
            return False  # not connected (nothing to read), or closed
    try:
        return bool(raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))  # b"": the end
    except OSError:
        return False  # nothing unread (EAGAIN), not connected, or reset: no drain needed


def drain_unread(raw: socket.socket, shareable: bool) -> None:
    """Read and drop, without waiting, what the kernel holds unread for a stream socket about to
    be closed, so that the close sends a FIN and not a reset (see the module's docstring). The
    caller checks that ``raw`` is a stream socket.

    ``shareable``: the socket is unbuffered, so other holders of it are looked for first (a
    buffered socket reads ahead: its stream cannot be shared, and the search costs a look at
    every descriptor of the process).
    """
    if not _unread(raw):
        return
    if shareable and sys.platform.startswith("linux") and _shared(raw.fileno()):
        return  # not the last close: no reset, and the bytes are the other holder's
    drained = 0
    while drained < _DRAIN_LIMIT:
        try:
            data = raw.recv(1 << 16, socket.MSG_DONTWAIT)
        except OSError:
            return
        if not data:
            return
        drained += len(data)


# -- anyio's typed attributes -----------------------------------------------------------------


def _convert(addr: Any) -> Any:
    # As anyio gives them: IPv6 as (host, port), a scope id appended to the host as "%id".
    if isinstance(addr, tuple) and len(addr) == 4:
        host, port, _flowinfo, scope_id = addr
        return (f"{host}%{scope_id}" if scope_id else host), port
    return addr


def extra_attributes(sock: SocketState) -> dict[Any, Callable[[], Any]]:
    """``SocketAttribute`` values of the socket (and ``TLSAttribute`` ones once TLS is on)."""
    raw = sock._sock
    attributes: dict[Any, Callable[[], Any]] = {}
    tls = sock._tls
    if tls is not None:
        attributes.update(tls.extra_attributes)
    attributes[SocketAttribute.family] = lambda: raw.family
    attributes[SocketAttribute.local_address] = lambda: _convert(raw.getsockname())
    attributes[SocketAttribute.raw_socket] = lambda: raw
    try:
        peer = _convert(raw.getpeername())
    except OSError:
        peer = None
    if peer is not None:
        attributes[SocketAttribute.remote_address] = lambda: peer
    if raw.family in (socket.AF_INET, socket.AF_INET6):
        attributes[SocketAttribute.local_port] = lambda: raw.getsockname()[1]
        if peer is not None:
            port = peer[1]
            attributes[SocketAttribute.remote_port] = lambda: port
    return attributes
