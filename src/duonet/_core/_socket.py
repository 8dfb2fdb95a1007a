"""``AsyncSocket``: every byte of duonet's I/O goes through here.

Theory of operation
-------------------
An ``AsyncSocket`` owns a real non-blocking ``socket.socket`` from the moment it is created (so
options, ``bind_addr`` and ``get_fd`` work before ``connect``/``listen``, as with BSD sockets), a
:class:`~duonet._buffer.ReadBuffer`, and, once TLS is on, a
:class:`~duonet._core._tlschannel.TlsChannel` over the same socket.

Reads are cancel-safe by construction: a chunk returned by the kernel (or by TLS) is fed to the
buffer before the next ``await``, and bytes leave the buffer only at a ``return``. So a timeout,
a cancel scope or a closing task group at any ``await`` leaves every received byte buffered.

Timeouts: one deadline per call (``_deadline.Deadline``), covering every step of it. ``None`` or
a negative number waits forever; ``0`` allows no wait at all (only what is buffered or already
in the kernel is used).

Concurrency: one reader and one writer at a time. A second concurrent reader (or writer) gets
:class:`~duonet.BusyError` instead of interleaved bytes. ``close()`` from another task wakes a
blocked call, which then raises :class:`~duonet.SocketClosedError`.

Nothing in this module knows about threads: the blocking ``Socket`` drives it through the portal.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import ByteStream

from .._args import (
    DataLike,
    check_address,
    check_bytes_view,
    check_flags,
    check_index,
    check_max_length,
    check_msg_flags,
    check_path,
    check_port,
    check_size,
    check_timeout,
    describe,
)
from .._buffer import ReadBuffer
from .._enums import MAX_LINE_LENGTH, ReadLineResult, SOBool, SocketFlag
from .._errors import (
    BusyError,
    SocketClosedError,
    SslError,
    is_disconnection_error,
    os_error_at,
    tls_read_error,
    tls_send_error,
    with_address,
)
from .._ip import IpAddress
from ._deadline import Deadline
from ._io import Waiter, connect_raw, renew_socket, send_all
from ._resolve import endpoint, happy_eyeballs, host_text, resolve
from ._streams import (
    LineIterator,
    drain_unread,
    extra_attributes,
    pending_lf,
    recv_line_unbuffered,
    recv_line_unbuffered_nowait,
    tls_line_from_record,
    unbuffered_lines_supported,
)

if TYPE_CHECKING:
    from .._sslcontext import SslContext
    from ._tlschannel import TlsChannel

__all__ = ("AsyncSocket", "dial", "new_async_socket")

SAFE_DISCONN = SocketFlag.SAFE_DISCONN
_NO_FLAGS = SocketFlag(0)
#: How much one read asks the kernel for. Larger than Nim's 4000: fewer syscalls, same results.
_CHUNK = 1 << 16
_DataLike = DataLike
#: The largest datagram a UDP socket can receive (what ``recv_from`` allocates at most).
_MAX_DATAGRAM = 65535


_KEEPS = frozenset({"recv", "recv_into", "recv_line", "skip"})


class AsyncSocket(ByteStream):
    """A socket with Nim's ``std/net`` API, awaited; works under asyncio and trio.

    Create it with :func:`new_async_socket` (or this constructor, same parameters), with
    :func:`dial`, from :meth:`accept`, or with :meth:`from_socket` to adopt a stdlib socket.
    ``async with`` closes it; ``async for line in sock`` reads lines (:meth:`lines`).

    It is also an :class:`anyio.abc.ByteStream` (:meth:`receive`, :meth:`send`,
    :meth:`send_eof`, :meth:`aclose`, :meth:`~anyio.TypedAttributeProvider.extra`), so anything
    that takes an anyio stream takes it; anyio's reads and duonet's share one buffer.
    """

    def __init__(
        self,
        domain: int = socket.AF_INET,
        sock_type: int = socket.SOCK_STREAM,
        protocol: int = socket.IPPROTO_TCP,
        buffered: bool = True,
        inheritable: bool = False,
    ) -> None:
        if domain == getattr(socket, "AF_UNIX", None) and protocol == socket.IPPROTO_TCP:
            protocol = 0  # Nim's IPPROTO_NONE: a Unix socket has no IP protocol
        if sock_type == socket.SOCK_DGRAM and protocol == socket.IPPROTO_TCP:
            protocol = socket.IPPROTO_UDP if domain != getattr(socket, "AF_UNIX", -1) else 0
        sock = socket.socket(domain, sock_type, protocol)
        self._setup(sock, buffered, inheritable)

    def _setup(self, sock: socket.socket, buffered: bool, inheritable: bool) -> None:
        sock.setblocking(False)
        if inheritable:
            sock.set_inheritable(True)
        self._sock = sock
        self._fd = sock.fileno()
        self._family = sock.family
        self._type = sock.type
        self._buffered = buffered
        self._buf = ReadBuffer()
        self._waiter = Waiter(sock)
        self._reading = False
        self._writing = False
        self._closed = False
        self._peer_gone = False
        self._eof_sent = False  # send_eof() shut the write side down
        self._reset_errno = 0  # a reset that connect() saw right after the handshake: see _eof
        # A stream socket that was never connected (nor accepted) refuses reads and writes with
        # ENOTCONN: SAFE_DISCONN covers a connection that was lost, never one that did not exist.
        self._unconnected = sock.type == socket.SOCK_STREAM
        self._drained = False  # the last non-blocking read found nothing: wait before reading
        self._peer: str = ""  # "host:port" (or the path) of the peer, for messages
        self._listening = False
        self._bound: Any = None  # the sockaddr given to bind_addr (a renewed socket re-binds it)
        self._tls: TlsChannel | None = None
        self._ssl_context: SslContext | None = None
        self._tls_server_side = False
        self._tls_handshaken = False
        self._psk_identity = ""
        self._tls_state: Any = None  # a TLS listener's parked handshakes (_tls._ListenerState)

    @classmethod
    def _adopt(
        cls, sock: socket.socket, buffered: bool = True, inheritable: bool = False
    ) -> AsyncSocket:
        self = cls.__new__(cls)
        self._setup(sock, buffered, inheritable)
        return self

    @classmethod
    def from_socket(cls, sock: socket.socket, buffered: bool = True) -> AsyncSocket:
        """Adopt a stdlib socket (Nim's ``newSocket(fd)``): duonet owns it from now on.

        The socket is made non-blocking. A connected or listening socket is usable at once.
        """
        self = cls._adopt(sock, buffered, sock.get_inheritable())
        try:
            self._peer = self._format_addr(sock.getpeername())
            self._unconnected = False
        except OSError:
            pass
        try:
            self._listening = bool(sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
        except OSError:
            pass
        return self

    # -- helpers ------------------------------------------------------------------------------

    def _deadline(self, timeout: float | None, what: str) -> Deadline:
        """The one deadline of a call on this socket (``timeout=0``: the waiter will not wait)."""
        return Deadline(timeout, what, self._waiter, self._describe, what in _KEEPS)

    def _describe(self) -> str:
        if self._peer:
            return self._peer
        try:
            return "local " + self._format_addr(self._sock.getsockname())
        except OSError:
            return f"fd {self._fd}"

    def _format_addr(self, addr: Any) -> str:
        if isinstance(addr, tuple):
            return endpoint(str(addr[0]), int(addr[1]))
        if isinstance(addr, bytes):
            addr = addr.decode(errors="replace")
        return str(addr) or "unnamed unix socket"

    def _check_open(self) -> None:
        if self._closed:
            raise SocketClosedError(f"socket {self._describe()}")

    def _begin_read(self) -> None:
        if self._reading:
            raise BusyError(f"another task is already reading socket {self._describe()}")
        if self._closed:
            raise SocketClosedError(f"socket {self._describe()}")
        self._reading = True

    def _begin_write(self) -> None:
        if self._writing:
            raise BusyError(f"another task is already writing socket {self._describe()}")
        if self._closed:
            raise SocketClosedError(f"socket {self._describe()}")
        self._writing = True

    def _check_io(self, size: object, timeout: object, flags: object, method: str) -> int:
        """The arguments every stream read takes, checked before any I/O; ``size`` as an int."""
        if type(size) is not int or size < 0:
            size = check_size(size)
        if timeout is not None:
            check_timeout(timeout)
        if type(flags) is not SocketFlag:
            check_flags(flags, method)
        if self._unconnected:
            raise self._not_connected()
        return size

    def _check_line(self, timeout: object, flags: object, max_length: object, method: str) -> int:
        """The arguments of a line read, checked before any I/O; ``max_length`` as an int."""
        if timeout is not None:
            check_timeout(timeout)
        if type(flags) is not SocketFlag:
            check_flags(flags, method)
        if type(max_length) is not int or max_length < 1:
            max_length = check_max_length(max_length)
        if self._unconnected:
            raise self._not_connected()
        return max_length

    def _not_connected(self) -> OSError:
        if self._closed:
            return SocketClosedError(f"socket {self._describe()}")
        return OSError(
            errno.ENOTCONN,
            f"socket is not connected: call connect() first ({self._describe()})",
        )

    def _os_error(self, exc: OSError, action: str) -> OSError:
        return os_error_at(exc, action, self._describe(), self._closed)

    async def _fill(self, flags: SocketFlag, limit: int = _CHUNK) -> bool:
        """Read one chunk (at most ``limit`` bytes) into the buffer; False once the peer has
        closed.

        The only place where plain and TLS reads happen. Cancel-safe: nothing is consumed
        from the kernel or TLS unless it is fed to the buffer before returning.
        """
        buf = self._buf
        if buf.eof:
            return False
        if self._gone_nowait():
            return False
        tls = self._tls
        if tls is not None:
            while True:
                # An exact read (unbuffered) first takes the \n that may complete a \r\n alone.
                lf_first = limit < _CHUNK and pending_lf(self)
                try:  # (plaintext goes to the buffer as it is decrypted)
                    got = await tls.receive_into(buf.feed, 1 if lf_first else limit)
                except (ssl.SSLError, OSError) as exc:
                    return self._tls_read_error(exc, flags)
                if not got:  # the peer's close_notify
                    buf.feed_eof()
                    return False
                if not (lf_first and not buf):
                    return True
        sock = self._sock
        if self._drained:  # the fast path just found the kernel empty: do not ask again
            self._drained = False
            await self._waiter.readable()
        while True:
            try:
                data = sock.recv(self._exact(limit))
            except (BlockingIOError, InterruptedError):
                await self._waiter.readable()
                continue
            except OSError as exc:
                if is_disconnection_error(flags, exc.errno or 0) and not self._closed:
                    buf.feed_eof()
                    return False
                raise self._os_error(exc, "receiving from") from exc
            if data:
                buf.feed(data)
                return True
            self._eof(flags)
            return False

    def _exact(self, limit: int) -> int:
        """How much a plain read of ``limit`` bytes asks the kernel for: one more when an exact
        (unbuffered) read starts with the \\n that completes a \\r\\n (state, not data: the
        buffer drops it). Raises ``BlockingIOError`` if the kernel holds nothing."""
        if limit < _CHUNK and pending_lf(self) and self._sock.recv(1, socket.MSG_PEEK) == b"\n":
            return limit + 1
        return limit

    def _eof(self, flags: SocketFlag) -> None:
        """The kernel says the stream ended (a plain read got 0 bytes).

        If ``connect`` took a reset that followed the handshake from the kernel, this is where it
        shows: as the ``ConnectionResetError`` the read would have got, or under
        ``SAFE_DISCONN`` as the end of the stream. Reported once, as the kernel reports errors.
        """
        code = self._reset_errno
        if code:
            self._reset_errno = 0
            if not is_disconnection_error(flags, code):
                raise self._os_error(OSError(code, os.strerror(code)), "receiving from")
        self._buf.feed_eof()

    def _tls_read_error(self, exc: OSError, flags: SocketFlag) -> bool:
        """An error of a TLS read: False (fed as the end of the stream) or raised, as
        :func:`~duonet._errors.tls_read_error` says."""
        error = tls_read_error(exc, flags, self._describe(), self._closed)
        if error is None:
            self._buf.feed_eof()
            return False
        raise error from exc

    # -- reading ------------------------------------------------------------------------------

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
                if buf:
                    return buf.take(size)
                with self._deadline(timeout, "recv"):
                    while True:
                        datagram = self._recv_datagram_nowait(size, flags)
                        if datagram is not None:
                            return datagram
                        await self._waiter.readable()
            if not self._buffered:
                # One read of at most `size` bytes: nothing is left behind in user space.
                with self._deadline(timeout, "recv"):
                    while not buf and await self._fill(flags, size):
                        pass  # (a read that gave only the \n of a \r\n: read again)
                return buf.take(size)
            if len(buf) >= size:
                return buf.take(size)
            with self._deadline(timeout, "recv"):
                while len(buf) < size and await self._fill(flags):
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
        view = _writable_view(buffer)
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
            with self._deadline(timeout, "recv_into"):
                try:
                    while got < size:
                        if self._tls is None and self._buf.direct_ok:
                            n = await self._recv_direct(view[got:], flags)
                            if n == 0:
                                break
                            got += n
                        else:
                            limit = _CHUNK if self._buffered else size - got
                            if not await self._fill(flags, limit):
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

    async def _recv_direct(self, target: memoryview, flags: SocketFlag) -> int:
        sock = self._sock
        while True:
            try:
                n = sock.recv_into(target)
            except (BlockingIOError, InterruptedError):
                await self._waiter.readable()
                continue
            except OSError as exc:
                if is_disconnection_error(flags, exc.errno or 0) and not self._closed:
                    self._buf.feed_eof()
                    return 0
                raise self._os_error(exc, "receiving from") from exc
            if n == 0:
                self._eof(flags)
            return n

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
                        if not await self._fill(flags, 1):
                            return buf.take_rest_line(max_length)
                while await self._fill(flags):
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
            if not self._pull_nowait_any(1 if exact else _CHUNK):
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

    def _pull_nowait_any(self, limit: int = _CHUNK) -> bool:
        """:meth:`_pull_nowait`, TLS included (in the loop's thread only: ``read_line_nowait``)."""
        if self._tls is None:
            return self._pull_nowait(SAFE_DISCONN, limit)
        if self._buf.eof or self._closed or self._gone_nowait():
            return False
        from ._tls import pull_nowait

        return pull_nowait(self, limit)

    def _gone_nowait(self) -> bool:
        """An earlier send found the peer gone: the stream has ended, as ``_fill`` says too."""
        if self._peer_gone:
            self._buf.feed_eof()
        return self._peer_gone

    def _pull_nowait(self, flags: SocketFlag = SAFE_DISCONN, limit: int = _CHUNK) -> bool:
        """Move what the kernel already holds (at most ``limit`` bytes) into the buffer (plain
        sockets; never waits).

        Returns True if bytes were added. A disconnection under ``flags`` reads as EOF; any other
        error is raised (the kernel reports it only once).
        """
        if self._tls is not None or self._buf.eof or self._closed or self._gone_nowait():
            return False
        try:
            data = self._sock.recv(self._exact(limit))
        except (BlockingIOError, InterruptedError):
            self._drained = True
            return False
        except OSError as exc:
            self._nowait_error(exc, flags)
            return False
        if data:
            self._buf.feed(data)
            return True
        self._eof(flags)
        return False

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
                    while len(buf) < size and await self._fill(SAFE_DISCONN, self._limit(size)):
                        pass
            return buf.discard(size)
        finally:
            self._reading = False

    def _limit(self, size: int) -> int:
        """How much one read may take while ``size`` bytes are wanted in the buffer: a chunk, or
        on an unbuffered socket no more than is missing."""
        return _CHUNK if self._buffered else max(1, size - len(self._buf))

    async def _read_line_nowait_in_loop(self) -> tuple[ReadLineResult, bytes]:
        """:meth:`read_line_nowait` for the blocking face of a TLS socket: the ``SSLObject`` may
        only be used from the loop's thread, so the call is run there (it still never waits)."""
        return self.read_line_nowait()

    def has_data_buffered(self) -> bool:
        """True if bytes are waiting in duonet's own buffer (never blocks, reads nothing)."""
        return bool(self._buf)

    def _recv_datagram_nowait(self, size: int, flags: SocketFlag) -> bytes | None:
        # One datagram (truncated to size by the kernel); b"" is an empty datagram, not EOF.
        try:
            return self._sock.recv(size)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            raise self._os_error(exc, "receiving from") from exc

    def _nowait_error(self, exc: OSError, flags: SocketFlag) -> None:
        if is_disconnection_error(flags, exc.errno or 0) and not self._closed:
            self._buf.feed_eof()
            return
        raise self._os_error(exc, "receiving from") from exc

    # -- datagrams ----------------------------------------------------------------------------

    async def recv_from(self, length: int, timeout: float | None = None) -> tuple[bytes, str, int]:
        """Receive one datagram: ``(data, sender address as text, sender port)``.

        A datagram longer than ``length`` is truncated to ``length`` (the OS drops the rest). An
        IPv4-mapped IPv6 sender shows as its IPv4 address. A timeout loses no datagram: one is
        either returned or left in the kernel.

        Raises:
            TimeoutError: no datagram within ``timeout``.
            SocketClosedError: the socket is closed, or was closed during the call.
            BusyError: another task is reading this socket.
        """
        length = check_size(length, "length")
        check_timeout(timeout)
        self._begin_read()
        try:
            with self._deadline(timeout, "recv_from"):
                while True:
                    result = self._recv_from_ready(length)
                    if result is not None:
                        return result
                    await self._waiter.readable()
        finally:
            self._reading = False

    def _recv_from_ready(self, length: int) -> tuple[bytes, str, int] | None:
        """One datagram already in the kernel, or None (never waits)."""
        if self._closed:
            return None
        try:
            data, addr = self._sock.recvfrom(min(length, self._max_datagram()))
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            raise self._os_error(exc, "receiving on") from exc
        host, port = _addr_pair(addr)
        if host.startswith("::ffff:") and "." in host:
            host = host[7:]
        return data, host, port

    def _max_datagram(self) -> int:
        """The largest datagram this socket can receive: no larger buffer is ever allocated."""
        if self._family in (socket.AF_INET, socket.AF_INET6):
            return _MAX_DATAGRAM
        try:  # a Unix datagram is bounded by the receive buffer
            rcvbuf = int(self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
        except OSError:
            return _MAX_DATAGRAM
        return max(_MAX_DATAGRAM, rcvbuf)

    async def send_to(
        self, address: str | IpAddress, port: int, data: _DataLike, flags: int = 0
    ) -> int:
        """Send one datagram to ``address``:``port``; return the number of bytes sent.

        ``address`` is a host name, an IP text or an :class:`IpAddress`; the name is resolved
        once per call and each resolved address is tried until one accepts the datagram.

        Raises:
            OSError: no resolved address accepted it (the message names the address).
            socket.gaierror: the name does not resolve.
        """
        host = host_text(check_address(address))
        port = check_port(port)
        view = check_bytes_view(data, "send_to")
        flags = check_msg_flags(flags)
        what = endpoint(host, port)
        self._begin_write()
        try:
            with self._deadline(None, f"send_to {what}"):
                infos = await resolve(host, port, self._family, self._type, self._sock.proto)
                last: OSError | None = None
                for _family, _type, _proto, sockaddr in infos:
                    while True:
                        try:
                            return self._sock.sendto(view, flags, sockaddr)
                        except (BlockingIOError, InterruptedError):
                            await self._waiter.writable()
                        except OSError as exc:
                            last = exc
                            break
                assert last is not None
                raise self._os_error(last, f"sending a datagram to {what} from") from last
        finally:
            self._writing = False

    # -- writing ------------------------------------------------------------------------------

    async def send(
        self, data: _DataLike, flags: SocketFlag = SAFE_DISCONN, timeout: float | None = None
    ) -> None:
        """Send all of ``data`` (``str`` is encoded as UTF-8), resuming after partial writes.

        If the peer has gone (reset, broken pipe), raises the ``OSError`` unless ``SAFE_DISCONN``
        is in ``flags``: then it returns quietly and the next read gives ``b""``.

        A send that times out or is cancelled leaves the stream undefined (part of the data may
        have been sent): close the socket.

        Raises:
            TimeoutError: the timeout expired.
            BrokenPipeError, ConnectionResetError: the peer is gone (without ``SAFE_DISCONN``).
            SocketClosedError: the socket is closed, or was closed during the call.
            BusyError: another task is writing this socket.
        """
        view = check_bytes_view(data, "send")
        if type(flags) is not SocketFlag:
            check_flags(flags, "send")
        if timeout is not None:
            check_timeout(timeout)
        if self._unconnected:
            raise self._not_connected()
        self._begin_write()
        try:
            if self._eof_sent:
                self._refuse_after_eof()
            with self._deadline(timeout, "send"):
                if self._tls is not None:
                    await self._send_tls(view, flags)
                    return
                try:
                    if self._type == socket.SOCK_DGRAM:
                        await self._send_datagram(view)
                    else:
                        await send_all(self._sock, self._waiter, view)
                except OSError as exc:
                    if is_disconnection_error(flags, exc.errno or 0) and not self._closed:
                        self._peer_gone = True
                        return
                    raise self._os_error(exc, "sending to") from exc
        finally:
            self._writing = False

    async def _send_datagram(self, view: memoryview) -> None:
        # One datagram, even an empty one (a stream send of nothing sends nothing).
        while True:
            try:
                self._sock.send(view)
                return
            except (BlockingIOError, InterruptedError):
                await self._waiter.writable()

    async def _send_tls(self, view: memoryview, flags: SocketFlag) -> None:
        assert self._tls is not None
        if self._peer_gone:  # an earlier send found the peer gone (the TLS stream is broken)
            self._peer_went_away(flags)
            return
        try:
            await self._tls.send(view)
        except OSError as exc:  # (ssl.SSLError included)
            if (
                not isinstance(exc, ssl.SSLError)
                and is_disconnection_error(SAFE_DISCONN, exc.errno or 0)
                and not self._closed
            ):
                # The TLS stream is broken for good: later reads see the end of the stream (as
                # a plain socket's do after a reset), whatever this call's flags.
                self._peer_gone = True
                if SAFE_DISCONN in flags:
                    return
            raise tls_send_error(exc, self._describe(), self._closed) from exc

    def _require_connected(self) -> None:
        if self._unconnected:
            raise self._not_connected()

    def _refuse_after_eof(self) -> None:
        raise BrokenPipeError(
            errno.EPIPE, f"cannot send to {self._describe()}: send_eof() shut the write side down"
        )

    async def send_eof(self) -> None:
        """Half-close: shut the write side down, so the peer reads the end of the stream, while
        this side can still read what the peer sends.

        On TLS, close_notify is sent first; the peer's close_notify answering it reads as the
        end of the stream (``b""``), not as an error. Idempotent, also after the peer closed.
        A later ``send`` raises ``BrokenPipeError``.

        Raises:
            OSError: ``ENOTCONN`` if the socket was never connected.
            SocketClosedError: the socket is closed.
            BusyError: another task is writing this socket.
        """
        self._begin_write()
        try:
            if self._eof_sent:
                return
            self._require_connected()
            self._eof_sent = True
            if self._tls is not None:
                # close_notify in full; the peer's close_notify answering it ends the reading
                await self._tls.send_close_notify_fully()
            try:
                self._sock.shutdown(socket.SHUT_WR)
            except OSError as exc:
                if exc.errno != errno.ENOTCONN and not is_disconnection_error(
                    SAFE_DISCONN, exc.errno or 0
                ):
                    raise self._os_error(exc, "shutting down the write side to") from exc
        finally:
            self._writing = False

    async def send_file(
        self,
        file: Any,
        offset: int = 0,
        count: int | None = None,
        timeout: float | None = None,
    ) -> int:
        """Send ``count`` bytes of ``file`` (all to its end when ``None``) from ``offset``;
        return how many were sent.

        ``file`` is a binary file object or a path. ``offset`` is absolute in the file (as in
        ``os.sendfile``). Plain TCP and Unix sockets use the kernel's zero-copy ``os.sendfile``
        when the file has a descriptor; TLS sockets and other files are read and sent in chunks.
        ``timeout`` bounds the whole call.

        Whatever ends the call (its end, a timeout, a cancellation, an error), a file object's
        position is left just past the last byte sent, so a second call with
        ``offset=file.tell()`` continues exactly there: nothing is sent twice.

        Raises:
            TimeoutError: the timeout expired (see above for where to continue).
            TypeError: ``file`` is neither a binary file object nor a path.
            ValueError: ``offset`` or ``count`` is negative.
            OSError: the peer is gone, or the file cannot be read (the message names which).
            SocketClosedError: the socket is closed, or was closed during the call.
            BusyError: another task is writing this socket.
        """
        from ._sendfile import send_file

        return await send_file(self, file, offset, count, timeout)

    # -- anyio's ByteStream -------------------------------------------------------------------

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
                    limit = _CHUNK if self._buffered else max_bytes
                    while not buf and await self._fill(SAFE_DISCONN, limit):
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

    async def aclose(self) -> None:
        """:class:`anyio.abc.ByteStream`'s close: the same as :meth:`close`."""
        await self.close()

    @property
    def extra_attributes(self) -> dict[Any, Callable[[], Any]]:
        """anyio's typed attributes: ``SocketAttribute.family``, ``local_address``,
        ``local_port``, ``remote_address``, ``remote_port``, ``raw_socket`` (and anyio's
        ``TLSAttribute`` ones on a TLS socket), read with ``sock.extra(attribute)``."""
        return extra_attributes(self)

    # -- iteration ----------------------------------------------------------------------------

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

    def __aiter__(self) -> AsyncSocket:
        return self  # each step is one recv_line: the socket is its own line iterator

    async def __anext__(self) -> bytes:
        if not self._reading:  # a line already split out: recv_line's own first step, inlined
            line = self._buf.take_line(MAX_LINE_LENGTH)
            if line is not None:
                return line
        line = await self.recv_line()
        if not line:
            raise StopAsyncIteration
        return line

    def _peer_went_away(self, flags: SocketFlag) -> None:
        if SAFE_DISCONN not in flags:
            raise BrokenPipeError(
                errno.EPIPE, f"Broken pipe (sending to {self._describe()}: the peer is gone)"
            )

    async def try_send(self, data: _DataLike) -> bool:
        """Send all of ``data``; ``False`` instead of raising if that fails.

        A programming error is not a transient failure: wrong ``data`` raises ``TypeError``, and a
        stream socket that was never connected raises ``OSError`` (``ENOTCONN``).
        """
        view = check_bytes_view(data, "try_send")
        if self._unconnected:
            raise self._not_connected()
        try:
            await self.send(view, _NO_FLAGS)
        except (OSError, BusyError, ssl.SSLError):
            return False
        return True

    # -- connecting ---------------------------------------------------------------------------

    async def connect(
        self, address: str | IpAddress, port: int = 0, timeout: float | None = None
    ) -> None:
        """Connect to ``address`` (host name or IP) and ``port``, trying every resolved address.

        Only addresses of this socket's family are tried (``dial`` tries every family); an
        ``AF_INET6`` socket reaches IPv4-only hosts as ``::ffff:a.b.c.d``. A socket wrapped with
        :func:`wrap_socket` then does its TLS handshake, with ``address`` used for SNI and
        certificate verification. Succeeds once the TCP handshake completed: a reset sent right
        after shows up in the next read or write.

        Raises:
            TimeoutError: resolving, connecting and handshaking took longer than ``timeout``.
            ConnectionRefusedError, OSError: no address accepted the connection (the message
                names the address).
            socket.gaierror: the name does not resolve.
            SslError: the TLS handshake failed (the reason is in the message).
        """
        host = host_text(check_address(address))
        port = check_port(port)
        check_timeout(timeout)
        self._check_open()
        what = endpoint(host, port)
        with self._deadline(timeout, f"connect to {what}"):
            infos = await resolve(host, port, self._family, self._type, self._sock.proto)
            last: OSError | None = None
            for _family, _type, _proto, sockaddr in infos:
                if last is not None:
                    # A socket whose connect failed cannot try again: a fresh one, same fd.
                    try:
                        renew_socket(self._sock, self._bound, self._waiter)
                    except OSError as exc:
                        raise with_address(exc, "renewing the socket connecting to", what) from last
                try:
                    self._reset_errno = await connect_raw(self._sock, sockaddr, self._waiter)
                except OSError as exc:
                    if self._closed:
                        raise SocketClosedError(f"socket connecting to {what}") from exc
                    last = exc
                    continue
                self._peer = self._format_addr(sockaddr)
                self._unconnected = False
                break
            else:
                assert last is not None
                raise with_address(last, "connecting to", what) from last
            if self._ssl_context is not None:
                from ._tls import client_handshake

                await client_handshake(self, host)

    async def connect_unix(self, path: str | bytes) -> None:
        """Connect this ``AF_UNIX`` socket to ``path``."""
        path = check_path(path)
        self._check_open()
        try:
            await connect_raw(self._sock, path, self._waiter)
        except anyio.ClosedResourceError:
            raise SocketClosedError(f"socket connecting to {path!r}") from None
        except OSError as exc:
            raise with_address(exc, "connecting to", repr(path)) from exc
        self._peer = self._format_addr(path)
        self._unconnected = False

    def bind_unix(self, path: str | bytes) -> None:
        """Bind this ``AF_UNIX`` socket to ``path`` (an existing file is not removed)."""
        path = check_path(path)
        self._check_open()
        try:
            self._sock.bind(path)
        except OSError as exc:
            raise with_address(exc, "binding to", repr(path)) from exc

    def bind_addr(self, port: int = 0, address: str | IpAddress = "") -> None:
        """Bind to ``address`` and ``port``; ``""`` is every address of the socket's family."""
        port = check_port(port)
        host = host_text(check_address(address))
        self._check_open()
        if not host:
            if self._family == socket.AF_INET:
                host = "0.0.0.0"
            elif self._family == socket.AF_INET6:
                host = "::"
            else:
                raise ValueError("bind_addr needs an address for a socket that is not IPv4/IPv6")
        try:
            infos = socket.getaddrinfo(
                host, port, self._family, self._type, self._sock.proto, socket.AI_PASSIVE
            )
            self._sock.bind(infos[0][4])
            self._bound = infos[0][4]
        except OSError as exc:
            raise with_address(exc, "binding to", endpoint(host, port)) from exc

    def listen(self, backlog: int = socket.SOMAXCONN) -> None:
        """Start listening for connections (``accept`` then hands them out)."""
        backlog = check_index(backlog, "backlog")
        self._check_open()
        try:
            self._sock.listen(backlog)
        except OSError as exc:
            raise self._os_error(exc, "listening on") from exc
        self._listening = True

    async def accept(
        self,
        flags: SocketFlag = SAFE_DISCONN,
        inheritable: bool = False,
        timeout: float | None = None,
    ) -> AsyncSocket:
        """Wait for a client and return it as a new socket (buffered like this one).

        Under ``SAFE_DISCONN`` a client that vanished during the accept is skipped. On a listener
        wrapped with :func:`wrap_socket`, the client's TLS handshake is done before it is returned
        (handshakes run concurrently; a client that stalls or fails is skipped under
        ``SAFE_DISCONN``, its ``SslError`` raised otherwise). A timeout loses no client.
        """
        client, _address = await self.accept_addr(flags, inheritable, timeout)
        return client

    async def accept_addr(
        self,
        flags: SocketFlag = SAFE_DISCONN,
        inheritable: bool = False,
        timeout: float | None = None,
    ) -> tuple[AsyncSocket, str]:
        """As :meth:`accept`, and the client's address as text (``""`` for an unnamed Unix
        client)."""
        if type(flags) is not SocketFlag:
            check_flags(flags, "accept")
        check_timeout(timeout)
        self._begin_read()
        try:
            with self._deadline(timeout, "accept"):
                if self._ssl_context is not None:
                    from ._tls import _ListenerState, tls_accept

                    if self._tls_state is None:
                        self._tls_state = _ListenerState()
                    return await tls_accept(self, flags, inheritable)
                return await self._accept_plain(flags, inheritable)
        finally:
            self._reading = False

    def _accept_raw_nowait(
        self, flags: SocketFlag, inheritable: bool
    ) -> tuple[AsyncSocket, str] | None:
        """The next client waiting in the backlog, or None; a TLS listener's caller handshakes."""
        while True:
            try:
                conn, addr = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return None
            except OSError as exc:
                if is_disconnection_error(flags, exc.errno or 0):
                    continue
                raise self._os_error(exc, "accepting on") from exc
            return self._accepted(conn, addr, inheritable)

    async def _accept_plain(self, flags: SocketFlag, inheritable: bool) -> tuple[AsyncSocket, str]:
        sock = self._sock
        while True:
            try:
                conn, addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                await self._waiter.readable()
                continue
            except OSError as exc:
                if is_disconnection_error(flags, exc.errno or 0) and not self._closed:
                    continue
                raise self._os_error(exc, "accepting on") from exc
            return self._accepted(conn, addr, inheritable)

    def _accepted(
        self, conn: socket.socket, addr: Any, inheritable: bool
    ) -> tuple[AsyncSocket, str]:
        client = AsyncSocket._adopt(conn, self._buffered, inheritable)
        client._unconnected = False
        if isinstance(addr, tuple):
            text = str(addr[0])
            if text.startswith("::ffff:") and "." in text:
                text = text[7:]
            client._peer = endpoint(str(addr[0]), int(addr[1]))
        else:
            text = self._format_addr(addr) if addr else ""
            client._peer = text or "unnamed unix socket"
        return client, text

    # -- options and addresses ----------------------------------------------------------------

    def get_sock_opt(self, opt: SOBool, level: int = socket.SOL_SOCKET) -> bool:
        """Read a boolean option. ``level`` defaults to the option's own (``NO_DELAY``: TCP)."""
        _check_option(opt, level)
        self._check_open()
        if level == socket.SOL_SOCKET:
            level = opt.level
        return bool(self._sock.getsockopt(level, opt.optname))

    def set_sock_opt(self, opt: SOBool, value: bool, level: int = socket.SOL_SOCKET) -> None:
        """Set a boolean option; works before and after ``connect``/``listen``."""
        _check_option(opt, level)
        self._check_open()
        if level == socket.SOL_SOCKET:
            level = opt.level
        self._sock.setsockopt(level, opt.optname, 1 if value else 0)

    def get_local_addr(self) -> tuple[str, int]:
        """The local address and port (a Unix socket gives its path and 0)."""
        self._check_open()
        return _addr_pair(self._sock.getsockname())

    def get_peer_addr(self) -> tuple[str, int]:
        """The peer's address and port (a Unix socket gives the peer's path and 0)."""
        self._check_open()
        try:
            return _addr_pair(self._sock.getpeername())
        except OSError as exc:
            raise self._os_error(exc, "getting the peer address of") from exc

    def get_fd(self) -> int:
        """The file descriptor (-1 once closed)."""
        return -1 if self._closed else self._fd

    def fileno(self) -> int:
        """The file descriptor (-1 once closed), for ``select`` and friends."""
        return self.get_fd()

    def get_socket_error(self) -> int:
        """The pending error of the socket (``SO_ERROR``), 0 if none."""
        self._check_open()
        return int(self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR))

    # -- TLS queries --------------------------------------------------------------------------

    def is_ssl(self) -> bool:
        """True if the socket was wrapped with TLS."""
        return self._ssl_context is not None

    def got_handshake(self) -> bool:
        """True once the TLS handshake completed; ``SslError`` on a plain socket."""
        if self._ssl_context is None:
            raise SslError("Socket is not an SSL socket.")
        return self._tls_handshaken

    def get_peer_certificates(self) -> list[bytes]:
        """The peer's certificates (DER), leaf first; ``[]`` if none or not TLS.

        On Python >= 3.13 this is the full verified chain; before, the leaf alone.
        """
        from ._tls import peer_certificates

        return peer_certificates(self)

    def get_psk_identity(self) -> str:
        """The PSK identity the client sent (server side; ``""`` if none)."""
        from ._tls import psk_identity

        return psk_identity(self)

    # -- closing ------------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the socket; idempotent. A task blocked on it gets ``SocketClosedError``.

        On TLS, sends close_notify without waiting for the peer's (errors ignored). First takes,
        without waiting, whatever the kernel holds unread for the socket (TLS 1.3 session
        tickets never read, say), so that the close is a FIN and not a reset that would destroy
        data still on its way to the peer: a peer that reads after ``send`` then ``close``
        receives every byte.
        """
        if self._closed:
            return
        try:
            anyio.notify_closing(self._sock)  # wake every task waiting on it
        except RuntimeError:
            pass  # no event loop: nobody can be waiting
        self._close_now()

    def _close_now(self) -> None:
        """Close without waking waiters: for when no call can be waiting on the socket.

        Sends a TLS close_notify (best effort, never waits), closes the handshakes a TLS
        listener had parked, closes the socket, drops the buffer.
        """
        if self._closed:
            return
        self._closed = True
        if self._tls is not None and self._tls_handshaken:
            self._tls.send_close_notify()  # best effort, never waits
        if self._tls_state is not None:
            self._tls_state.close()
        elif not self._listening:
            drain_unread(self._sock, not self._buffered)  # so that the close is a FIN, not a reset
        self._waiter.close()  # the fd leaves the loop's selector before its number is free
        self._sock.close()
        self._buf.clear()

    async def __aenter__(self) -> AsyncSocket:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("listening" if self._listening else "open")
        tls = " tls" if self._ssl_context is not None else ""
        return f"<AsyncSocket fd={self.get_fd()} {state}{tls} {self._describe()}>"


def _writable_view(buffer: object) -> memoryview:
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


def _check_option(opt: object, level: object) -> None:
    if not isinstance(opt, SOBool):
        raise TypeError(f"opt must be a SOBool (e.g. SOBool.REUSE_ADDR), not {describe(opt)}")
    if type(level) is not int:
        check_index(level, "level")


def _addr_pair(addr: Any) -> tuple[str, int]:
    if isinstance(addr, tuple):
        return str(addr[0]), int(addr[1])
    if isinstance(addr, bytes):
        return addr.decode(errors="replace"), 0
    return str(addr), 0


def new_async_socket(
    domain: int = socket.AF_INET,
    sock_type: int = socket.SOCK_STREAM,
    protocol: int = socket.IPPROTO_TCP,
    buffered: bool = True,
    inheritable: bool = False,
) -> AsyncSocket:
    """Create an :class:`AsyncSocket` (Nim's ``newAsyncSocket``/``newSocket``)."""
    return AsyncSocket(domain, sock_type, protocol, buffered, inheritable)


async def dial(
    address: str | IpAddress,
    port: int,
    protocol: int = socket.IPPROTO_TCP,
    buffered: bool = True,
    timeout: float | None = None,
) -> AsyncSocket:
    """Connect to ``address``:``port`` over any family (happy eyeballs across IPv6 and IPv4).

    Returns a fresh connected socket. ``protocol`` ``IPPROTO_UDP`` gives a connected datagram
    socket. The timeout covers resolution and every attempt.

    Raises:
        TimeoutError: nothing connected within ``timeout``.
        OSError: every address failed (the last failure, naming the address).
        socket.gaierror: the name does not resolve.
    """
    sock_type = {socket.IPPROTO_TCP: socket.SOCK_STREAM, socket.IPPROTO_UDP: socket.SOCK_DGRAM}
    kind = sock_type.get(protocol, socket.SOCK_RAW)
    host = host_text(check_address(address))
    port = check_port(port)
    check_timeout(timeout)
    what = endpoint(host, port)
    with Deadline(timeout, f"dial {what}"):
        infos = await resolve(host, port, socket.AF_UNSPEC, kind, protocol)
        raw, sockaddr, reset = await happy_eyeballs(infos, what)
    result = AsyncSocket._adopt(raw, buffered)
    result._peer = result._format_addr(sockaddr)
    result._unconnected = False
    result._reset_errno = reset
    return result
