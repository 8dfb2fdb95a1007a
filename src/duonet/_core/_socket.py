"""``AsyncSocket``: Nim's ``std/net`` socket, awaited, on anyio (asyncio and trio alike).

The class is assembled from the core's layers, one module per reason to change (the theory of
operation is in :mod:`duonet._core._state`):

* :mod:`~duonet._core._state`: what a socket is made of, the guards and checks every call starts
  with;
* :mod:`~duonet._core._reading`, :mod:`~duonet._core._writing`: stream semantics (exact sizes,
  lines, iteration, half-close, files);
* :mod:`~duonet._core._datagram`: datagrams; :mod:`~duonet._core._connect`: connecting, binding,
  listening, accepting; :mod:`~duonet._core._tls`: handshakes and TLS listeners;
* :mod:`~duonet._core._transport`: what moves the bytes (a plain stream, TLS, datagrams).

This module adds construction, ``accept``, options and queries, closing, and ``dial``.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from types import TracebackType
from typing import Any

import anyio
from anyio.abc import ByteStream

from .._args import check_address, check_index, check_port, check_timeout, describe
from .._enums import SOBool, SocketFlag
from .._errors import SslError
from .._ip import IpAddress
from ._connect import ConnectionCalls, accept_client
from ._datagram import DatagramCalls, addr_pair
from ._deadline import Deadline
from ._reading import StreamReads
from ._resolve import endpoint, happy_eyeballs, host_text, resolve
from ._state import SAFE_DISCONN
from ._streams import drain_unread, extra_attributes
from ._tls import peer_certificates, psk_identity
from ._transport import transport_for
from ._writing import StreamWrites

__all__ = ("AsyncSocket", "dial", "new_async_socket")


class AsyncSocket(StreamReads, StreamWrites, DatagramCalls, ConnectionCalls, ByteStream):
    """A socket with Nim's ``std/net`` API, awaited; works under asyncio and trio.

    Create it with :func:`new_async_socket` (or this constructor, same parameters), with
    :func:`dial`, from :meth:`accept`, or with :meth:`from_socket` to adopt a stdlib socket.
    ``async with`` closes it; ``async for line in sock`` reads lines (:meth:`lines`).

    It is also an :class:`anyio.abc.ByteStream` (:meth:`receive`, :meth:`send`,
    :meth:`send_eof`, :meth:`aclose`, :meth:`~anyio.TypedAttributeProvider.extra`), so anything
    that takes an anyio stream takes it; anyio's reads and duonet's share one buffer.
    """

    _transport_for = transport_for

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

    # -- accepting ----------------------------------------------------------------------------

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
        return await accept_client(self, flags, inheritable, timeout)

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
        return addr_pair(self._sock.getsockname())

    def get_peer_addr(self) -> tuple[str, int]:
        """The peer's address and port (a Unix socket gives the peer's path and 0)."""
        self._check_open()
        try:
            return addr_pair(self._sock.getpeername())
        except OSError as exc:
            raise self._os_error(exc, "getting the peer address of") from exc

    def get_fd(self) -> int:
        """The file descriptor (-1 once closed).

        duonet waits on it itself: on asyncio, do not register it with the same loop
        (``add_reader``, ``anyio.wait_readable``) while duonet uses the socket, as for any
        descriptor an asyncio transport owns: the loop keeps one reader per descriptor.
        """
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
        return peer_certificates(self)

    def get_psk_identity(self) -> str:
        """The PSK identity the client sent (server side; ``""`` if none)."""
        return psk_identity(self)

    # -- anyio's ByteStream (receive, send and send_eof are the reads' and writes') -----------

    async def aclose(self) -> None:
        """:class:`anyio.abc.ByteStream`'s close: the same as :meth:`close`."""
        await self.close()

    @property
    def extra_attributes(self) -> dict[Any, Callable[[], Any]]:
        """anyio's typed attributes: ``SocketAttribute.family``, ``local_address``,
        ``local_port``, ``remote_address``, ``remote_port``, ``raw_socket`` (and anyio's
        ``TLSAttribute`` ones on a TLS socket), read with ``sock.extra(attribute)``."""
        return extra_attributes(self)

    def __aiter__(self) -> AsyncSocket:
        return self  # each step is one recv_line: the socket is its own line iterator

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
        self._forever.settle(self._describe())  # (before the socket closes: its address)
        if self._tls is not None and self._tls_handshaken:
            self._tls.send_close_notify()  # best effort, never waits
        if self._tls_state is not None:
            self._tls_state.close()
        elif not self._listening and self._type == socket.SOCK_STREAM:
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


def _check_option(opt: object, level: object) -> None:
    if not isinstance(opt, SOBool):
        raise TypeError(f"opt must be a SOBool (e.g. SOBool.REUSE_ADDR), not {describe(opt)}")
    if type(level) is not int:
        check_index(level, "level")


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
