"""Transports: what moves a socket's bytes between the kernel (or TLS) and its buffer.

A socket's semantics (lines, exact sizes, flags, deadlines, busy guards) are ``AsyncSocket``'s and
the same for every kind of socket; underneath, a transport moves the bytes. A transport holds no
reference to its socket (every method is handed the socket's state), so a socket is freed as soon
as it is dropped, without waiting for the cycle collector: one plain transport serves every plain
socket, and a TLS transport holds only its channel.

* :class:`PlainStream`: TCP and Unix stream sockets, non-blocking syscalls and the socket's
  waiter. The receive/retry loop (:meth:`PlainStream._read`) is written once, for reads into the
  buffer and reads straight into the caller's memory.
* :class:`TlsStream`: the same socket behind duonet's own TLS channel
  (:class:`~duonet._core._tlschannel.TlsChannel`); put in place when a handshake completes.
* :class:`Datagrams`: UDP and Unix datagram sockets; reads are the stream's (one datagram per
  read), a send is one datagram.

Errors: a disconnection that the call's flags allow becomes the end of the stream (fed to the
buffer); anything else is raised, named with the socket's address (``_errors.py`` translates).
"""

from __future__ import annotations

import socket
import ssl
from typing import Any

from .._enums import SocketFlag
from .._errors import is_disconnection_error, tls_read_error, tls_send_error
from ._io import send_all
from ._state import CHUNK, SAFE_DISCONN, SocketState, Transport
from ._streams import pending_lf
from ._tlschannel import TlsChannel

__all__ = ("Datagrams", "PlainStream", "TlsStream", "transport_for")


def transport_for(state: SocketState) -> Transport:
    """The transport of a new (not yet TLS) socket: by its type."""
    return DATAGRAMS if state._type == socket.SOCK_DGRAM else PLAIN_STREAM


