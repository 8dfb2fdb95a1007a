"""TLS in the core: handshakes, TLS listeners, no-wait decryption, certificate queries.

Theory of operation
-------------------
Data flows through duonet's own :class:`~duonet._core._tlschannel.TlsChannel` (an
``SSLObject`` and two ``MemoryBIO`` over the raw socket). Its first use is the handshake, driven
here (:class:`_Handshake`) as a resumable object, for three reasons:

* a failed handshake must still send its alert to the peer (or the peer would hang until TCP
  closes);
* a TLS listener must run its clients' handshakes concurrently, and ``accept`` must be able to
  return one client while others are still half-way, without losing them: a handshake here is a
  resumable object (its channel, with the bytes not yet sent, survives a cancelled ``await``),
  parked on the listener until the next ``accept`` drives it on;
* STARTTLS: bytes the peer sent right after the upgrade command may already sit in the socket's
  buffer; they are fed to the handshake instead of being lost.

When a handshake completes, its channel becomes the socket's transport (``_transport.TlsStream``).

Closing is the channel's: ``send_eof()`` sends close_notify in full
(``TlsChannel.send_close_notify_fully``) and then shuts the write side down; reading goes on,
and the peer's close_notify that answers it is the end of the stream. ``close()`` sends
close_notify and does not wait for the peer's (an idle peer might never answer). A peer that
closes without close_notify reads as closed under ``SAFE_DISCONN`` and as
``SslError("... truncated ...")`` without it (see ``_transport.TlsStream``).
"""

from __future__ import annotations

import collections
import os
import ssl
import sys
from typing import Any, Generic

import anyio

from .._args import check_address, check_timeout, describe
from .._enums import SocketFlag
from .._errors import SocketClosedError, SslError, ssl_error_from
from .._sslcontext import SslContext, SslHandshakeType
from ._accept import accept_plain, accept_raw_nowait
from ._state import S, SocketState
from ._tlschannel import TlsChannel
from ._transport import TlsStream

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

__all__ = (
    "ListenerState",
    "client_handshake",
    "peer_certificates",
    "psk_identity",
    "tls_accept",
    "wrap_connected_socket",
    "wrap_socket",
)


_HANDSHAKE_ERRORS = (ssl.SSLError, OSError)


class _Handshake:
    """One TLS handshake on a socket; safe to cancel at any ``await`` and resume later."""

    def __init__(
        self,
        sock: SocketState,
        ctx: SslContext,
        server_side: bool,
        hostname: str | None,
        leftover: bytes = b"",
    ) -> None:
        self.sock = sock
        self.ctx = ctx
        incoming = ssl.MemoryBIO()
        outgoing = ssl.MemoryBIO()
        self.sslobj = ctx._ssl_context_for(server_side).wrap_bio(
            incoming, outgoing, server_side=server_side, server_hostname=hostname
        )
        self.channel = TlsChannel(self.sslobj, incoming, outgoing, sock._sock, sock._waiter)
        if leftover:
            self.channel.feed(leftover)
        self.psk_identity = ""

    def _step(self) -> None:
        """One ``do_handshake``; raises ``ssl.SSLWantReadError`` until the peer has said more."""
        with self.ctx._capture_psk_identity() as captured:
            try:
                self.sslobj.do_handshake()
            finally:  # TLS 1.3 asks for the PSK in an early step, not the last one
                if captured:
                    self.psk_identity = captured[-1]

    def _feed(self, data: bytes) -> None:
        """Give the handshake what a read returned (b"": the end of the stream, or a reset
        that ``connect`` took from the kernel)."""
        if not data:
            code = self.sock._reset_errno
            if code:
                self.sock._reset_errno = 0
                raise OSError(code, os.strerror(code)) from None
        self.channel.feed(data)

    def advance_nowait(self) -> bool:
        """Take the handshake as far as the bytes already received allow, never waiting.

        True once it is complete and its last flight handed to the kernel; raises what
        :meth:`run` would raise.
        """
        raw = self.sock._sock
        channel = self.channel
        while True:
            try:
                self._step()
            except ssl.SSLWantReadError:
                channel.push()
                try:
                    data = raw.recv(65536)
                except (BlockingIOError, InterruptedError):
                    return False
                self._feed(data)
                continue
            except ssl.SSLError:
                channel.push_quietly()  # the alert: tell the peer why, before we close
                raise
            return channel.push()  # the rest goes out when run() resumes

    async def run(self) -> None:
        """Drive the handshake to its end; raises what the ``ssl`` module or the socket raised."""
        raw = self.sock._sock
        channel = self.channel
        while True:
            try:
                self._step()
            except ssl.SSLWantReadError:
                await channel.flush()
                try:
                    data = raw.recv(65536)
                except (BlockingIOError, InterruptedError):
                    await self.sock._waiter.readable()
                    continue
                self._feed(data)
                continue
            except ssl.SSLError:
                channel.push_quietly()  # the alert: tell the peer why, before we close
                raise
            await channel.flush()
            return

    def install(self) -> None:
        """Make the socket a TLS socket over this completed handshake."""
        sock = self.sock
        sock._tls = self.channel
        sock._transport = TlsStream(self.channel)
        sock._tls_handshaken = True
        sock._psk_identity = self.psk_identity


