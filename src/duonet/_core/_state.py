"""What one ``AsyncSocket`` is made of, and the checks every one of its calls starts with.

Theory of operation
-------------------
A socket owns a real non-blocking ``socket.socket`` from the moment it is created (so options,
``bind_addr`` and ``get_fd`` work before ``connect``/``listen``, as with BSD sockets), a
:class:`~duonet._buffer.ReadBuffer`, a :class:`~duonet._core._io.Waiter` for its waits, and a
*transport* (:mod:`duonet._core._transport`): the object that moves bytes between the kernel (or
TLS) and the buffer. Everything above the transport (lines, exact sizes, flags, deadlines, busy
guards) is the same for plain and TLS streams.

Reads are cancel-safe by construction: a chunk returned by the kernel (or by TLS) is fed to the
buffer before the next ``await``, and bytes leave the buffer only at a ``return``. So a timeout,
a cancel scope or a closing task group at any ``await`` leaves every received byte buffered.

Timeouts: one deadline per call (``_deadline.Deadline``), covering every step of it. ``None`` or
a negative number waits forever; ``0`` allows no wait at all (only what is buffered or already
in the kernel is used).

Concurrency: one reader and one writer at a time. A second concurrent reader (or writer) gets
:class:`~duonet.BusyError` instead of interleaved bytes. ``close()`` from another task wakes a
blocked call, which then raises :class:`~duonet.SocketClosedError`.

Nothing in the core knows about threads, except :mod:`duonet._core._fastpath`, whose docstring
states the one rule: the blocking ``Socket`` drives the core through the portal.

This module is the bottom of the core's socket layers: it imports none of them, and every one of
them (transports, reads, writes, connections, TLS, ``AsyncSocket`` itself) builds on
:class:`SocketState`.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar

from .._args import check_flags, check_max_length, check_size, check_timeout
from .._buffer import ReadBuffer
from .._enums import SocketFlag
from .._errors import BusyError, SocketClosedError, is_disconnection_error, os_error_at
from ._deadline import Deadline
from ._io import Waiter
from ._resolve import endpoint

if TYPE_CHECKING:
    from .._sslcontext import SslContext
    from ._tlschannel import TlsChannel

__all__ = ("CHUNK", "SAFE_DISCONN", "SocketState", "Transport")

SAFE_DISCONN = SocketFlag.SAFE_DISCONN
#: How much one read asks the kernel for. Larger than Nim's 4000: fewer syscalls, same results.
CHUNK = 1 << 16
#: The calls whose timeout message says that nothing received was lost.
_KEEPS = frozenset({"recv", "recv_into", "recv_line", "skip"})

S = TypeVar("S", bound="SocketState")


class Transport(Protocol):
    """What moves a socket's bytes: :mod:`duonet._core._transport` has the three kinds (a plain
    stream, TLS, datagrams). Each reads into the socket's buffer and writes from a view; the
    semantics (how much to read, what a line is, when to stop) are the socket's."""

    #: Reads may go straight into the caller's memory (``recv_into``): plain sockets only.
    direct: bool

    async def fill(self, s: SocketState, flags: SocketFlag, limit: int = CHUNK) -> bool:
        """Read one chunk (at most ``limit`` bytes) into the buffer; False at the end."""

    def pull_nowait(
        self, s: SocketState, flags: SocketFlag = SAFE_DISCONN, limit: int = CHUNK
    ) -> bool:
        """Move what has already arrived into the buffer, never waiting; True if bytes were
        added. Safe in the caller's thread (a TLS transport adds nothing there)."""

    def pull_nowait_in_loop(
        self, s: SocketState, flags: SocketFlag = SAFE_DISCONN, limit: int = CHUNK
    ) -> bool:
        """:meth:`pull_nowait`, TLS included: in the loop's thread, or by the channel's owner
        (see :mod:`duonet._core._fastpath`)."""

    async def read_into(self, s: SocketState, target: memoryview, flags: SocketFlag) -> int:
        """One read straight into ``target`` (only where :attr:`direct`); 0 at the end."""

    async def send(self, s: SocketState, view: memoryview, flags: SocketFlag) -> None:
        """Send all of ``view``, a flat byte view (format ``"B"``, as ``check_bytes_view``
        gives; a datagram: as one datagram)."""