class PlainStream:
    """A plain stream socket: bytes straight from and to the kernel."""

    __slots__ = ()
    direct = True

    async def fill(self, s: SocketState, flags: SocketFlag, limit: int = CHUNK) -> bool:
        """Read one chunk (at most ``limit`` bytes) into the buffer; False once the peer has
        closed. Cancel-safe: what the kernel returns is fed to the buffer before any wait."""
        buf = s._buf
        if buf.eof or (s._peer_gone and s._gone_nowait()):
            return False
        if s._drained:  # the kernel was found empty, or emptied: wait before asking again
            s._drained = False
            if not s._waiter.nowait:  # (timeout=0 takes what arrived meanwhile, never waits)
                await s._waiter.readable()
        # The first try here, the retry loop only if the kernel has nothing yet: a request/
        # response protocol's every line comes here once, and the loop is a coroutine more.
        try:
            data = s._sock.recv(limit if limit >= CHUNK else self._exact(s, limit))
        except (BlockingIOError, InterruptedError):
            data = await self._read(s, None, limit, flags)
        except OSError as exc:
            s._nowait_error(exc, flags)  # the end of the stream under flags, or raised
            return False
        else:
            if not data:
                s._eof(flags)
        if data:
            # A short read emptied the kernel: the next read waits first instead of asking
            # the kernel again for nothing (a request/response protocol's every line).
            s._drained = len(data) < limit
            buf.feed(data)
            return True
        return False

    async def read_into(self, s: SocketState, target: memoryview, flags: SocketFlag) -> int:
        """One read straight into ``target`` (the buffer is empty); 0 at the end."""
        return await self._read(s, target, 0, flags) or 0

    async def _read(
        self, s: SocketState, target: memoryview | None, limit: int, flags: SocketFlag
    ) -> Any:
        """The receive/retry loop: a read into ``target``, or (None) of at most ``limit``
        bytes, until the kernel answers; a falsy answer is the end of the stream (recorded in
        the buffer)."""
        sock = s._sock
        while True:
            try:
                if target is None:
                    got: Any = sock.recv(self._exact(s, limit))
                else:
                    got = sock.recv_into(target)
            except (BlockingIOError, InterruptedError):
                await s._waiter.readable()
                continue
            except OSError as exc:
                s._nowait_error(exc, flags)  # the end of the stream under flags, or raised
                return None
            if not got:
                s._eof(flags)
            return got

    def _exact(self, s: SocketState, limit: int) -> int:
        """How much a read of ``limit`` bytes asks the kernel for: one more when an exact
        (unbuffered) read starts with the \\n that completes a \\r\\n (state, not data: the
        buffer drops it). Raises ``BlockingIOError`` if the kernel holds nothing."""
        if limit < CHUNK and pending_lf(s) and s._sock.recv(1, socket.MSG_PEEK) == b"\n":
            return limit + 1
        return limit

    def pull_nowait(
        self, s: SocketState, flags: SocketFlag = SAFE_DISCONN, limit: int = CHUNK
    ) -> bool:
        """Move what the kernel already holds (at most ``limit`` bytes) into the buffer, never
        waiting; True if bytes were added. A disconnection under ``flags`` reads as the end of
        the stream; any other error is raised (the kernel reports it only once)."""
        if s._buf.eof or s._closed or s._gone_nowait():
            return False
        try:
            data = s._sock.recv(self._exact(s, limit))
        except (BlockingIOError, InterruptedError):
            s._drained = True
            return False
        except OSError as exc:
            s._nowait_error(exc, flags)
            return False
        if data:
            s._buf.feed(data)
            return True
        s._eof(flags)
        return False

    pull_nowait_in_loop = pull_nowait

    async def send(self, s: SocketState, view: memoryview, flags: SocketFlag) -> None:
        """Send all of ``view``; a peer gone under ``SAFE_DISCONN`` makes it return quietly
        (and the next read gives the end of the stream)."""
        try:
            rest = self._send_nowait(s, view)
            if rest is not None:
                await self._send(s, rest)
        except OSError as exc:
            if is_disconnection_error(flags, exc.errno or 0) and not s._closed:
                s._peer_gone = True
                return
            raise s._os_error(exc, "sending to") from exc

    def _send_nowait(self, s: SocketState, view: memoryview) -> memoryview | None:
        """What the kernel takes at once (usually all: then None, and no coroutine more), or
        what is left for :meth:`_send`."""
        if not view:
            return None
        try:
            sent = s._sock.send(view)
        except (BlockingIOError, InterruptedError):
            return view
        return None if sent == len(view) else view[sent:]

    async def _send(self, s: SocketState, view: memoryview) -> None:
        await send_all(s._sock, s._waiter, view)


class Datagrams(PlainStream):
    """A datagram socket: a read is one datagram (truncated to the size asked for), a send is
    one datagram, even an empty one."""

    __slots__ = ()

    def _send_nowait(self, s: SocketState, view: memoryview) -> memoryview | None:
        try:
            s._sock.send(view)  # one datagram, even an empty one: whole or not at all
        except (BlockingIOError, InterruptedError):
            return view
        return None

    async def _send(self, s: SocketState, view: memoryview) -> None:
        while True:
            try:
                s._sock.send(view)
                return
            except (BlockingIOError, InterruptedError):
                await s._waiter.writable()


