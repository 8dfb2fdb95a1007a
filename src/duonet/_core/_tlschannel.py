"""duonet's own TLS channel: an ``ssl.SSLObject`` and two ``ssl.MemoryBIO`` over the raw socket.

Theory of operation
-------------------
The shape is trio's ``_ssl.py``: OpenSSL reads ciphertext from the *incoming* BIO and writes
ciphertext into the *outgoing* BIO; this module moves bytes between those BIOs and the kernel with
non-blocking syscalls, and waits through the socket's :class:`~duonet._core._io.Waiter` (so a
``timeout=0`` call raises :class:`anyio.WouldBlock` instead of waiting). It knows nothing about
``AsyncSocket``: it raises what ``ssl`` and the socket raise (``ssl.SSLError`` subclasses,
``OSError``), and the core translates.

Rules kept here:

* **Records stay in order, and none is lost.** Ciphertext leaves the outgoing BIO only into
  one queue (``_unsent``), and the kernel is only ever handed the head of that queue. A send that
  is cancelled or times out while the kernel is full keeps the rest queued; whatever writes next
  (a send, a read that must answer the peer, close_notify) sends it first. The stream stays
  usable: the records were committed (their sequence numbers are used), and they all arrive.
* **One waiter for writability.** A reader that must flush (an answer OpenSSL produced, which
  the peer may wait for) while a writer already waits for the socket to drain leaves the
  flushing to the writer; two tasks that both need the queue drained wait in turn, never both
  on the socket. A reader waits only for its answers (and what is queued before them), never
  for a writer's data or for what a cancelled send left alone: its peer may be waiting for
  this side to read before it reads in turn.
* **Decrypted bytes are never held across an await.** A read returns as soon as it has
  plaintext; answers it produced are handed to the kernel without waiting (what is left goes
  out with the next write, or before the next read waits for the peer), and an error met after
  plaintext was decrypted is kept and raised by the next read, so the plaintext is delivered
  first.
* **Fewer passes per large read.** One wake moves what the kernel holds (up to
  ``_PULL_LIMIT``) into the incoming BIO, and one read returns every record decrypted from it,
  up to ``max_bytes``.
* ``ssl_object`` is public: certificates, ALPN, version and the like are read from it, and
  :attr:`TlsChannel.extra_attributes` gives anyio's ``TLSAttribute`` values from it.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Callable
from typing import Any

import anyio
from anyio.streams.tls import TLSAttribute

from ._io import Waiter

__all__ = ("TlsChannel",)

#: One ``recv`` from the kernel: the most ciphertext a TLS record can take, four times.
_RECV = 1 << 16
#: The most ciphertext one wake moves into the incoming BIO (then OpenSSL decrypts it).
_PULL_LIMIT = 4 * _RECV
#: The most plaintext one ``SSLObject.read`` is asked for: what one record holds (16 KiB; a
#: read returns one record at most). ``read`` allocates what it is asked for before it knows
#: how much it will get, so asking for more only costs memory and a resize.
_READ = 1 << 14
_EMPTY = memoryview(b"")


class TlsChannel:
    """TLS over a connected non-blocking socket, from the handshake on.

    Args:
        ssl_object: the ``SSLObject`` made by ``SSLContext.wrap_bio(incoming, outgoing, ...)``.
        incoming: the BIO OpenSSL reads ciphertext from.
        outgoing: the BIO OpenSSL writes ciphertext into.
        sock: the raw socket (non-blocking).
        waiter: the socket's waiter.

    One reader and one writer may use it at once (the core guarantees no more); everything runs
    in the event loop's thread (an ``SSLObject`` is not thread-safe).
    """

    __slots__ = (
        "_done",
        "_flushed",
        "_flushing",
        "_incoming",
        "_outgoing",
        "_owed",
        "_read_error",
        "_recv_error",
        "_sock",
        "_unsent",
        "_waiter",
        "ssl_object",
    )

    def __init__(
        self,
        ssl_object: ssl.SSLObject,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        sock: socket.socket,
        waiter: Waiter,
    ) -> None:
        self.ssl_object = ssl_object
        self._incoming = incoming
        self._outgoing = outgoing
        self._sock = sock
        self._waiter = waiter
        #: Ciphertext taken from the outgoing BIO that the kernel has not taken yet.
        self._unsent = _EMPTY
        #: How many bytes of ciphertext the kernel has taken so far.
        self._done = 0
        #: ``_done`` must reach this before a read waits: answers of ours the peer may wait for.
        self._owed = 0
        #: A task waits for the socket to become writable (to drain ``_unsent``).
        self._flushing = False
        #: Set when that wait ends, for a second task that needs the queue drained too.
        self._flushed: anyio.Event | None = None
        #: Raised by the next read: an SSL error met after plaintext was decrypted.
        self._read_error: BaseException | None = None
        #: Raised instead of the next recv: an OS error met after ciphertext was received.
        self._recv_error: OSError | None = None

    # -- the outgoing side ----------------------------------------------------------------------

    def push(self) -> bool:
        """Hand the kernel as much of the ciphertext produced so far as it takes now; True when
        nothing is left. Never waits; an ``OSError`` of the socket propagates."""
        outgoing = self._outgoing
        if outgoing.pending:
            data = outgoing.read()
            unsent = self._unsent
            self._unsent = memoryview(bytes(unsent) + data if unsent else data)
        view = self._unsent
        if not view:
            return True
        send = self._sock.send
        size = len(view)
        try:
            while view:
                view = view[send(view) :]
        except (BlockingIOError, InterruptedError):
            self._done += size - len(view)
            self._unsent = view
            return False
        except OSError:
            self._done += size - len(view)
            self._unsent = view
            raise
        self._done += size
        self._unsent = _EMPTY
        return True

    def push_quietly(self) -> None:
        """:meth:`push`, best effort: an error of the socket is ignored (closing, alerts)."""
        try:
            self.push()
        except OSError:
            pass

    async def flush(self, until: int | None = None) -> None:
        """Send every byte of ciphertext produced so far, waiting for the kernel to take it
        (``until``: only until the kernel has taken that many bytes in all)."""
        while not self.push():
            if until is not None and self._done >= until:
                return
            if self._flushing:  # another task waits for the socket: wait for it instead
                if self._waiter.nowait:
                    raise anyio.WouldBlock
                if self._flushed is None:
                    self._flushed = anyio.Event()
                await self._flushed.wait()
                continue
            self._flushing = True
            try:
                await self._waiter.writable()
            finally:
                self._flushing = False
                flushed, self._flushed = self._flushed, None
                if flushed is not None:
                    flushed.set()

    def encrypt(self, data: bytes | bytearray | memoryview) -> bool:
        """Encrypt ``data`` into the outgoing BIO, sending nothing yet; False if the session
        must read first (TLS 1.2 renegotiation: use :meth:`send`). Raises ``ssl.SSLError``."""
        try:
            self.ssl_object.write(data)
        except ssl.SSLWantReadError:
            return False
        except ssl.SSLError:
            self._broken()
            raise
        return True

    def send_nowait(self, data: bytes | bytearray | memoryview) -> bool | None:
        """Encrypt all of ``data`` and hand it to the kernel, never waiting.

        True: all of it went out. False: it is encrypted (committed to the stream) but part of it
        is queued: :meth:`flush` sends the rest. None: nothing was done (ciphertext of an earlier
        send is still queued or being flushed, or the session must read first): use
        :meth:`send`. Raises ``ssl.SSLError`` (the session failed) or the socket's ``OSError``.
        """
        if self._unsent or self._flushing or self._outgoing.pending:
            return None
        if not self.encrypt(data):
            return None
        return self.push()

    async def send(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt all of ``data`` and send it (after whatever was still queued).

        Raises ``ssl.SSLError`` (the session failed) or the socket's ``OSError``.
        """
        while not self.encrypt(data):
            await self.flush()
            await self._pull_or_wait()
        await self.flush()

    def send_close_notify(self) -> None:
        """Queue our close_notify and hand it to the kernel without waiting (best effort)."""
        try:
            self.ssl_object.unwrap()
        except (ssl.SSLError, ValueError):
            pass  # SSLWantReadError: ours is queued; the peer's is not awaited
        try:
            self.push()  # after what a cancelled send left
        except OSError:
            pass

    async def send_close_notify_fully(self) -> None:
        """Our close_notify, sent in full (what a cancelled send left goes first); a peer
        already gone is no error. The peer's close_notify is not awaited."""
        self._unwrap()
        try:
            await self.flush()
        except OSError:
            pass  # the peer is gone: it has nothing left to read

    def _unwrap(self) -> None:
        try:
            self.ssl_object.unwrap()
        except (ssl.SSLError, ValueError):
            pass  # SSLWantReadError: ours is queued; the peer's is not awaited

    # -- the incoming side ----------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Give OpenSSL ciphertext received elsewhere (b"": the end of the stream)."""
        if data:
            self._incoming.write(data)
        else:
            self._incoming.write_eof()

    def pull(self) -> bool:
        """Move the ciphertext the kernel holds into the incoming BIO, never waiting; False if
        there was none. The end of the stream is given to OpenSSL, which says at the next read
        whether close_notify came first. Raises the socket's ``OSError``."""
        error = self._recv_error
        if error is not None:
            self._recv_error = None
            raise error
        incoming = self._incoming
        if incoming.eof:
            return False
        recv = self._sock.recv
        got = 0
        while got < _PULL_LIMIT:
            try:
                data = recv(_RECV)
            except (BlockingIOError, InterruptedError):
                return got > 0
            except OSError as exc:
                if got:  # what came before the error is decrypted first
                    self._recv_error = exc
                    return True
                self._broken()
                raise
            if not data:
                incoming.write_eof()
                return True
            incoming.write(data)
            got += len(data)
            if len(data) < _RECV:  # a short read: the kernel has nothing more
                break
        return True

    async def _pull_or_wait(self) -> None:
        if not self.pull():
            await self._waiter.readable()

    def _broken(self) -> None:
        # The session failed: later reads report the end instead of waiting for more.
        self._incoming.write_eof()
        self._outgoing.write_eof()

    def _answer(self) -> None:
        """Hand the kernel, without waiting, what a read made OpenSSL say (a key update); what
        it does not take yet is owed: the next read that must wait sends it first."""
        if self._outgoing.pending:
            try:
                if not self.push():
                    self._owed = self._done + len(self._unsent)
            except OSError as exc:
                self._recv_error = exc  # reported by the next read, after this one's plaintext

    def _read_more(self, sink: Callable[[bytes], object], got: int, max_bytes: int) -> int:
        """Hand ``sink`` every record already received, up to ``max_bytes`` in all (``got``
        so far); the new total."""
        sslobj = self.ssl_object
        incoming = self._incoming
        while got < max_bytes and (sslobj.pending() or incoming.pending):
            try:
                more = sslobj.read(min(max_bytes - got, _READ))
            except ssl.SSLWantReadError:
                break
            except ssl.SSLError as exc:
                self._broken()
                self._read_error = exc  # the next read raises it
                break
            if not more:
                break  # close_notify: the next read returns b"" again
            sink(more)
            got += len(more)
            del more
        return got

    def _check_read_error(self) -> None:
        error = self._read_error
        if error is not None:
            self._read_error = None
            raise error

    async def receive(self, max_bytes: int) -> bytes:
        """1 to ``max_bytes`` bytes of plaintext; ``b""`` once the peer's close_notify came.

        Raises what :meth:`receive_into` raises.
        """
        chunks: list[bytes] = []
        await self.receive_into(chunks.append, max_bytes)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def receive_into(self, sink: Callable[[bytes], object], max_bytes: int) -> int:
        """Decrypt 1 to ``max_bytes`` bytes, handing them to ``sink`` record by record before
        returning (no copy, nothing held across an await); the count, 0 once the peer's
        close_notify came.

        Raises:
            ssl.SSLZeroReturnError: the peer's close_notify, after ours (``send_eof``).
            ssl.SSLEOFError, ssl.SSLError: the stream ended without close_notify
                (``UNEXPECTED_EOF_WHILE_READING``), or the session failed.
            OSError: the socket's error (a reset ...).
        """
        self._check_read_error()
        read = self.ssl_object.read
        size = min(max_bytes, _READ)
        while True:
            try:
                data = read(size)
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError:
                self._broken()
                raise
            else:
                break
            if self._outgoing.pending or self._owed > self._done:
                await self._flush_before_read()
            await self._pull_or_wait()
        got = len(data)
        if got:
            sink(data)
            del data  # (freed before the next record is read)
            if got < max_bytes:
                got = self._read_more(sink, got, max_bytes)
        self._answer()
        return got

    async def _flush_before_read(self) -> None:
        # What OpenSSL said goes out before we wait for the peer, who may be waiting for it
        # (renegotiation); in order, so after what a cancelled send left, but not what a writer
        # queues meanwhile, nor a cancelled send's rest alone (the peer may be waiting for us to
        # read before it reads). A writer already waiting for the socket sends it anyway.
        try:
            if not self.push():
                self._owed = max(self._owed, self._done + len(self._unsent))
                if not self._flushing:
                    await self.flush(until=self._owed)
        except OSError:
            self._broken()
            raise

    def receive_nowait_into(self, sink: Callable[[bytes], object], max_bytes: int) -> int | None:
        """:meth:`receive_into` from what the kernel already holds, never waiting: ``None`` if
        no full record is in."""
        self._check_read_error()
        read = self.ssl_object.read
        size = min(max_bytes, _READ)
        while True:
            try:
                data = read(size)
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError:
                self._broken()
                raise
            else:
                break
            self.push()
            if not self.pull():
                return None
        got = len(data)
        if got:
            sink(data)
            del data  # (freed before the next record is read)
            if got < max_bytes:
                got = self._read_more(sink, got, max_bytes)
        self._answer()
        return got

    def receive_nowait(self, max_bytes: int) -> bytes | None:
        """:meth:`receive` from what the kernel already holds, never waiting: ``None`` if no
        full record is in."""
        chunks: list[bytes] = []
        if self.receive_nowait_into(chunks.append, max_bytes) is None:
            return None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    # -- queries --------------------------------------------------------------------------------

    @property
    def extra_attributes(self) -> dict[Any, Callable[[], Any]]:
        """anyio's ``TLSAttribute`` values, from :attr:`ssl_object`."""
        sslobj = self.ssl_object
        return {
            TLSAttribute.alpn_protocol: sslobj.selected_alpn_protocol,
            TLSAttribute.channel_binding_tls_unique: sslobj.get_channel_binding,
            TLSAttribute.cipher: sslobj.cipher,
            TLSAttribute.peer_certificate: lambda: sslobj.getpeercert(False),
            TLSAttribute.peer_certificate_binary: lambda: sslobj.getpeercert(True),
            TLSAttribute.server_side: lambda: sslobj.server_side,
            TLSAttribute.shared_ciphers: lambda: (
                sslobj.shared_ciphers() if sslobj.server_side else None
            ),
            TLSAttribute.standard_compatible: lambda: True,
            TLSAttribute.ssl_object: lambda: sslobj,
            TLSAttribute.tls_version: sslobj.version,
        }
