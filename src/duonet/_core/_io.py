"""The lowest layer of the core: non-blocking syscalls on a raw socket, and waits for readiness.

Why not anyio's ``SocketStream``: measured on asyncio, its stream reaches ~0.14x the stdlib's bulk
receive speed, and streams made by ``from_socket()``/``accept()`` read eagerly into an unbounded
queue (a flooding peer grows memory without limit, as measured with anyio 4.x). Trying the
syscall first and only then waiting for readiness (:class:`Waiter`) keeps pace with the stdlib,
reads only when the user asks (the kernel's buffer is the backpressure), behaves the same on
asyncio and trio, and consumes nothing when cancelled: a syscall either returned data (which the
caller buffers before its next ``await``) or it did not run.

TLS runs over the same syscalls and waits: see :mod:`duonet._core._tlschannel`.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import sys
import threading
import time
from asyncio.selector_events import BaseSelectorEventLoop
from typing import Any

import anyio

__all__ = ("Waiter", "connect_raw", "renew_socket", "send_all")


#: How long :meth:`Waiter.close`, called from another thread, waits for the loop to drop the
#: registration (a live loop takes microseconds; one that never answers must not hang close()).
_CLOSE_WAIT = 5.0


class Waiter:
    """Waits for a socket to become readable or writable, honouring a "do not wait" mode.

    ``nowait`` is set by the core for calls with ``timeout=0``: such a call may use whatever is
    already buffered or sitting in the kernel, but must not wait. A wait then raises
    :class:`anyio.WouldBlock` (not an ``OSError``, which the callers take for a failure of the
    connection); the call's ``Deadline`` turns it into ``TimeoutError``.

    How it waits:

    * **asyncio** (the stdlib's loops, uvloop): the socket's reader stays registered with
      ``loop.add_reader`` from one wait to the next, and each wait awaits a plain future that
      the reader's callback completes. (``anyio.wait_readable`` registers and removes the fd,
      two ``epoll_ctl`` and a selector key, around every wait: every line of a request/response
      protocol.) The registration goes when the callback finds nobody waiting (the fd must not
      keep the loop spinning), when a wait is cancelled or fails, and in :meth:`close`, which
      must come before the socket is closed: the fd's number may be reused at once. Waits for
      writability are rare (a full send buffer, a connect) and register for one wait each.
    * **trio**, and loops without ``add_reader`` (Windows' proactor): ``anyio.wait_readable``
      and ``anyio.wait_writable``; trio re-arms its own registration at each wait, and anyio's
      dispatch costs little there (measured: ~0.2 us of ~8 us per wait). The first wait
      decides, for the socket's life.

    One task per direction at a time: a second one gets :class:`anyio.BusyResourceError`, as
    with anyio. :meth:`close` wakes a waiting task with :class:`anyio.ClosedResourceError`; the
    waits through anyio are woken by ``anyio.notify_closing``. Nothing else may wait on the fd
    through the same asyncio loop meanwhile (``add_reader`` replaces a reader): the same rule
    as for an fd that an asyncio transport owns.
    """

    __slots__ = ("_by_anyio", "_loop", "_owner", "_rfut", "_stale", "_wfut", "nowait", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.nowait = False
        self._by_anyio = False  # not an asyncio task (trio), or a loop without add_reader
        self._loop: asyncio.AbstractEventLoop | None = None  # where the reader is registered
        self._owner = 0  # the process that registered it (a fork's child must not use it)
        self._rfut: asyncio.Future[bool] | None = None  # the read that waits
        self._wfut: asyncio.Future[bool] | None = None  # the write that waits
        #: A selector loop's next poll reports once more the readiness that just woke the
        #: reader, before the woken task could read: the reader's callback ignores it.
        self._stale = False

    async def readable(self) -> None:
        """Wait until the socket is readable (closed: :class:`anyio.ClosedResourceError`)."""
        if self.nowait:
            raise anyio.WouldBlock
        loop = None if self._by_anyio else _asyncio_loop()
        if loop is None or (self._loop is not loop and not self._register(loop)):
            self._by_anyio = True
            await anyio.wait_readable(self.sock)
            return
        if self._rfut is not None:
            raise anyio.BusyResourceError("reading from")
        fut: asyncio.Future[bool] = loop.create_future()
        self._rfut = fut
        try:
            ready = await fut
        except BaseException:
            # Cancelled (or the loop is shutting down): leave nothing registered behind.
            if self._rfut is fut:
                self._rfut = None
            self._unregister()
            raise
        if not ready:
            raise anyio.ClosedResourceError

    async def writable(self) -> None:
        """Wait until the socket is writable (closed: :class:`anyio.ClosedResourceError`)."""
        if self.nowait:
            raise anyio.WouldBlock
        loop = None if self._by_anyio else _asyncio_loop()
        if loop is None:
            self._by_anyio = True
            await anyio.wait_writable(self.sock)
            return
        if self._wfut is not None:
            raise anyio.BusyResourceError("writing to")
        fd = self.sock.fileno()
        if fd < 0:
            raise anyio.ClosedResourceError
        fut: asyncio.Future[bool] = loop.create_future()
        try:
            loop.add_writer(fd, self._on_writable, fut)
        except NotImplementedError:  # a proactor loop (Windows)
            self._by_anyio = True
            await anyio.wait_writable(self.sock)
            return
        self._wfut = fut
        self._owner = os.getpid()
        try:
            ready = await fut
        finally:
            if self._wfut is fut:  # cancelled: drop the registration
                self._wfut = None
                loop.remove_writer(fd)
        if not ready:
            raise anyio.ClosedResourceError

    def close(self) -> None:
        """Wake the waiting tasks (:class:`anyio.ClosedResourceError`) and drop every
        registration. Call it before the socket is closed (or its fd replaced). Idempotent.

        From a thread other than the loop's, the loop is asked to do it and this call waits
        for that (a blocking ``close()`` after a read that waited through the portal): the fd
        must leave the loop's selector before its number can be given to another socket.
        """
        wfut = self._wfut
        loop = self._loop or (wfut.get_loop() if wfut is not None else None)
        if loop is None:
            return
        if loop.is_closed() or self._owner != os.getpid():
            self._loop = self._rfut = self._wfut = None  # nothing left to watch it
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop or not loop.is_running():
            self._wake_all()
            return
        done = threading.Event()

        def in_loop() -> None:
            self._wake_all()
            done.set()

        try:
            loop.call_soon_threadsafe(in_loop)
        except RuntimeError:  # closed meanwhile
            self._loop = self._rfut = self._wfut = None
            return
        give_up = time.monotonic() + _CLOSE_WAIT
        while not done.wait(0.05):
            if not loop.is_running():  # stopped: no other thread uses it now
                self._wake_all()
                return
            if time.monotonic() > give_up:  # a wedged loop (or one frozen at exit)
                self._loop = self._rfut = self._wfut = None
                return

    # -- asyncio ----------------------------------------------------------------------------

    def _register(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Register the reader on ``loop``; False if the loop cannot (proactor: Windows)."""
        fd = self.sock.fileno()
        if fd < 0:
            raise anyio.ClosedResourceError
        if self._rfut is not None:
            raise anyio.BusyResourceError("reading from")
        self._unregister()  # another loop's (one that has ended, normally)
        try:
            # A key that the selector still holds for this fd number (a socket closed while
            # watched, by other code) would make add_reader update the key without telling the
            # kernel: drop it, so that the fd is registered afresh.
            loop.remove_reader(fd)
            loop.add_reader(fd, self._on_readable)
        except NotImplementedError:
            return False
        self._loop = loop
        self._owner = os.getpid()
        self._stale = False
        return True

    def _unregister(self) -> None:
        loop = self._loop
        if loop is not None:
            self._loop = None
            fd = self.sock.fileno()
            if fd >= 0 and not loop.is_closed():
                loop.remove_reader(fd)

    def _on_readable(self) -> None:
        fut = self._rfut
        if self._stale:
            self._stale = False
            if fut is not None:  # (new data would be reported again: level-triggered)
                return
        if fut is None:  # nobody waits, nor read since the last wake-up: stop watching
            self._unregister()
            return
        if fut.done():  # cancelled: the task unregisters when it resumes
            return
        self._rfut = None
        fut.set_result(True)
        loop = self._loop
        if isinstance(loop, BaseSelectorEventLoop):
            self._stale = True  # and the stale report finds out whether anyone waits again
        elif loop is not None:
            loop.call_soon(self._settle)  # after the woken task's step (uvloop: no stale report)

    def _settle(self) -> None:
        if self._rfut is None:  # the woken task did not wait again
            self._unregister()

    def _on_writable(self, fut: asyncio.Future[bool]) -> None:
        if self._wfut is fut:
            self._wfut = None
            fd = self.sock.fileno()
            if fd >= 0:
                fut.get_loop().remove_writer(fd)
            if not fut.done():  # (cancelled, and its task not yet resumed: it cleans up)
                fut.set_result(True)

    def _wake_all(self) -> None:
        """Wake both directions with "closed" and unregister, in the loop's thread."""
        rfut, wfut = self._rfut, self._wfut
        self._rfut = self._wfut = None
        if wfut is not None:
            fd = self.sock.fileno()
            if fd >= 0:
                wfut.get_loop().remove_writer(fd)
            if not wfut.done():
                wfut.set_result(False)
        if rfut is not None and not rfut.done():
            rfut.set_result(False)
        self._unregister()


def _asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The running asyncio loop, if this is an asyncio task (not trio, even as a guest)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return loop if asyncio.current_task(loop) is not None else None


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


def renew_socket(sock: socket.socket, bound: Any = None, waiter: Waiter | None = None) -> None:
    """Give ``sock``'s file descriptor a fresh socket, after a failed ``connect``.

    A socket whose connect failed cannot try again (Linux answers the next ``connect`` with
    ``ECONNABORTED``, BSDs with ``EINVAL``), so the next address gets a new socket of the same
    kind, with the old one's options, re-bound to ``bound`` (the address ``bind`` was given, if
    any). ``dup2`` puts it under the same descriptor number, so a ``fileno()`` the caller already
    holds stays valid, and so does its inheritable flag. No event loop may still watch the old
    socket: ``waiter`` (the socket's) is closed and ``anyio.notify_closing`` called first.
    """
    fresh = socket.socket(sock.family, sock.type, sock.proto)
    try:
        _copy_options(sock, fresh)
        if waiter is not None:
            waiter.close()
        anyio.notify_closing(sock)
        os.dup2(fresh.fileno(), sock.fileno(), inheritable=sock.get_inheritable())
    finally:
        fresh.close()
    sock.setblocking(False)
    if bound is not None:
        sock.bind(bound)
