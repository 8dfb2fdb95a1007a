"""Connection set-up of ``AsyncSocket``: ``connect``, ``connect_unix``, binding, listening, and
the accept that hands out clients (plain, or after their TLS handshake).

``connect`` tries every resolved address of the socket's family, renewing the socket (same fd)
after a failed attempt, and runs the TLS client handshake of a wrapped socket inside the same
deadline; ``dial`` (in ``_socket.py``) races the families instead (``_resolve.happy_eyeballs``).
"""

from __future__ import annotations

import socket

import anyio

from .._args import check_address, check_flags, check_index, check_path, check_port, check_timeout
from .._enums import SocketFlag
from .._errors import SocketClosedError, with_address
from .._ip import IpAddress
from ._accept import accept_plain
from ._io import connect_raw, renew_socket
from ._resolve import endpoint, host_text, resolve
from ._state import S, SocketState
from ._tls import ListenerState, client_handshake, tls_accept

__all__ = ("ConnectionCalls", "accept_client")


class ConnectionCalls(SocketState):
    """``AsyncSocket``'s connection set-up."""

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


async def accept_client(
    listener: S, flags: SocketFlag, inheritable: bool, timeout: float | None
) -> tuple[S, str]:
    """``accept_addr``: the next client and its address as text (its TLS handshake done, on a
    wrapped listener)."""
    if type(flags) is not SocketFlag:
        check_flags(flags, "accept")
    check_timeout(timeout)
    listener._begin_read()
    try:
        with listener._deadline(timeout, "accept"):
            if listener._ssl_context is not None:
                if listener._tls_state is None:
                    listener._tls_state = ListenerState()
                return await tls_accept(listener, flags, inheritable)
            return await accept_plain(listener, flags, inheritable)
    finally:
        listener._reading = False
