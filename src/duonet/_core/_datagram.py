"""Datagram calls of ``AsyncSocket``: ``recv_from``, ``send_to``, and ``recv`` on a datagram
socket.

A datagram is either returned whole (truncated to the size asked for, as the kernel does) or
left in the kernel: no call here ever holds part of one, so a timeout or a cancellation loses no
datagram. ``send`` of a connected datagram socket is its transport's
(:class:`~duonet._core._transport.Datagrams`).
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any, TypeVar

from .._args import (
    DataLike,
    check_address,
    check_bytes_view,
    check_msg_flags,
    check_port,
    check_size,
    check_timeout,
)
from .._ip import IpAddress
from ._resolve import endpoint, host_text, resolve
from ._state import SocketState

__all__ = ("DatagramCalls", "recv_datagram", "recv_datagram_nowait")

R = TypeVar("R")

#: The largest datagram a UDP socket can receive (what ``recv_from`` allocates at most).
_MAX_DATAGRAM = 65535


def recv_datagram_nowait(state: SocketState, size: int) -> bytes | None:
    """One datagram already in the kernel (``b""``: an empty one), or None (never waits)."""
    try:
        return state._sock.recv(size)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError as exc:
        raise state._os_error(exc, "receiving from") from exc


async def recv_datagram(state: SocketState, size: int, timeout: float | None) -> bytes:
    """``recv`` of a datagram socket: what is buffered (``recv_line`` left it), else the next
    datagram."""
    buf = state._buf
    if buf:
        return buf.take(size)
    with state._deadline(timeout, "recv"):
        return await _next(state, recv_datagram_nowait, size)


async def _next(state: SocketState, ready: Callable[[SocketState, int], R | None], size: int) -> R:
    """``ready(state, size)``'s first answer that is not None, waiting for the socket between."""
    while True:
        answer = ready(state, size)
        if answer is not None:
            return answer
        await state._waiter.readable()


def recv_from_ready(state: SocketState, length: int) -> tuple[bytes, str, int] | None:
    """One datagram already in the kernel with its sender, or None (never waits)."""
    if state._closed:
        return None
    try:
        data, addr = state._sock.recvfrom(min(length, _max_datagram(state)))
    except (BlockingIOError, InterruptedError):
        return None
    except OSError as exc:
        raise state._os_error(exc, "receiving on") from exc
    host, port = addr_pair(addr)
    if host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return data, host, port


def _max_datagram(state: SocketState) -> int:
    """The largest datagram the socket can receive: no larger buffer is ever allocated."""
    if state._family in (socket.AF_INET, socket.AF_INET6):
        return _MAX_DATAGRAM
    try:  # a Unix datagram is bounded by the receive buffer
        rcvbuf = int(state._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
    except OSError:
        return _MAX_DATAGRAM
    return max(_MAX_DATAGRAM, rcvbuf)


def addr_pair(addr: Any) -> tuple[str, int]:
    """A sockaddr as ``(host, port)``; a Unix address as ``(path, 0)``."""
    if isinstance(addr, tuple):
        return str(addr[0]), int(addr[1])
    if isinstance(addr, bytes):
        return addr.decode(errors="replace"), 0
    return str(addr), 0


class DatagramCalls(SocketState):
    """``AsyncSocket``'s datagram methods."""

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
                return await _next(self, recv_from_ready, length)
        finally:
            self._reading = False

    async def send_to(
        self, address: str | IpAddress, port: int, data: DataLike, flags: int = 0
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