def _as_core(sock: Any) -> SocketState:
    core = getattr(sock, "_aio", sock)  # a blocking Socket holds its AsyncSocket
    if not isinstance(core, SocketState):
        raise TypeError(f"expected a duonet socket, got {type(sock).__name__}")
    return core


def wrap_socket(ctx: SslContext, sock: Any) -> None:
    """Make ``sock`` (blocking or async, not yet connected) a TLS socket.

    No handshake happens now: a client handshakes in ``connect`` (SNI and verification against
    the host given there); a listening socket hands out clients from ``accept`` whose handshake is
    done. For a socket that is already connected, use :func:`wrap_connected_socket`.

    Raises:
        SslError: the socket is already wrapped, or already connected.
    """
    core = _as_core(sock)
    if not isinstance(ctx, SslContext):
        raise TypeError(f"expected an SslContext, got {type(ctx).__name__}")
    if core._ssl_context is not None:
        raise SslError(f"socket {core._describe()} is already wrapped with TLS")
    if core._peer and not core._listening:
        raise SslError(
            f"socket {core._describe()} is already connected: use wrap_connected_socket, which "
            "handshakes now"
        )
    core._ssl_context = ctx


async def wrap_connected_socket(
    ctx: SslContext,
    sock: Any,
    handshake: SslHandshakeType,
    hostname: str = "",
    timeout: float | None = None,
) -> None:
    """Wrap a connected socket with TLS and handshake now (STARTTLS).

    ``handshake`` says which side this is. On the client side, ``hostname`` is sent as SNI and
    the server's certificate is verified against it (unless the context verifies nothing). Bytes
    already received but not read (the start of the peer's handshake, say) are used, not lost.

    Raises:
        SslError: the handshake failed (the reason and the peer are in the message).
        TimeoutError: it took longer than ``timeout``.
    """
    core = _as_core(sock)
    if not isinstance(ctx, SslContext):
        raise TypeError(f"ctx must be an SslContext, not {describe(ctx)}")
    if not isinstance(handshake, SslHandshakeType):
        raise TypeError(
            f"handshake must be SslHandshakeType.CLIENT or .SERVER, not {describe(handshake)}"
        )
    if hostname:
        hostname = str(check_address(hostname, "hostname"))
    elif not isinstance(hostname, str):
        raise TypeError(f"hostname must be a str, not {describe(hostname)}")
    check_timeout(timeout)
    if core._ssl_context is not None:
        raise SslError(f"socket {core._describe()} is already wrapped with TLS")
    core._check_open()
    if core._unconnected:
        raise core._not_connected()
    server_side = handshake is SslHandshakeType.SERVER
    core._begin_read()
    try:
        leftover = core._buf.take(len(core._buf))
        core._ssl_context = ctx
        core._tls_server_side = server_side
        peer_name = None if server_side else (hostname or None)
        state = _Handshake(core, ctx, server_side, peer_name, leftover)
        with core._deadline(timeout, "TLS handshake"):
            try:
                await state.run()
            except _HANDSHAKE_ERRORS as exc:
                raise ssl_error_from(exc, core._describe()) from exc
        state.install()
    finally:
        core._reading = False


async def client_handshake(core: SocketState, host: str) -> None:
    """The client handshake of a wrapped socket, run by ``connect`` inside its deadline."""
    assert core._ssl_context is not None
    state = _Handshake(core, core._ssl_context, False, host or None)
    try:
        await state.run()
    except _HANDSHAKE_ERRORS as exc:
        raise ssl_error_from(exc, core._describe()) from exc
    state.install()


class _Pending(Generic[S]):
    """A client accepted by a TLS listener whose handshake is not finished yet.

    ``remaining`` is what is left of its ``handshake_timeout``: the clock runs only while an
    ``accept`` drives the handshake, so a client parked while the server is busy elsewhere is
    not timed out for the server's delay.
    """

    __slots__ = ("address", "client", "handshake", "remaining")

    def __init__(self, client: S, address: str, handshake: _Handshake, limit: float):
        self.client = client
        self.address = address
        self.handshake = handshake
        self.remaining = limit


class ListenerState(Generic[S]):
    """What a TLS listener keeps between ``accept`` calls."""

    def __init__(self) -> None:
        self.pending: list[_Pending[S]] = []
        self.ready: collections.deque[tuple[S, str] | BaseException] = collections.deque()

    def close(self) -> None:
        for item in self.pending:
            item.client._close_now()
        for ready in self.ready:
            if not isinstance(ready, BaseException):
                ready[0]._close_now()
        self.pending.clear()
        self.ready.clear()


