"""Constants and enums of SPEC.md (Nim's ``std/net`` names, Python spelling).

Nothing here does I/O. Every enum is shared by both faces: ``duonet.SOBool is duonet.aio.SOBool``.
"""

from __future__ import annotations

import enum
import socket
from typing import Final

__all__ = (
    "BUFFER_SIZE",
    "MAX_LINE_LENGTH",
    "Certificate",
    "IpAddressFamily",
    "Port",
    "ReadLineResult",
    "SOBool",
    "SocketFlag",
)

#: Nim's ``BufferSize``: the smallest read the core makes into a socket's buffer (it reads more
#: when it can: larger reads are faster and change nothing visible).
BUFFER_SIZE: Final = 4000
#: Nim's ``MaxLineLength``: the default ``max_length`` of ``recv_line``.
MAX_LINE_LENGTH: Final = 1_000_000

#: A port number. An alias of :class:`int`, for typing (``Port(80) == 80``).
Port = int
#: A certificate in DER form. An alias of :class:`bytes`.
Certificate = bytes


class IpAddressFamily(enum.Enum):
    """The family of an :class:`~duonet.IpAddress` (Nim's order: IPv6 first)."""

    IPV6 = 0
    IPV4 = 1


class SocketFlag(enum.Flag):
    """Flags of reads, writes and accepts.

    ``SAFE_DISCONN`` (the default of every call that takes flags) turns a disconnection by the peer
    into the "peer closed" result instead of an exception. ``PEEK`` exists for Nim parity; no
    high-level call honours it (as in Nim).
    """

    PEEK = 1
    SAFE_DISCONN = 2


class SOBool(enum.Enum):
    """Boolean socket options. Each member knows its option level and name.

    ``NO_DELAY`` lives at ``IPPROTO_TCP`` (Nim requires you to pass that level yourself; duonet
    knows it). ``REUSE_PORT`` is missing on some platforms: using it there raises ``OSError``.
    """

    ACCEPT_CONN = "SO_ACCEPTCONN"
    BROADCAST = "SO_BROADCAST"
    DEBUG = "SO_DEBUG"
    DONT_ROUTE = "SO_DONTROUTE"
    KEEP_ALIVE = "SO_KEEPALIVE"
    OOB_INLINE = "SO_OOBINLINE"
    REUSE_ADDR = "SO_REUSEADDR"
    REUSE_PORT = "SO_REUSEPORT"
    NO_DELAY = "TCP_NODELAY"

    @property
    def level(self) -> int:
        """The option's default level (``SOL_SOCKET``, or ``IPPROTO_TCP`` for ``NO_DELAY``)."""
        return socket.IPPROTO_TCP if self is SOBool.NO_DELAY else socket.SOL_SOCKET

    @property
    def optname(self) -> int:
        """The option's number on this platform; ``OSError`` if the platform lacks it."""
        value = getattr(socket, self.value, None)
        if value is None:
            raise OSError(f"socket option {self.name} ({self.value}) is not available here")
        return int(value)


class ReadLineResult(enum.Enum):
    """What :meth:`~duonet.Socket.read_line_nowait` found."""

    FULL_LINE = 0
    PARTIAL_LINE = 1
    DISCONNECTED = 2
    NONE = 3
