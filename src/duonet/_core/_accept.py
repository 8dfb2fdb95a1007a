"""Taking clients from a listener's backlog: the raw accepts under ``accept``.

A client is a new socket of the listener's own class, buffered like it. These run below TLS: a
TLS listener (:mod:`duonet._core._tls`) takes its clients here and handshakes them itself.
"""

from __future__ import annotations

import socket
from typing import Any

from .._enums import SocketFlag
from .._errors import is_disconnection_error
from ._resolve import endpoint
from ._state import S

__all__ = ("accept_plain", "accept_raw_nowait")


def accept_raw_nowait(listener: S, flags: SocketFlag, inheritable: bool) -> tuple[S, str] | None:
    """The next client waiting in the backlog, or None (never waits)."""
    while True:
        try:
            conn, addr = listener._sock.accept()
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as exc:
            if is_disconnection_error(flags, exc.errno or 0):
                continue
            raise listener._os_error(exc, "accepting on") from exc
        return _accepted(listener, conn, addr, inheritable)


async def accept_plain(listener: S, flags: SocketFlag, inheritable: bool) -> tuple[S, str]:
    """The next client, waiting for one. Under ``SAFE_DISCONN`` a client that vanished before
    it was taken is skipped."""
    sock = listener._sock
    while True:
        try:
            conn, addr = sock.accept()
        except (BlockingIOError, InterruptedError):
            await listener._waiter.readable()
            continue
        except OSError as exc:
            if is_disconnection_error(flags, exc.errno or 0) and not listener._closed:
                continue
            raise listener._os_error(exc, "accepting on") from exc
        return _accepted(listener, conn, addr, inheritable)


def _accepted(listener: S, conn: socket.socket, addr: Any, inheritable: bool) -> tuple[S, str]:
    kind = (listener._family, listener._type)  # the client's, known: no conversions
    client = type(listener)._adopt(conn, listener._buffered, inheritable, kind)
    client._unconnected = False
    if isinstance(addr, tuple):
        text = str(addr[0])
        if text.startswith("::ffff:") and "." in text:
            text = text[7:]
        client._peer = endpoint(str(addr[0]), int(addr[1]))
    else:
        text = listener._format_addr(addr) if addr else ""
        client._peer = text or "unnamed unix socket"
    return client, text
