"""Stream writes of ``AsyncSocket``: ``send``, ``try_send``, ``send_eof``, ``send_file``.

Each write checks its arguments before any I/O and holds the write token for its whole run (a
second writer gets ``BusyError``); the bytes go out through the socket's transport
(:mod:`duonet._core._transport`), which resumes after partial writes and says what a vanished peer
means under the call's flags.
"""

from __future__ import annotations

import errno
import socket
import ssl
from typing import Any

from .._args import DataLike, check_bytes_view, check_flags, check_timeout
from .._enums import SocketFlag
from .._errors import BusyError, is_disconnection_error
from ._sendfile import send_file
from ._state import SAFE_DISCONN, SocketState

__all__ = ("StreamWrites",)

_NO_FLAGS = SocketFlag(0)


class StreamWrites(SocketState):
    """``AsyncSocket``'s stream writes."""

    async def send(
        self, data: DataLike, flags: SocketFlag = SAFE_DISCONN, timeout: float | None = None
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
                await self._transport.send(self, view, flags)
        finally:
            self._writing = False

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
        return await send_file(self, file, offset, count, timeout)

    async def try_send(self, data: DataLike) -> bool:
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