class SocketState:
    """The state of one socket and the checks its calls start with (no I/O here).

    The attributes are the core's shared vocabulary: the transports, the TLS handshakes, the
    fast path and ``AsyncSocket``'s methods all read and write them.
    """

    _transport: Transport
    #: Gives a new socket its transport (set by ``AsyncSocket``: the transports build on this
    #: module, so it cannot import them).
    _transport_for: ClassVar[Callable[[SocketState], Transport]]

    def _setup(
        self,
        sock: socket.socket,
        buffered: bool,
        inheritable: bool,
        kind: tuple[int, int] | None = None,
    ) -> None:
        """``kind``: ``(family, type)`` when known (a listener's, for the clients it accepts):
        reading them from ``sock`` costs a conversion to the stdlib's enums each."""
        sock.setblocking(False)
        if inheritable:
            sock.set_inheritable(True)
        self._sock = sock
        self._fd = sock.fileno()
        family, type_ = (sock.family, sock.type) if kind is None else kind
        self._family: int = family
        self._type: int = type_
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
        self._unconnected = self._type == socket.SOCK_STREAM
        self._drained = False  # the last read emptied the kernel: wait before reading again
        self._peer: str = ""  # "host:port" (or the path) of the peer, for messages
        self._listening = False
        self._bound: Any = None  # the sockaddr given to bind_addr (a renewed socket re-binds it)
        self._tls: TlsChannel | None = None
        self._ssl_context: SslContext | None = None
        self._tls_server_side = False
        self._tls_handshaken = False
        self._psk_identity = ""
        self._tls_state: Any = None  # a TLS listener's parked handshakes (_tls._ListenerState)
        #: The blocking face's count of this socket's portal calls (``_fastpath.PortalCalls``),
        #: which tells its fast path when it may use the TLS channel; None on the async face.
        self._portal_calls: Any = None
        self._transport = self._transport_for()
        #: The deadline of every call without a timeout: it holds no state, so one serves all.
        self._forever = Deadline(None, "", self._waiter, self._describe)

    @classmethod
    def _adopt(
        cls: type[S],
        sock: socket.socket,
        buffered: bool = True,
        inheritable: bool = False,
        kind: tuple[int, int] | None = None,
    ) -> S:
        """A socket of this class over ``sock`` (accepted, dialled or handed in)."""
        self = cls.__new__(cls)
        self._setup(sock, buffered, inheritable, kind)
        return self

    # -- names for messages -------------------------------------------------------------------

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

    def _os_error(self, exc: OSError, action: str) -> OSError:
        return os_error_at(exc, action, self._describe(), self._closed)

    def _deadline(self, timeout: float | None, what: str) -> Deadline:
        """The one deadline of a call on this socket (``timeout=0``: the waiter will not wait)."""
        if timeout is None:
            return self._forever
        return Deadline(timeout, what, self._waiter, self._describe, what in _KEEPS)

    # -- guards -------------------------------------------------------------------------------

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

    def _require_connected(self) -> None:
        if self._unconnected:
            raise self._not_connected()

    def _refuse_after_eof(self) -> None:
        raise BrokenPipeError(
            errno.EPIPE, f"cannot send to {self._describe()}: send_eof() shut the write side down"
        )

    def _peer_went_away(self, flags: SocketFlag) -> None:
        if SAFE_DISCONN not in flags:
            raise BrokenPipeError(
                errno.EPIPE, f"Broken pipe (sending to {self._describe()}: the peer is gone)"
            )

    # -- the end of the stream ----------------------------------------------------------------

    def _gone_nowait(self) -> bool:
        """An earlier send found the peer gone: the stream has ended, as a read says too."""
        if self._peer_gone:
            self._buf.feed_eof()
        return self._peer_gone

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

    def _nowait_error(self, exc: OSError, flags: SocketFlag) -> None:
        """An error of a read that did not wait: the end of the stream under ``flags``, or
        raised."""
        if is_disconnection_error(flags, exc.errno or 0) and not self._closed:
            self._buf.feed_eof()
            return
        raise self._os_error(exc, "receiving from") from exc

    def _close_now(self) -> None:
        """Close without waking waiters (``AsyncSocket`` closes: the TLS listener's parked
        clients are closed this way)."""
        raise NotImplementedError

    def _limit(self, size: int) -> int:
        """How much one read may take while ``size`` bytes are wanted in the buffer: a chunk, or
        on an unbuffered socket no more than is missing."""
        return CHUNK if self._buffered else max(1, size - len(self._buf))