class TlsStream:
    """A stream socket behind TLS: plaintext is fed to the buffer as it is decrypted, and the
    channel is used from the loop's thread only (an ``SSLObject`` is not thread-safe)."""

    __slots__ = ("channel",)
    direct = False

    def __init__(self, channel: TlsChannel) -> None:
        self.channel = channel

    async def fill(self, s: SocketState, flags: SocketFlag, limit: int = CHUNK) -> bool:
        buf = s._buf
        if buf.eof or s._gone_nowait():
            return False
        while True:
            # An exact read (unbuffered) first takes the \n that may complete a \r\n alone.
            lf_first = limit < CHUNK and pending_lf(s)
            try:
                got = await self.channel.receive_into(buf.feed, 1 if lf_first else limit)
            except (ssl.SSLError, OSError) as exc:
                return self._read_error(s, exc, flags)
            if not got:  # the peer's close_notify
                buf.feed_eof()
                return False
            if not (lf_first and not buf):
                return True

    async def read_into(self, s: SocketState, target: memoryview, flags: SocketFlag) -> int:
        raise AssertionError("TLS reads go through the buffer")  # (direct is False)

    def pull_nowait(
        self, s: SocketState, flags: SocketFlag = SAFE_DISCONN, limit: int = CHUNK
    ) -> bool:
        return False  # any thread may call this: the channel needs an owner (pull_nowait_in_loop)

    def pull_nowait_in_loop(
        self, s: SocketState, flags: SocketFlag = SAFE_DISCONN, limit: int = CHUNK
    ) -> bool:
        """Decrypt what the kernel already holds into the buffer, never waiting.

        True if plaintext was added. A closed or truncated stream is fed to the buffer as the
        end of the stream under ``flags`` (``SAFE_DISCONN``); other errors raise as an awaited read
        would. In the loop's thread, or in a caller's thread that owns the channel (see
        :mod:`duonet._core._fastpath`). Records we must answer (a TLS 1.3 key update) are
        handed to the kernel without waiting, and what it does not take goes out with the next
        write.
        """
        if s._buf.eof or s._closed or s._gone_nowait():
            return False
        try:
            got = self.channel.receive_nowait_into(s._buf.feed, limit)
        except (ssl.SSLError, OSError) as exc:
            return self._read_error(s, exc, flags)
        if got is None:
            return False  # nothing more has arrived: nothing was consumed
        if not got:
            s._buf.feed_eof()
            return False
        return True

    def _read_error(self, s: SocketState, exc: OSError, flags: SocketFlag) -> bool:
        """An error of a TLS read: False (fed as the end of the stream) or raised, as
        :func:`~duonet._errors.tls_read_error` says."""
        error = tls_read_error(exc, flags, s._describe(), s._closed)
        if error is None:
            s._buf.feed_eof()
            return False
        raise error from exc

    async def send(self, s: SocketState, view: memoryview, flags: SocketFlag) -> None:
        """Send all of ``view`` after what is still queued (an empty view: just that)."""
        if s._peer_gone:  # an earlier send found the peer gone (the TLS stream is broken)
            s._peer_went_away(flags)
            return
        try:
            if view:
                await self.channel.send(view)
            else:
                await self.channel.flush()
        except OSError as exc:  # (ssl.SSLError included)
            self._send_failed(s, exc, flags)

    def send_nowait(self, s: SocketState, view: memoryview, flags: SocketFlag) -> memoryview | None:
        """Send all of ``view`` without waiting; only while the caller owns the channel (see
        :mod:`duonet._core._fastpath`).

        Returns None when all of it went out (or, under ``SAFE_DISCONN``, the peer is gone),
        else what an awaited :meth:`send` must still do: ``view`` itself (nothing was sent), or
        an empty view (the records are encrypted and queued: sending nothing flushes them).
        """
        if s._peer_gone or not view:
            return view  # the awaited send says what that means
        try:
            done = self.channel.send_nowait(view)
        except OSError as exc:  # (ssl.SSLError included)
            self._send_failed(s, exc, flags)
            return None
        if done is None:
            return view
        return None if done else view[len(view) :]

    def _send_failed(self, s: SocketState, exc: OSError, flags: SocketFlag) -> None:
        """A failed TLS send: returns quietly if the peer is gone under ``SAFE_DISCONN``, else
        raises the translated error."""
        if (
            not isinstance(exc, ssl.SSLError)
            and is_disconnection_error(SAFE_DISCONN, exc.errno or 0)
            and not s._closed
        ):
            # The TLS stream is broken for good: later reads see the end of the stream (as
            # a plain socket's do after a reset), whatever this call's flags.
            s._peer_gone = True
            if SAFE_DISCONN in flags:
                return
        raise tls_send_error(exc, s._describe(), s._closed) from exc


#: The transports of plain sockets: they hold nothing of their own, so all sockets share them.
PLAIN_STREAM = PlainStream()
DATAGRAMS = Datagrams()
