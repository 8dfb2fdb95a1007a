"""The blocking ``Socket``: one mechanical line per method over ``AsyncSocket``.

Every method calls the core method of the same name through the portal (``_portal.call``), with
the same arguments. Reads and writes first try the core's fast path of the same name
(``duonet._core._fastpath``, whose docstring states the thread rule) in the calling thread: when
the buffer, or for a plain socket the kernel, already holds the answer, no thread hop is needed.
Line and exact reads start with the fast path's "answer from the buffer" step
(``_fastpath.line_from_buffer`` / ``bytes_from_buffer``), which needs no I/O and so comes even
before the event-loop check. The fast path is core code; this module holds no I/O logic and no
buffer logic.

Each direction has a guard taken without waiting (a one-element list: ``pop()`` takes the token,
``append()`` gives it back; both atomic, and cheaper than a lock on the per-line hot path): a
second thread reading (or writing) the same socket at once gets :class:`~duonet.BusyError`, never
interleaved bytes. While a thread holds the read token, no awaited read of that socket is in
flight, which is what makes the fast path safe. ``close()`` takes both tokens when it can and then
closes in the calling thread; otherwise a call is in flight and the close goes through the
portal, which wakes that call.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Iterator
from types import TracebackType
from typing import Any, TypeVar

from . import _portal
from ._args import DataLike as _DataLike
from ._args import check_flags, check_max_length, check_timeout
from ._core import _fastpath
from ._core._socket import AsyncSocket
from ._core._socket import dial as _aio_dial
from ._core._tls import wrap_connected_socket as _aio_wrap_connected_socket
from ._enums import MAX_LINE_LENGTH, ReadLineResult, SOBool, SocketFlag
from ._errors import BusyError, SocketClosedError
from ._ip import IpAddress
from ._portal import IN_LOOP_MESSAGE, in_event_loop
from ._sslcontext import SslContext, SslHandshakeType

__all__ = ("Socket", "dial", "new_socket", "wrap_connected_socket")

SAFE_DISCONN = SocketFlag.SAFE_DISCONN
_MAX_LINE = MAX_LINE_LENGTH  # the default's own object: `is` tells the default apart cheaply
T = TypeVar("T")
_line_from_buffer = _fastpath.line_from_buffer
_bytes_from_buffer = _fastpath.bytes_from_buffer


class Socket:
    """A blocking socket with Nim's ``std/net`` API.

    Create it with :func:`new_socket` (or this constructor, same parameters), :func:`dial`,
    :meth:`accept`, or :meth:`from_socket`. ``with`` closes it. Safe to use from many threads at
    once as long as no two threads read (or write) the same socket at the same time.
    """

    __slots__ = ("__weakref__", "_aio", "_buf", "_call", "_calls", "_closing", "_rtoken", "_wtoken")

    def __init__(
        self,
        domain: int = socket.AF_INET,
        sock_type: int = socket.SOCK_STREAM,
        protocol: int = socket.IPPROTO_TCP,
        buffered: bool = True,
        inheritable: bool = False,
    ) -> None:
        self._setup(AsyncSocket(domain, sock_type, protocol, buffered, inheritable))

    def _setup(self, core: AsyncSocket) -> None:
        self._aio = core
        self._buf = core._buf  # the core's buffer lives as long as the core
        self._rtoken: list[None] = [None]
        self._wtoken: list[None] = [None]
        self._closing = False  # close() has begun: a token it holds means "closed", not "busy"
        # Every portal call of this socket goes through its count (the fast path's thread rule).
        self._calls = core._portal_calls = _fastpath.PortalCalls()
        self._call = self._calls.call

    @classmethod
    def _wrap(cls, core: AsyncSocket) -> Socket:
        self = cls.__new__(cls)
        self._setup(core)
        return self

    @classmethod
    def from_socket(cls, sock: socket.socket, buffered: bool = True) -> Socket:
        """Adopt a stdlib socket (Nim's ``newSocket(fd)``); duonet owns it from now on."""
        return cls._wrap(AsyncSocket.from_socket(sock, buffered))

    @property
    def aio(self) -> AsyncSocket:
        """The :class:`~duonet.aio.AsyncSocket` this socket drives (for use in the portal only)."""
        return self._aio

    # -- the two mechanical patterns ----------------------------------------------------------

    def _busy(self, direction: str) -> OSError | BusyError:
        if self._closing:  # the token is held by close(), not by another reader or writer
            return SocketClosedError(f"socket {self._aio._describe()}")
        return BusyError(f"another thread is already {direction} socket {self._aio._describe()}")

    def _read(
        self,
        nowait: Callable[..., T | None],
        wait: Callable[..., Awaitable[T]],
        *args: Any,
        undo: Callable[[T], None] | None = None,
    ) -> T:
        if in_event_loop():
            raise RuntimeError(IN_LOOP_MESSAGE)
        token = self._rtoken
        try:
            token.pop()
        except IndexError:
            raise self._busy("reading") from None
        try:
            result = nowait(self._aio, *args)
            if result is None:
                result = self._call(wait, *args, undo=undo)
            return result
        finally:
            token.append(None)

    def _write(self, wait: Callable[..., Awaitable[T]], *args: Any) -> T:
        token = self._wtoken
        try:
            token.pop()
        except IndexError:
            raise self._busy("writing") from None
        try:
            return self._call(wait, *args)
        finally:
            token.append(None)

    # -- reading ------------------------------------------------------------------------------

    def recv(
        self, size: int, timeout: float | None = None, flags: SocketFlag = SAFE_DISCONN
    ) -> bytes:
        """Blocking :meth:`duonet.aio.AsyncSocket.recv` (same semantics and errors)."""
        # The body read of line-then-bytes protocols, so _read() is inlined: the fast path's
        # first step answers from the buffer, with no I/O (so no loop check).
        token = self._rtoken
        try:
            token.pop()
        except IndexError:
            raise self._busy("reading") from None
        try:
            if type(size) is not int or timeout is not None or flags is not SAFE_DISCONN:
                # checked before the buffer is touched: a refused call takes nothing
                size = self._aio._check_io(size, timeout, flags, "recv")
            data = _bytes_from_buffer(self._buf, size)
            if data is not None:
                return data
            if in_event_loop():
                raise RuntimeError(IN_LOOP_MESSAGE)
            data = _fastpath.recv(self._aio, size, timeout, flags)
            if data is None:
                data = self._call(self._aio.recv, size, timeout, flags, undo=self._buf.unread)
            return data
        finally:
            token.append(None)

    def recv_into(
        self,
        buffer: bytearray | memoryview,
        size: int | None = None,
        timeout: float | None = None,
        flags: SocketFlag = SAFE_DISCONN,
    ) -> int:
        """Blocking :meth:`duonet.aio.AsyncSocket.recv_into`."""
        if in_event_loop():
            raise RuntimeError(IN_LOOP_MESSAGE)
        token = self._rtoken
        try:
            token.pop()
        except IndexError:
            raise self._busy("reading") from None
        try:
            aio = self._aio
            started = _fastpath.begin_recv_into(aio, buffer, size, timeout, flags)
            if isinstance(started, int):
                return started
            if started is None:
                return self._call(
                    aio.recv_into, buffer, size, timeout, flags, undo=_undo_into(aio, buffer)
                )
            # Part of the answer is already in the caller's buffer: the loop reads the rest there.
            view, got = started
            claim = [None]  # who gives the first bytes back on failure (see finish_recv_into)
            try:
                return self._call(
                    _fastpath.finish_recv_into,
                    aio,
                    view,
                    got,
                    timeout,
                    flags,
                    claim,
                    undo=_undo_into(aio, view),
                )
            except BaseException:
                try:
                    claim.pop()
                except IndexError:
                    pass  # the job ran: it gave them back
                else:
                    aio._buf.unread(bytes(view[:got]))  # the job never ran (a Ctrl-C first)
                raise
        finally:
            token.append(None)

    def recv_line(
        self,
        timeout: float | None = None,
        flags: SocketFlag = SAFE_DISCONN,
        max_length: int = MAX_LINE_LENGTH,
    ) -> bytes:
        """Blocking :meth:`duonet.aio.AsyncSocket.recv_line` (same semantics and errors)."""
        # The hot path of line protocols, so _read() is inlined: the fast path's first step
        # answers from the buffer, with no I/O (so no loop check).
        token = self._rtoken
        try:
            token.pop()
        except IndexError:
            raise self._busy("reading") from None
        try:
            if timeout is not None or flags is not SAFE_DISCONN or max_length is not _MAX_LINE:
                # checked before the buffer is touched: a refused call takes nothing
                max_length = self._aio._check_line(timeout, flags, max_length, "recv_line")
            found = _line_from_buffer(self._buf, max_length)
            if found is not None:
                return found
            if in_event_loop():
                raise RuntimeError(IN_LOOP_MESSAGE)
            found = _fastpath.recv_line(self._aio, timeout, flags, max_length)
            if found is None:
                found = self._call(
                    self._aio.recv_line, timeout, flags, max_length, undo=self._buf.unread_line
                )
            return found
        finally:
            token.append(None)

    def read_line(
        self,
        timeout: float | None = None,
        flags: SocketFlag = SAFE_DISCONN,
        max_length: int = MAX_LINE_LENGTH,
    ) -> bytes:
        """The same as :meth:`recv_line` (Nim's ``readLine``)."""
        return self.recv_line(timeout, flags, max_length)

    def read_line_nowait(self) -> tuple[ReadLineResult, bytes]:
        """Blocking face of :meth:`duonet.aio.AsyncSocket.read_line_nowait` (never blocks)."""
        token = self._rtoken
        try:
            token.pop()
        except IndexError:
            raise self._busy("reading") from None
        try:
            if self._aio._tls is not None:  # TLS: this call uses the channel in the loop
                return self._call(self._aio._read_line_nowait_in_loop)
            return self._aio.read_line_nowait()
        finally:
            token.append(None)

    def lines(
        self,
        timeout: float | None = None,
        flags: SocketFlag = SAFE_DISCONN,
        max_length: int = MAX_LINE_LENGTH,
    ) -> Iterator[bytes]:
        """An iterator over the lines that successive :meth:`recv_line` calls with these
        arguments return, ending (without yielding it) at ``b""``; ``for line in sock`` is
        ``for line in sock.lines()``. Same rules as :meth:`duonet.aio.AsyncSocket.lines`: each
        step is one ``recv_line``, so the iterator owns no byte and leaving the loop loses
        nothing."""
        check_timeout(timeout)
        check_flags(flags, "lines")
        return self._lines(timeout, flags, check_max_length(max_length))

    def __iter__(self) -> Iterator[bytes]:
        return self._lines(None, SAFE_DISCONN, MAX_LINE_LENGTH)

    def _lines(self, timeout: float | None, flags: SocketFlag, max_length: int) -> Iterator[bytes]:
        # recv_line, with its first step (answer from the buffer) inlined: the arguments are
        # checked once, so iterating is faster than a recv_line loop.
        buf = self._buf
        token = self._rtoken
        recv_line = self.recv_line
        from_buffer = _line_from_buffer
        while True:
            try:
                token.pop()
            except IndexError:
                raise self._busy("reading") from None
            try:
                line = from_buffer(buf, max_length)
            finally:
                token.append(None)
            if line is None:
                line = recv_line(timeout, flags, max_length)
                if not line:
                    return
            yield line

    def skip(self, size: int, timeout: float | None = None) -> int:
        """Blocking :meth:`duonet.aio.AsyncSocket.skip`."""
        return self._read(_fastpath.skip, self._aio.skip, size, timeout)

    def has_data_buffered(self) -> bool:
        """True if bytes are waiting in duonet's own buffer (never blocks)."""
        return self._aio.has_data_buffered()

    def recv_from(self, length: int, timeout: float | None = None) -> tuple[bytes, str, int]:
        """Blocking :meth:`duonet.aio.AsyncSocket.recv_from`."""
        return self._read(_fastpath.recv_from, self._aio.recv_from, length, timeout)

    # -- writing ------------------------------------------------------------------------------

    def send(
        self, data: _DataLike, flags: SocketFlag = SAFE_DISCONN, timeout: float | None = None
    ) -> None:
        """Blocking :meth:`duonet.aio.AsyncSocket.send` (same semantics and errors)."""
        if in_event_loop():
            raise RuntimeError(IN_LOOP_MESSAGE)
        token = self._wtoken
        try:
            token.pop()
        except IndexError:
            raise self._busy("writing") from None
        try:
            rest = _fastpath.send(self._aio, data, flags, timeout)
            if rest is not None:
                self._call(self._aio.send, rest, flags, timeout)
        finally:
            token.append(None)

    def send_eof(self) -> None:
        """Blocking :meth:`duonet.aio.AsyncSocket.send_eof`: half-close (``SHUT_WR``; on TLS
        close_notify first); reading goes on. Idempotent."""
        self._write(self._aio.send_eof)

    def send_file(
        self,
        file: Any,
        offset: int = 0,
        count: int | None = None,
        timeout: float | None = None,
    ) -> int:
        """Blocking :meth:`duonet.aio.AsyncSocket.send_file`: ``count`` bytes of ``file`` (a
        binary file object or a path) from ``offset``, zero-copy on plain sockets; returns how
        many were sent and leaves a file object's position just past them."""
        return self._write(self._aio.send_file, file, offset, count, timeout)

    def try_send(self, data: _DataLike) -> bool:
        """Blocking :meth:`duonet.aio.AsyncSocket.try_send` (``False`` also when busy)."""
        if in_event_loop():
            raise RuntimeError(IN_LOOP_MESSAGE)
        token = self._wtoken
        if not token:
            return False
        try:
            return self._write(self._aio.try_send, data)
        except BusyError:
            return False

    def send_to(self, address: str | IpAddress, port: int, data: _DataLike, flags: int = 0) -> int:
        """Blocking :meth:`duonet.aio.AsyncSocket.send_to`."""
        return self._write(self._aio.send_to, address, port, data, flags)

    # -- connecting ---------------------------------------------------------------------------

    def connect(
        self, address: str | IpAddress, port: int = 0, timeout: float | None = None
    ) -> None:
        """Blocking :meth:`duonet.aio.AsyncSocket.connect`."""
        self._write(self._aio.connect, address, port, timeout)

    def connect_unix(self, path: str | bytes) -> None:
        """Blocking :meth:`duonet.aio.AsyncSocket.connect_unix`."""
        self._write(self._aio.connect_unix, path)

    def bind_unix(self, path: str | bytes) -> None:
        """Bind this ``AF_UNIX`` socket to ``path``."""
        self._aio.bind_unix(path)

    def bind_addr(self, port: int = 0, address: str | IpAddress = "") -> None:
        """Bind to ``address`` and ``port``; ``""`` is every address of the socket's family."""
        self._aio.bind_addr(port, address)

    def listen(self, backlog: int = socket.SOMAXCONN) -> None:
        """Start listening for connections."""
        self._aio.listen(backlog)

    def accept(
        self,
        flags: SocketFlag = SAFE_DISCONN,
        inheritable: bool = False,
        timeout: float | None = None,
    ) -> Socket:
        """Blocking :meth:`duonet.aio.AsyncSocket.accept`: the new client socket."""
        return Socket._wrap(
            self._read(_fastpath.accept, self._aio.accept, flags, inheritable, timeout)
        )

    def accept_addr(
        self,
        flags: SocketFlag = SAFE_DISCONN,
        inheritable: bool = False,
        timeout: float | None = None,
    ) -> tuple[Socket, str]:
        """Blocking :meth:`duonet.aio.AsyncSocket.accept_addr`: the client and its address."""
        client, address = self._read(
            _fastpath.accept_addr, self._aio.accept_addr, flags, inheritable, timeout
        )
        return Socket._wrap(client), address

    # -- options, addresses, TLS queries: plain calls, no I/O ----------------------------------

    def get_sock_opt(self, opt: SOBool, level: int = socket.SOL_SOCKET) -> bool:
        """Read a boolean option (``level`` defaults to the option's own)."""
        return self._aio.get_sock_opt(opt, level)

    def set_sock_opt(self, opt: SOBool, value: bool, level: int = socket.SOL_SOCKET) -> None:
        """Set a boolean option; works before and after ``connect``/``listen``."""
        self._aio.set_sock_opt(opt, value, level)

    def get_local_addr(self) -> tuple[str, int]:
        """The local address and port."""
        return self._aio.get_local_addr()

    def get_peer_addr(self) -> tuple[str, int]:
        """The peer's address and port."""
        return self._aio.get_peer_addr()

    def get_fd(self) -> int:
        """The file descriptor (-1 once closed)."""
        return self._aio.get_fd()

    def fileno(self) -> int:
        """The file descriptor (-1 once closed)."""
        return self._aio.fileno()

    def get_socket_error(self) -> int:
        """The pending error of the socket (``SO_ERROR``), 0 if none."""
        return self._aio.get_socket_error()

    def is_ssl(self) -> bool:
        """True if the socket was wrapped with TLS."""
        return self._aio.is_ssl()

    def got_handshake(self) -> bool:
        """True once the TLS handshake completed; ``SslError`` on a plain socket."""
        return self._aio.got_handshake()

    def get_peer_certificates(self) -> list[bytes]:
        """The peer's certificates (DER), leaf first."""
        return self._aio.get_peer_certificates()

    def get_psk_identity(self) -> str:
        """The PSK identity the client sent (server side)."""
        return self._aio.get_psk_identity()

    # -- closing ------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the socket; idempotent. A call blocked on it in another thread returns promptly
        with :class:`~duonet.SocketClosedError`. On TLS, sends close_notify (not waiting)."""
        self._closing = True
        rtoken, wtoken = self._rtoken, self._wtoken
        try:
            rtoken.pop()
        except IndexError:
            return self._close_in_portal()  # a read is in flight: wake it
        try:
            wtoken.pop()
        except IndexError:
            rtoken.append(None)
            return self._close_in_portal()  # a write is in flight: wake it
        try:
            self._aio._close_now()  # nothing in flight: no loop involved
        finally:
            wtoken.append(None)
            rtoken.append(None)

    def _close_in_portal(self) -> None:
        if in_event_loop():
            self._aio._close_now()
        else:
            self._call(self._aio.close)

    def __enter__(self) -> Socket:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return repr(self._aio).replace("AsyncSocket", "Socket", 1)


def _none(*args: Any) -> None:
    return None


def _undo_into(core: AsyncSocket, buffer: bytearray | memoryview) -> Callable[[int], None]:
    """What gives back a ``recv_into`` result that a Ctrl-C raced: its bytes, to the buffer."""

    def undo(count: int) -> None:
        core._buf.unread(bytes(memoryview(buffer).cast("B")[:count]))

    return undo


def new_socket(
    domain: int = socket.AF_INET,
    sock_type: int = socket.SOCK_STREAM,
    protocol: int = socket.IPPROTO_TCP,
    buffered: bool = True,
    inheritable: bool = False,
) -> Socket:
    """Create a :class:`Socket` (Nim's ``newSocket``)."""
    return Socket(domain, sock_type, protocol, buffered, inheritable)


def dial(
    address: str | IpAddress,
    port: int,
    protocol: int = socket.IPPROTO_TCP,
    buffered: bool = True,
    timeout: float | None = None,
) -> Socket:
    """Blocking :func:`duonet.aio.dial`: connect over any family, happy eyeballs."""
    return Socket._wrap(_portal.call(_aio_dial, address, port, protocol, buffered, timeout))


def wrap_connected_socket(
    ctx: SslContext,
    sock: Socket,
    handshake: SslHandshakeType,
    hostname: str = "",
    timeout: float | None = None,
) -> None:
    """Blocking :func:`duonet.aio.wrap_connected_socket`: wrap and handshake now (STARTTLS)."""
    sock._read(_none, _aio_wrap_connected_socket, ctx, sock.aio, handshake, hostname, timeout)