async def tls_accept(listener: S, flags: SocketFlag, inheritable: bool) -> tuple[S, str]:
    """Accept on a TLS listener: the next client whose handshake completed.

    Handshakes run concurrently while ``accept`` waits; one that stalls delays nobody. A client
    whose handshake fails or times out is closed and skipped under ``SAFE_DISCONN``; without it,
    its ``SslError`` is raised. Handshakes still under way when ``accept`` returns (or times out)
    are kept and driven on by the next ``accept``: no client is lost. Every call first takes
    each handshake as far as what has already arrived allows, so ``timeout=0`` hands out a
    client whose handshake is in.
    """
    state: ListenerState[S] = listener._tls_state
    if not state.ready:
        _advance_nowait(listener, state, flags, inheritable)
    while not state.ready:
        await _drive_handshakes(listener, state, flags, inheritable)
    item = state.ready.popleft()
    if isinstance(item, BaseException):
        raise item
    return item


def _park(listener: S, state: ListenerState[S], client: S, address: str) -> _Pending[S]:
    """Start the server handshake of a client just accepted by a TLS listener."""
    ctx = listener._ssl_context
    assert ctx is not None
    client._ssl_context = ctx
    client._tls_server_side = True
    try:
        handshake = _Handshake(client, ctx, True, None)
    except ssl.SSLError as exc:
        client._close_now()
        raise ssl_error_from(exc, client._describe()) from exc
    item = _Pending(client, address, handshake, float(ctx.handshake_timeout))
    state.pending.append(item)
    return item


def _settle(
    state: ListenerState[S], item: _Pending[S], error: BaseException | None, flags: SocketFlag
) -> bool:
    """A handshake ended: hand the client (or its error) to ``accept``; True if it got one."""
    state.pending.remove(item)
    if error is None:
        item.handshake.install()
        state.ready.append((item.client, item.address))
        return True
    item.client._close_now()
    if SocketFlag.SAFE_DISCONN in flags:
        return False
    state.ready.append(error)
    return True


def _handshake_error(item: _Pending[Any], exc: BaseException) -> SslError:
    error = ssl_error_from(exc, item.client._describe())
    error.__cause__ = exc
    return error


def _advance_nowait(
    listener: S, state: ListenerState[S], flags: SocketFlag, inheritable: bool
) -> None:
    """Take every handshake (the backlog's included) as far as the bytes already received
    allow, without waiting (nor spending any client's ``handshake_timeout``)."""
    while True:
        accepted = accept_raw_nowait(listener, flags, inheritable)
        if accepted is None:
            break
        _park(listener, state, *accepted)
    for item in list(state.pending):
        try:
            if not item.handshake.advance_nowait():
                continue
        except _HANDSHAKE_ERRORS as exc:
            _settle(state, item, _handshake_error(item, exc), flags)
            continue
        _settle(state, item, None, flags)


async def _drive_handshakes(
    listener: S, state: ListenerState[S], flags: SocketFlag, inheritable: bool
) -> None:
    ctx = listener._ssl_context
    assert ctx is not None
    limit = float(ctx.handshake_timeout)

    async def drive(item: _Pending[S]) -> None:
        error: BaseException | None = None
        start = anyio.current_time()
        try:
            with anyio.CancelScope(deadline=start + item.remaining) as scope:
                try:
                    await item.handshake.run()
                except _HANDSHAKE_ERRORS as exc:
                    error = _handshake_error(item, exc)
        finally:
            item.remaining -= anyio.current_time() - start
        if scope.cancelled_caught:
            error = SslError(
                f"TLS handshake with {item.client._describe()} timed out after {limit:g} s"
            )
        if listener._closed:  # close() already closed every parked client
            item.client._close_now()
            return
        if _settle(state, item, error, flags):
            tg.cancel_scope.cancel()

    async def acceptor() -> None:
        while True:
            client, address = await accept_plain(listener, flags, inheritable)
            tg.start_soon(drive, _park(listener, state, client, address))

    try:
        async with anyio.create_task_group() as tg:
            for item in list(state.pending):
                tg.start_soon(drive, item)
            tg.start_soon(acceptor)
    except BaseExceptionGroup as group:
        if listener._closed:
            raise SocketClosedError(f"socket {listener._describe()}") from None
        raise _single(group) from None


def _single(group: BaseExceptionGroup[BaseException]) -> BaseException:
    # The acceptor is the only task that can fail (drive() catches its errors): unwrap it.
    errors: tuple[BaseException, ...] = tuple(group.exceptions)
    while len(errors) == 1 and isinstance(errors[0], BaseExceptionGroup):
        errors = tuple(errors[0].exceptions)
    whole: BaseException = group
    return errors[0] if len(errors) == 1 else whole


def peer_certificates(core: SocketState) -> list[bytes]:
    """DER certificates of the peer, leaf first (the verified chain on Python >= 3.13)."""
    tls = core._tls
    if tls is None:
        return []
    sslobj = tls.ssl_object
    if sys.version_info >= (3, 13):
        chain = sslobj.get_verified_chain()  # DER bytes
        if chain:
            return [bytes(cert) for cert in chain]
    leaf = sslobj.getpeercert(binary_form=True)
    return [leaf] if leaf else []


def psk_identity(core: SocketState) -> str:
    """The PSK identity the client sent (server side), ``""`` if none."""
    if core._ssl_context is None:
        raise SslError("Socket is not an SSL socket.")
    return core._psk_identity
