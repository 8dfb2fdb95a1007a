"""The lowest layer of the core: non-blocking syscalls on a raw socket, waits through anyio.

Why not anyio's ``SocketStream``: measured on asyncio, its stream reaches ~0.14x the stdlib's bulk
receive speed, and streams made by ``from_socket()``/``accept()`` read eagerly into an unbounded
queue (a flooding peer grows memory without limit, as measured with anyio 4.x). Trying the
syscall first and only then ``await anyio.wait_readable(sock)`` keeps pace with the stdlib, reads
only when the user asks (the kernel's buffer is the backpressure), behaves the same on asyncio and
trio, and consumes nothing when cancelled: a syscall either returned data (which the caller buffers
before its next ``await``) or it did not run.

TLS runs over the same syscalls and waits: see :mod:`duonet._core._tlschannel`.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
from typing import Any

import anyio

__all__ = ("Waiter", "connect_raw", "renew_socket", "send_all")


class Waiter:
    """Waits for a socket to become readable or writable, honouring a "do not wait" mode.

    ``nowait`` is set by the core for calls with ``timeout=0``: such a call may use whatever is
    already buffered or sitting in the kernel, but must not wait. A wait then raises
    :class:`anyio.WouldBlock` (not an ``OSError``, which the callers take for a failure of the
    connection); the call's ``Deadline`` turns it into ``TimeoutError``.
    """

    __slots__ = ("nowait", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.nowait = False

    async def readable(self) -> None:
        if self.nowait:
            raise anyio.WouldBlock
        await anyio.wait_readable(self.sock)

    async def writable(self) -> None:
        if self.nowait:
            raise anyio.WouldBlock
        await anyio.wait_writable(self.sock)


async def send_all(sock: socket.socket, waiter: Waiter, view: memoryview) -> None:
    """Send every byte of ``view``, resuming after partial writes; OS errors propagate."""
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    while view:
        try:
            sent = sock.send(view)
        except (BlockingIOError, InterruptedError):
            await waiter.writable()
            continue
        view = view[sent:]


#: What ``SO_ERROR`` holds when the peer reset a connection it had accepted. A peer that refuses
#: gives ECONNREFUSED, one that is unreachable EHOSTUNREACH/ENETUNREACH/ETIMEDOUT.
_RESET_AFTER_HANDSHAKE = frozenset({errno.ECONNRESET, errno.EPIPE})


async def connect_raw(sock: socket.socket, sockaddr: Any, waiter: Waiter) -> int:
    """Non-blocking ``connect`` of ``sock`` to ``sockaddr``; raises the ``OSError`` on failure.

    Success means the TCP handshake completed: a reset sent right after that shows up in the next
    read or write, not here. Returns 0, or the errno of such a reset when it came before the
    socket was seen writable (reading ``SO_ERROR`` took it from the kernel, which then reports
    the end of the stream: the caller must report it in the next read).
    """
    while True:
        err = sock.connect_ex(sockaddr)
        if err in (0, errno.EISCONN):
            _refuse_self_connect(sock)
            return 0
        if err in (errno.EINPROGRESS, errno.EALREADY, errno.EWOULDBLOCK):
            if err == errno.EWOULDBLOCK and sock.family == getattr(socket, "AF_UNIX", None):
                # A Unix listener with a full backlog: connect(2) must simply be retried.
                if waiter.nowait:
                    raise anyio.WouldBlock
                await anyio.sleep(0.005)
                continue
            await waiter.writable()
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err == 0 or (err in _RESET_AFTER_HANDSHAKE and sock.type == socket.SOCK_STREAM):
                if err == 0:
                    _refuse_self_connect(sock)
                return err
        if err == errno.EINTR:
            continue
        raise OSError(err, errno_text(err))


def _refuse_self_connect(sock: socket.socket) -> None:
    """A TCP connect that reached the connecting socket itself is a refusal, not a connection.

    Connecting to a local port where nothing listens can succeed on Linux when the kernel picks
    that very port as the socket's own (TCP simultaneous open): the "peer" is the socket, and the
    first read would return what it sent. Go's ``net.Dial`` treats this the same way.
    """
    if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    try:
        local, peer = sock.getsockname(), sock.getpeername()
    except OSError:
        return
    if local[:2] == peer[:2]:
        raise ConnectionRefusedError(
            errno.ECONNREFUSED,
            "Connection refused (nothing listens there: the connect reached the connecting "
            "socket itself)",
        )


def errno_text(code: int) -> str:
    return os.strerror(code)


#: Options a fresh socket gets from the one it replaces (those that exist on this platform).
_COPIED_OPTIONS = tuple(
    (getattr(socket, level), getattr(socket, name))
    for level, name in (
        ("SOL_SOCKET", "SO_REUSEADDR"),
        ("SOL_SOCKET", "SO_REUSEPORT"),
        ("SOL_SOCKET", "SO_KEEPALIVE"),
        ("SOL_SOCKET", "SO_BROADCAST"),
        ("SOL_SOCKET", "SO_OOBINLINE"),
        ("SOL_SOCKET", "SO_DONTROUTE"),
        ("SOL_SOCKET", "SO_RCVBUF"),
        ("SOL_SOCKET", "SO_SNDBUF"),
        ("SOL_SOCKET", "SO_PRIORITY"),
        ("SOL_SOCKET", "SO_MARK"),
        ("IPPROTO_TCP", "TCP_NODELAY"),
        ("IPPROTO_TCP", "TCP_KEEPIDLE"),
        ("IPPROTO_TCP", "TCP_KEEPINTVL"),
        ("IPPROTO_TCP", "TCP_KEEPCNT"),
        ("IPPROTO_TCP", "TCP_USER_TIMEOUT"),
        ("IPPROTO_IP", "IP_TOS"),
        ("IPPROTO_IP", "IP_TTL"),
        ("IPPROTO_IPV6", "IPV6_V6ONLY"),
    )
    if hasattr(socket, level) and hasattr(socket, name)
)
#: Linux doubles a buffer size when it is set, and reports the doubled value.
_DOUBLED = {getattr(socket, "SO_RCVBUF", -1), getattr(socket, "SO_SNDBUF", -1)}
_LINGER_SIZE = 8  # struct linger: two ints


def _copy_options(old: socket.socket, new: socket.socket) -> None:
    for level, name in _COPIED_OPTIONS:
        if level != socket.SOL_SOCKET and (
            (level == socket.IPPROTO_TCP and old.type != socket.SOCK_STREAM)
            or (level == socket.IPPROTO_IP and old.family != socket.AF_INET)
            or (level == getattr(socket, "IPPROTO_IPV6", -1) and old.family != socket.AF_INET6)
        ):
            continue
        try:
            value = old.getsockopt(level, name)
            if value != new.getsockopt(level, name):
                halve = name in _DOUBLED and sys.platform.startswith("linux")
                new.setsockopt(level, name, value // 2 if halve else value)
        except OSError:
            pass  # not supported for this socket: nothing to carry over
    try:
        linger = old.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_SIZE)
        if linger != new.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_SIZE):
            new.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    except OSError:
        pass


def renew_socket(sock: socket.socket, bound: Any = None) -> None:
    """Give ``sock``'s file descriptor a fresh socket, after a failed ``connect``.

    A socket whose connect failed cannot try again (Linux answers the next ``connect`` with
    ``ECONNABORTED``, BSDs with ``EINVAL``), so the next address gets a new socket of the same
    kind, with the old one's options, re-bound to ``bound`` (the address ``bind`` was given, if
    any). ``dup2`` puts it under the same descriptor number, so a ``fileno()`` the caller already
    holds stays valid, and so does its inheritable flag. No event loop may still watch the old
    socket: ``anyio.notify_closing`` is called first.
    """
    fresh = socket.socket(sock.family, sock.type, sock.proto)
    try:
        _copy_options(sock, fresh)
        anyio.notify_closing(sock)
        os.dup2(fresh.fileno(), sock.fileno(), inheritable=sock.get_inheritable())
    finally:
        fresh.close()
    sock.setblocking(False)
    if bound is not None:
        sock.bind(bound)
