"""Conformance scenarios for duonet stream sockets (TCP and Unix), written once for both faces.

Each scenario is an ``async def (face, transport)`` written against the
:class:`duonet.aio.AsyncSocket` API:

* :class:`AsyncFace` hands out real ``AsyncSocket`` objects;
* :class:`BlockingFace` hands out :class:`BlockingAdapter` objects that wrap a blocking
  :class:`duonet.Socket`. Its I/O methods are ``async def`` and run the blocking call in a worker
  thread, and its plain methods (options, addresses, ``read_line_nowait`` ...) are called directly,
  as SPEC's "Pinned details" lists them. So ``await s.recv_line(timeout=0.2)`` works on both faces
  and passes the very same arguments.

``transport`` is ``"tcp"``, ``"unix"`` or ``"tls"``: scenarios registered for all three
(:data:`TRANSPORTS`) run over a TCP connection on 127.0.0.1, over a Unix socket, and over TLS on a
TCP connection on 127.0.0.1; those whose peer is a TCP one (:data:`TCP_AND_TLS`) run over TCP with
and without TLS; a comment says why any other stays off TLS. Under ``"tls"`` the duonet socket is
wrapped (``wrap_socket``) before it connects or listens, and the stdlib peer ``conn`` is a
:class:`TlsPeer`: the same calls (``sendall``, ``recv``, ``shutdown(SHUT_WR)``) carried in TLS
records, a half-close being close_notify then FIN. The certificates come from a trustme CA of the
test process. ``tests/test_conformance.py`` runs each scenario on the async face under asyncio and
trio and on the blocking face with its portal on asyncio and trio.

Rules every scenario follows (STYLE §11-13):

* traffic only to 127.0.0.1, ::1, localhost, or Unix sockets in a short directory under /tmp;
* every blocking step has a timeout, and the test wraps the whole scenario in a hang guard;
* a timeout is made certain (the peer stalls, or nothing is sent), and the assertions are about
  state (what stays buffered, what the next call returns), never about durations;
* every socket is closed and every thread joined.

The peer of most scenarios is a plain stdlib socket driven from the test itself (``conn``), so a
bug cannot hide on both ends. Expectations follow SPEC.md; where SPEC deliberately differs from Nim
(docs/nim-mapping.rst lists those places), a comment gives Nim's result.
"""

from __future__ import annotations

import array
import builtins
import contextlib
import functools
import hashlib
import os
import select
import shutil
import socket
import ssl
import stat
import struct
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
import pytest

import duonet
import duonet.aio
from conftest import HAS_IPV6, needs_ipv6, peer, resetter, sender, shared_tls_files
from duonet import ReadLineResult, SOBool, SocketFlag, SslContext, SslCVerifyMode, SslError

__all__ = (
    "SCENARIOS",
    "AsyncFace",
    "BlockingAdapter",
    "BlockingFace",
    "Face",
    "TlsPeer",
    "scenario_params",
)

#: A timeout that certainly expires: nothing the call waits for is sent before it does.
SHORT = 0.1
#: A timeout that never expires in a passing run; it only bounds a failing one.
LONG = 5.0
#: What "promptly" means where SPEC says it (generous: the machine may be busy).
PROMPT = 1.5

FULL_LINE = ReadLineResult.FULL_LINE
PARTIAL_LINE = ReadLineResult.PARTIAL_LINE
DISCONNECTED = ReadLineResult.DISCONNECTED
NONE = ReadLineResult.NONE
NO_FLAGS = SocketFlag(0)

Sock = Any  # an AsyncSocket, or a BlockingAdapter (the same API)


# -- faces ----------------------------------------------------------------------------------------


async def _in_thread(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking call in a worker thread (abandoned if the test's hang guard fires)."""
    return await anyio.to_thread.run_sync(
        functools.partial(func, *args, **kwargs), abandon_on_cancel=True
    )


def _in_plain_thread(func: Callable[[], Any]) -> Any:
    """``func()`` in a new thread (one without an event loop), waited for right here."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append((True, func()))
        except BaseException as exc:  # handed to the caller
            outcome.append((False, exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(LONG)
    assert outcome, f"{func!r} did not return"
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def _threaded(name: str) -> Callable[..., Awaitable[Any]]:
    async def method(self: BlockingAdapter, *args: Any, **kwargs: Any) -> Any:
        return await _in_thread(getattr(self.sock, name), *args, **kwargs)

    method.__name__ = name
    return method


def _plain(name: str) -> Callable[..., Any]:
    def method(self: BlockingAdapter, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.sock, name)(*args, **kwargs)

    method.__name__ = name
    return method


class BlockingAdapter:
    """A blocking :class:`duonet.Socket` seen through the ``AsyncSocket`` API.

    Awaited methods run the blocking method of the same name, with the same arguments, in a worker
    thread; plain methods are called directly (they never block).
    """

    def __init__(self, sock: duonet.Socket) -> None:
        assert isinstance(sock, duonet.Socket)
        self.sock = sock

    connect = _threaded("connect")
    connect_unix = _threaded("connect_unix")
    send = _threaded("send")
    try_send = _threaded("try_send")
    recv = _threaded("recv")
    recv_into = _threaded("recv_into")
    recv_line = _threaded("recv_line")
    read_line = _threaded("read_line")
    skip = _threaded("skip")

    bind_addr = _plain("bind_addr")
    bind_unix = _plain("bind_unix")
    listen = _plain("listen")
    get_sock_opt = _plain("get_sock_opt")
    set_sock_opt = _plain("set_sock_opt")
    get_local_addr = _plain("get_local_addr")
    get_peer_addr = _plain("get_peer_addr")
    get_fd = _plain("get_fd")
    fileno = _plain("fileno")
    get_socket_error = _plain("get_socket_error")
    has_data_buffered = _plain("has_data_buffered")
    is_ssl = _plain("is_ssl")
    got_handshake = _plain("got_handshake")
    get_peer_certificates = _plain("get_peer_certificates")
    get_psk_identity = _plain("get_psk_identity")

    def read_line_nowait(self) -> Any:
        if not self.sock.is_ssl():
            return self.sock.read_line_nowait()
        # The TLS state lives in the portal's loop, so this one hops there; a blocking program
        # makes the call from a thread that runs no event loop (this one runs the test's): so
        # does the test, waiting for it (the call never blocks).
        return _in_plain_thread(self.sock.read_line_nowait)

    async def accept(self, *args: Any, **kwargs: Any) -> BlockingAdapter:
        return BlockingAdapter(await _in_thread(self.sock.accept, *args, **kwargs))

    async def accept_addr(self, *args: Any, **kwargs: Any) -> tuple[BlockingAdapter, str]:
        client, address = await _in_thread(self.sock.accept_addr, *args, **kwargs)
        return BlockingAdapter(client), address

    async def close(self) -> None:
        # Shielded: cleanup must close the socket even when the hang guard has fired.
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.sock.close)

    async def __aenter__(self) -> BlockingAdapter:
        entered = await _in_thread(self.sock.__enter__)
        assert entered is self.sock
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self.sock.__exit__, *exc_info)


class Face:
    """How a scenario makes sockets: the async face or the blocking one."""

    name = ""

    def new_socket(self, *args: Any, **kwargs: Any) -> Sock:
        raise NotImplementedError

    async def dial(self, *args: Any, **kwargs: Any) -> Sock:
        raise NotImplementedError

    def from_socket(self, sock: socket.socket, buffered: bool = True) -> Sock:
        raise NotImplementedError

    async def drain_lines(self, s: Sock, **kwargs: Any) -> list[bytes]:
        """``recv_line(**kwargs)`` until ``b""`` (in one worker thread on the blocking face)."""
        raise NotImplementedError

    async def settle(self) -> None:
        """Let a call started in another task (or thread) reach its wait."""
        raise NotImplementedError


class AsyncFace(Face):
    name = "async"

    def new_socket(self, *args: Any, **kwargs: Any) -> duonet.aio.AsyncSocket:
        return duonet.aio.new_async_socket(*args, **kwargs)

    async def dial(self, *args: Any, **kwargs: Any) -> duonet.aio.AsyncSocket:
        return await duonet.aio.dial(*args, **kwargs)

    def from_socket(self, sock: socket.socket, buffered: bool = True) -> duonet.aio.AsyncSocket:
        return duonet.aio.AsyncSocket.from_socket(sock, buffered=buffered)

    async def drain_lines(self, s: Sock, **kwargs: Any) -> list[bytes]:
        lines = []
        while line := await s.recv_line(**kwargs):
            lines.append(line)
        return lines

    async def settle(self) -> None:
        await anyio.wait_all_tasks_blocked()


class BlockingFace(Face):
    name = "blocking"

    def new_socket(self, *args: Any, **kwargs: Any) -> BlockingAdapter:
        return BlockingAdapter(duonet.new_socket(*args, **kwargs))

    async def dial(self, *args: Any, **kwargs: Any) -> BlockingAdapter:
        return BlockingAdapter(await _in_thread(duonet.dial, *args, **kwargs))

    def from_socket(self, sock: socket.socket, buffered: bool = True) -> BlockingAdapter:
        return BlockingAdapter(duonet.Socket.from_socket(sock, buffered=buffered))

    async def drain_lines(self, s: Sock, **kwargs: Any) -> list[bytes]:
        def drain() -> list[bytes]:
            lines = []
            while line := s.sock.recv_line(**kwargs):
                lines.append(line)
            return lines

        return list(await _in_thread(drain))

    async def settle(self) -> None:
        # A thread blocked inside the portal cannot be observed. Every scenario that settles
        # expects the same outcome whichever order the steps take; the pause only makes the
        # interesting order (the other call already waiting) the usual one.
        await anyio.sleep(0.1)


# -- the registry ---------------------------------------------------------------------------------

ScenarioFunc = Callable[[Face, str], Awaitable[None]]


@dataclass(frozen=True)
class Scenario:
    func: ScenarioFunc
    transports: tuple[str, ...]
    marks: tuple[Any, ...]
    faces: tuple[str, ...]


SCENARIOS: dict[str, Scenario] = {}
#: Every stream transport: the scenario's semantics hold whatever carries the bytes.
TRANSPORTS = ("tcp", "unix", "tls")
#: TCP and Unix only: each use says why the scenario stays off TLS.
BOTH = ("tcp", "unix")
#: Over TCP on 127.0.0.1, with and without TLS (the peer or the addresses are TCP's).
TCP_AND_TLS = ("tcp", "tls")


def scenario(
    transports: tuple[str, ...] = ("tcp",),
    marks: tuple[Any, ...] = (),
    faces: tuple[str, ...] = ("async", "blocking"),
) -> Callable[[ScenarioFunc], ScenarioFunc]:
    def register(func: ScenarioFunc) -> ScenarioFunc:
        assert func.__name__ not in SCENARIOS, func.__name__
        SCENARIOS[func.__name__] = Scenario(func, transports, marks, faces)
        return func

    return register


def scenario_params(face: str) -> list[Any]:
    """``pytest.param(name, transport)`` for every scenario of ``face``, on each transport."""
    return [
        pytest.param(name, transport, id=f"{name}-{transport}", marks=sc.marks)
        for name, sc in SCENARIOS.items()
        if face in sc.faces
        for transport in sc.transports
    ]


# -- helpers --------------------------------------------------------------------------------------


def _dup(fd: int) -> socket.socket:
    """A stdlib socket on a duplicate of ``fd`` (to look at a socket duonet owns)."""
    return socket.socket(fileno=os.dup(fd))


def _ready(fileno: int, write: bool = False) -> bool:
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fileno, select.POLLOUT if write else select.POLLIN)
        return bool(poller.poll(0))
    rlist, wlist, _ = select.select([] if write else [fileno], [fileno] if write else [], [], 0)
    return bool(rlist or wlist)


async def until_readable(fileno: int, timeout: float = LONG) -> None:
    """Wait until the kernel holds something to read on ``fileno`` (data, EOF or an error)."""
    with anyio.fail_after(timeout):
        while not _ready(fileno):
            await anyio.sleep(0.002)


_TCP_CLOSE_WAIT = 8  # linux/tcp_states.h: the peer's FIN has been received


async def until_peer_closed(s: Sock, timeout: float = LONG) -> None:
    """Wait until the peer's close (FIN) has reached the kernel side of ``s``.

    A Unix socket learns of the peer's shutdown synchronously. On TCP, the FIN is delivered
    right after the data; watch the connection's state (Linux ``TCP_INFO``) rather than guess.
    """
    with _dup(s.get_fd()) as raw:
        if raw.family == getattr(socket, "AF_UNIX", None) or not hasattr(socket, "TCP_INFO"):
            return
        with anyio.fail_after(timeout):
            while raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0] != _TCP_CLOSE_WAIT:
                await anyio.sleep(0.002)


async def writable_within(sock: socket.socket, timeout: float) -> bool:
    with anyio.move_on_after(timeout):
        while not _ready(sock.fileno(), write=True):
            await anyio.sleep(0.005)
        return True
    return False


async def later(delay: float, func: Callable[..., Any], *args: Any) -> None:
    await anyio.sleep(delay)
    func(*args)


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    chunks = []
    while size:
        data = conn.recv(min(size, 1 << 20))
        if not data:
            break
        chunks.append(data)
        size -= len(data)
    return b"".join(chunks)


async def peer_read(conn: socket.socket, size: int) -> bytes:
    """Read ``size`` bytes (fewer at EOF) from the stdlib peer, in a worker thread."""
    return bytes(await _in_thread(_recv_exactly, conn, size))


@contextlib.contextmanager
def short_tmpdir() -> Iterator[str]:
    """A directory under /tmp whose paths fit in ``sun_path`` (pytest's tmp_path may not)."""
    path = tempfile.mkdtemp(prefix="dn-", dir="/tmp")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def hanging_listener() -> Iterator[int]:
    """The port of a ``listen(0)`` listener whose accept queue is full: a connect to it hangs."""
    fillers: list[socket.socket] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        try:
            for _ in range(8):
                filler = socket.socket()
                fillers.append(filler)
                filler.setblocking(False)
                filler.connect_ex(address)
                _, writable, _ = select.select([], [filler], [], 0.3)
                if not writable:
                    break  # this connect hangs: the queue is full, so will the next one
            else:
                pytest.skip("this kernel completes connects to a full listen(0) queue")
            yield address[1]
        finally:
            for filler in fillers:
                filler.close()


def closed_port() -> int:
    """A loopback TCP port with no listener (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- TLS: contexts, the stdlib peer ---------------------------------------------------------------


def duonet_client_context() -> SslContext:
    """A duonet client context (``PEER``) trusting the test CA only."""
    return duonet.new_context(ca_file=shared_tls_files().ca)


def duonet_server_context() -> SslContext:
    """A duonet server context with the localhost/127.0.0.1/::1 certificate."""
    files = shared_tls_files()
    return duonet.new_context(
        verify_mode=SslCVerifyMode.NONE, cert_file=files.cert, key_file=files.key
    )


def stdlib_server_context() -> ssl.SSLContext:
    """The stdlib peer's server context. It sends no TLS 1.3 session tickets: a ticket arriving
    after the handshake would make the duonet client's socket readable with no data in it."""
    files = shared_tls_files()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(files.cert, files.key)
    ctx.num_tickets = 0
    ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)  # see TlsPeer.recv
    return ctx


def stdlib_client_context() -> ssl.SSLContext:
    """The stdlib peer's client context: verifies duonet's server against the test CA."""
    ctx = ssl.create_default_context(cafile=shared_tls_files().ca)
    ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)  # see TlsPeer.recv
    return ctx


def wrap(ctx: SslContext, s: Sock) -> None:
    """``wrap_socket(ctx, s)`` on either face (the same function in both modules)."""
    assert duonet.wrap_socket is duonet.aio.wrap_socket
    duonet.wrap_socket(ctx, s.sock if isinstance(s, BlockingAdapter) else s)


class TlsPeer:
    """The stdlib end of a TLS connection, with the calls the scenarios make on a stdlib socket.

    An :class:`ssl.SSLObject` over memory BIOs on a blocking socket (5 s timeout): unlike
    :class:`ssl.SSLSocket`, it can half-close (``shutdown(SHUT_WR)`` sends close_notify, then
    FIN, and reading goes on). The handshake runs in a thread of its own from the start, so a
    scenario can connect it and then ``accept`` on a duonet listener; every call waits for it.
    ``recv`` gives ``b""`` only after close_notify: duonet closing without one raises
    :class:`ssl.SSLEOFError` here.
    """

    def __init__(
        self,
        raw: socket.socket,
        ctx: ssl.SSLContext,
        *,
        server_side: bool,
        hostname: str | None = None,
    ) -> None:
        self.raw = raw
        raw.settimeout(LONG)
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = ctx.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side, server_hostname=hostname
        )
        #: Guards the SSLObject and its BIOs, and keeps the records in order on the wire.
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._handshake = threading.Thread(target=self._run_handshake, daemon=True)
        self._handshake.start()

    def _run_handshake(self) -> None:
        try:
            while True:
                with self._lock:
                    try:
                        self._tls.do_handshake()
                    except ssl.SSLWantReadError:
                        self._flush()
                    else:
                        self._flush()
                        return
                self._pull()
        except BaseException as exc:  # raised by the next call
            self._error = exc

    def _flush(self) -> None:
        if data := self._outgoing.read():
            self.raw.sendall(data)

    def _pull(self) -> None:
        data = self.raw.recv(1 << 16)
        with self._lock:
            if data:
                self._incoming.write(data)
            else:
                self._incoming.write_eof()

    def _handshaken(self) -> None:
        self._handshake.join(LONG)
        assert not self._handshake.is_alive(), "the stdlib peer's TLS handshake did not finish"
        if self._error is not None:
            raise self._error

    def sendall(self, data: bytes) -> None:
        self._handshaken()
        with self._lock:
            view = memoryview(data)
            while view:
                view = view[self._tls.write(view) :]
            self._flush()

    def recv(self, size: int) -> bytes:
        self._handshaken()
        while True:
            with self._lock:
                try:
                    return self._tls.read(size)
                except ssl.SSLWantReadError:
                    self._flush()
                except ssl.SSLZeroReturnError:  # close_notify, after ours
                    return b""
            self._pull()

    def shutdown(self, how: int) -> None:
        assert how == socket.SHUT_WR, "the peer only half-closes"
        self._handshaken()
        with self._lock:
            with contextlib.suppress(ssl.SSLWantReadError):  # duonet's close_notify: not now
                self._tls.unwrap()
            self._flush()
        self.raw.shutdown(socket.SHUT_WR)

    def settimeout(self, timeout: float | None) -> None:
        self.raw.settimeout(timeout)

    def getsockname(self) -> Any:
        return self.raw.getsockname()

    def close(self) -> None:
        """Close the socket (TCP FIN, no close_notify), ending a handshake still under way."""
        if self._handshake.is_alive():
            with contextlib.suppress(OSError):
                self.raw.shutdown(socket.SHUT_RDWR)
        self._handshake.join(LONG)
        self.raw.close()

    def __enter__(self) -> TlsPeer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def family_of(transport: str) -> int:
    return socket.AF_UNIX if transport == "unix" else socket.AF_INET


def new_stream(face: Face, transport: str, buffered: bool = True) -> Sock:
    """A socket of ``transport``, not connected (under TLS: wrapped with the client context)."""
    if transport == "unix":
        return face.new_socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, buffered=buffered)
    s = face.new_socket(buffered=buffered)
    if transport == "tls":
        wrap(duonet_client_context(), s)
    return s


@contextlib.asynccontextmanager
async def opened(s: Sock) -> AsyncIterator[Sock]:
    try:
        yield s
    finally:
        await s.close()


@contextlib.asynccontextmanager
async def duonet_listener(
    face: Face,
    transport: str = "tcp",
    host: str = "127.0.0.1",
    buffered: bool = True,
    ctx: SslContext | None = None,
) -> AsyncIterator[tuple[Sock, Any]]:
    """A listening duonet socket and what to connect to: a port (TCP) or a path (Unix).

    Under TLS it is wrapped with ``ctx``, by default :func:`duonet_server_context`.
    """
    with short_tmpdir() as directory:
        if transport == "unix":
            lst = new_stream(face, transport, buffered)
        else:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            lst = face.new_socket(family, buffered=buffered)
        async with opened(lst):
            if transport == "unix":
                where: Any = os.path.join(directory, "l")
                lst.bind_unix(where)
            else:
                lst.bind_addr(0, host)
                where = lst.get_local_addr()[1]
            if transport == "tls":
                wrap(ctx or duonet_server_context(), lst)
            assert lst.is_ssl() is (transport == "tls")
            lst.listen()
            yield lst, where


async def accept_connected(lst: Sock, s: Sock, transport: str, where: Any) -> Sock:
    """Connect ``s`` to the duonet listener ``lst`` and return the accepted side. Under TLS the
    two handshakes need each other: ``connect`` and ``accept`` run at once."""
    if transport != "tls":
        await connect_to(s, transport, where)
        return await lst.accept(timeout=LONG)
    accepted: list[Sock] = []

    async def take() -> None:
        accepted.append(await lst.accept(timeout=LONG))

    async with anyio.create_task_group() as tg:
        tg.start_soon(take)
        await connect_to(s, transport, where)
    return accepted[0]


async def connect_to(s: Sock, transport: str, where: Any, host: str = "127.0.0.1") -> None:
    if transport == "unix":
        await s.connect_unix(where)
    else:
        await s.connect(host, where, timeout=LONG)


def stdlib_client(transport: str, where: Any, host: str = "127.0.0.1") -> Any:
    """A stdlib socket connected to a listener (the handshake completes in the backlog).

    Under TLS, a :class:`TlsPeer` whose TLS handshake runs in its thread, for the listener's
    ``accept`` to complete.
    """
    family = family_of(transport)
    if family == socket.AF_INET and ":" in host:
        family = socket.AF_INET6
    client = socket.socket(family, socket.SOCK_STREAM)
    try:
        client.settimeout(LONG)
        client.connect(where if transport == "unix" else (host, where))
        if transport == "tls":
            return TlsPeer(client, stdlib_client_context(), server_side=False, hostname=host)
    except BaseException:
        client.close()
        raise
    return client


@contextlib.asynccontextmanager
async def stream_pair(
    face: Face, transport: str = "tcp", *, side: str = "client", buffered: bool = True
) -> AsyncIterator[tuple[Sock, socket.socket]]:
    """A duonet socket connected to a stdlib socket ``conn`` (blocking, 5 s timeout).

    ``side="client"``: the duonet socket connected; ``"server"``: it was accepted by a duonet
    listener. Under TLS, ``conn`` is a :class:`TlsPeer` whose handshake is done.
    """
    with contextlib.ExitStack() as stack:
        if side == "client":
            directory = stack.enter_context(short_tmpdir())
            listener = stack.enter_context(socket.socket(family_of(transport), socket.SOCK_STREAM))
            listener.settimeout(LONG)
            if transport == "unix":
                where: Any = os.path.join(directory, "p")
                listener.bind(where)
            else:
                listener.bind(("127.0.0.1", 0))
                where = listener.getsockname()[1]
            listener.listen()
            s = new_stream(face, transport, buffered)
            try:
                if transport == "tls":
                    conn = await _tls_server_peer(listener, s, where)
                else:
                    await connect_to(s, transport, where)
                    conn, _ = listener.accept()
            except BaseException:
                await s.close()
                raise
        else:
            async with duonet_listener(face, transport, buffered=buffered) as (lst, where):
                conn = stdlib_client(transport, where)
                try:
                    s = await lst.accept(timeout=LONG)
                except BaseException:
                    conn.close()
                    raise
        stack.enter_context(conn)
        conn.settimeout(LONG)
        if transport == "tls":
            await _in_thread(conn._handshaken)  # both ends are done
        assert s.is_ssl() is (transport == "tls")
        async with opened(s):
            yield s, conn


async def _tls_server_peer(listener: socket.socket, s: Sock, port: int) -> TlsPeer:
    """Connect the wrapped ``s`` to the stdlib ``listener``, whose end becomes a TLS server."""
    peers: list[TlsPeer] = []
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(connect_to, s, "tls", port)
            raw, _ = await _in_thread(listener.accept)
            try:
                peers.append(TlsPeer(raw, stdlib_server_context(), server_side=True))
            except BaseException:
                raw.close()
                raise
    except BaseException:
        for conn in peers:
            conn.close()
        raise
    return peers[0]


# -- connecting, addresses, options ---------------------------------------------------------------


# Not TLS (nor Unix): the address forms connect takes; TLS checks IP SANs in test_tls.py.
@scenario()
async def connect_by_ip(face: Face, transport: str) -> None:
    async with duonet_listener(face) as (lst, port):
        for address in ("127.0.0.1", duonet.parse_ip_address("127.0.0.1"), duonet.ipv4_loopback()):
            async with opened(face.new_socket()) as s:
                await s.connect(address, port, timeout=LONG)
                async with opened(await lst.accept(timeout=LONG)) as c:
                    await s.send(b"ping\n")
                    assert await c.recv_line(timeout=LONG) == b"ping"
                    await c.send(b"pong\r\n")
                    assert await s.recv_line(timeout=LONG) == b"pong"
                    assert s.get_peer_addr() == ("127.0.0.1", port)
                    assert c.get_peer_addr() == s.get_local_addr()
                    assert c.get_local_addr() == ("127.0.0.1", port)


# Not TLS: name resolution; TLS verifies "localhost" in test_tls.py.
@scenario()
async def connect_by_localhost(face: Face, transport: str) -> None:
    async with duonet_listener(face) as (lst, port), opened(face.new_socket()) as s:
        await s.connect("localhost", port, timeout=LONG)
        async with opened(await lst.accept(timeout=LONG)) as c:
            assert s.get_peer_addr() == ("127.0.0.1", port)
            await c.send("hello from localhost\n")
            assert await s.recv_line(timeout=LONG) == b"hello from localhost"


# Not TLS: IPv6 addressing; TLS over ::1 is test_tls.py's.
@scenario(marks=(needs_ipv6,))
async def connect_ipv6(face: Face, transport: str) -> None:
    async with duonet_listener(face, host="::1") as (lst, port):
        for address in ("::1", duonet.ipv6_loopback()):
            async with opened(face.new_socket(socket.AF_INET6)) as s:
                await s.connect(address, port, timeout=LONG)
                client, text = await lst.accept_addr(timeout=LONG)
                async with opened(client) as c:
                    assert text == "::1"  # Nim prints "0.0.0.0" (§3.4 #16)
                    assert c.get_peer_addr() == ("::1", s.get_local_addr()[1])
                    assert s.get_peer_addr() == ("::1", port)
                    await s.send(b"six\n")
                    assert await c.recv_line(timeout=LONG) == b"six"


def _ipv4_only_name() -> str | None:
    """``localhost`` if it resolves to IPv4 only (for an IPv6 socket: through mapped addresses)."""
    try:
        families = {info[0] for info in socket.getaddrinfo("localhost", 1)}
    except OSError:
        return None
    return "localhost" if families == {socket.AF_INET} else None


# Not TLS: IPv4-mapped addressing, before any TLS byte.
@scenario(marks=(needs_ipv6,))
async def ipv6_socket_reaches_an_ipv4_name(face: Face, transport: str) -> None:
    """An AF_INET6 socket reaches a name with IPv4 addresses only through ::ffff:a.b.c.d (Nim
    resolves with AI_V4MAPPED there), as it does an IPv4 literal."""
    name = _ipv4_only_name()
    async with duonet_listener(face) as (lst, port):
        for address in ("127.0.0.1", duonet.ipv4_loopback(), name):
            if address is None:
                continue  # this machine's localhost has an IPv6 address: nothing to map
            async with opened(face.new_socket(socket.AF_INET6)) as s:
                await s.connect(address, port, timeout=LONG)
                assert s.get_peer_addr() == ("::ffff:127.0.0.1", port)
                async with opened(await lst.accept(timeout=LONG)) as c:
                    await s.send(b"mapped\n")
                    assert await c.recv_line(timeout=LONG) == b"mapped"


# Not TLS: dial makes plain sockets only.
@scenario()
async def dial_ipv4_and_localhost(face: Face, transport: str) -> None:
    async with duonet_listener(face) as (lst, port):
        for address in ("127.0.0.1", "localhost", duonet.ipv4_loopback()):
            async with (
                opened(await face.dial(address, port, timeout=LONG)) as s,
                opened(await lst.accept(timeout=LONG)) as c,
            ):
                assert s.get_peer_addr() == ("127.0.0.1", port)
                await c.send(b"Hello")
                assert await s.recv(5, timeout=LONG) == b"Hello"
        # dial without a timeout, and unbuffered: the result reads like any socket
        with peer(sender(b"abc", then_close=False)) as p:
            async with opened(await face.dial(p.host, p.port, buffered=False)) as s:
                assert await s.recv(10, timeout=LONG) == b"abc"  # unbuffered: what one read gives
                await s.send(b"!")


# Not TLS: dial makes plain sockets only.
@scenario(marks=(needs_ipv6,))
async def dial_ipv6(face: Face, transport: str) -> None:
    # Nim's tnetdial.nim: an IPv6 server on ::1 sends "Hello"; dial("::1", port) reads it.
    with peer(sender(b"Hello"), family=socket.AF_INET6) as p:
        async with opened(await face.dial("::1", p.port, timeout=LONG)) as s:
            assert await s.recv(5, timeout=LONG) == b"Hello"
            assert s.get_peer_addr() == ("::1", p.port)
    assert not p.errors


# Not TLS: a refused connect ends before any TLS byte.
@scenario()
async def connect_refused(face: Face, transport: str) -> None:
    port = closed_port()
    with pytest.raises(ConnectionRefusedError) as info:
        await face.dial("127.0.0.1", port, timeout=LONG)
    assert "127.0.0.1" in str(info.value)
    assert str(port) in str(info.value)
    with pytest.raises(ConnectionRefusedError) as info:
        await face.dial("localhost", port, timeout=LONG)
    assert str(port) in str(info.value)
    async with opened(face.new_socket()) as s:
        with pytest.raises(ConnectionRefusedError) as info:
            await s.connect("127.0.0.1", port, timeout=LONG)
        assert "127.0.0.1" in str(info.value)
        assert str(port) in str(info.value)


@scenario(transports=TCP_AND_TLS)
async def bind_listen_accept_addr(face: Face, transport: str) -> None:
    async with duonet_listener(face, transport) as (lst, port):
        assert lst.get_local_addr() == ("127.0.0.1", port)
        assert lst.get_sock_opt(SOBool.ACCEPT_CONN)
        client = stdlib_client(transport, port)
        with client:
            conn, text = await lst.accept_addr(timeout=LONG)
            async with opened(conn):
                assert text == "127.0.0.1"
                assert isinstance(text, str)
                assert conn.get_peer_addr() == client.getsockname()
                client.sendall(b"via accept_addr\r\n")
                assert await conn.recv_line(timeout=LONG) == b"via accept_addr"
        # accept() returns the client alone
        client = stdlib_client(transport, port)
        with client:
            async with opened(await lst.accept(timeout=LONG)) as conn:
                await conn.send(b"x")
                assert client.recv(1) == b"x"


# Not TLS: binding only, no connection.
@scenario()
async def bind_addr_any(face: Face, transport: str) -> None:
    # Nim's tnetbind.nim: "" binds every address of the socket's family (no listen: nothing is
    # exposed beyond loopback).
    async with opened(face.new_socket()) as s:
        s.set_sock_opt(SOBool.REUSE_ADDR, True)
        s.bind_addr(0)
        host, port = s.get_local_addr()
        assert host == "0.0.0.0"
        assert port > 0
    async with opened(face.new_socket()) as s:
        s.bind_addr(address="127.0.0.1")
        assert s.get_local_addr()[0] == "127.0.0.1"
    if HAS_IPV6:
        async with opened(face.new_socket(socket.AF_INET6)) as s:
            s.bind_addr(0)
            assert s.get_local_addr()[0] == "::"
        async with opened(face.new_socket(socket.AF_INET6)) as s:
            s.bind_addr(0, "::")
            assert s.get_local_addr()[0] == "::"


# Not TLS: kernel options, read back through a dup of the fd.
@scenario()
async def socket_options(face: Face, transport: str) -> None:
    async with duonet_listener(face) as (lst, port):
        assert lst.get_sock_opt(SOBool.ACCEPT_CONN)
        async with opened(face.new_socket()) as s:
            assert not s.get_sock_opt(SOBool.ACCEPT_CONN)
            for opt in (SOBool.REUSE_ADDR, SOBool.KEEP_ALIVE, SOBool.NO_DELAY):
                s.set_sock_opt(opt, True)
                assert s.get_sock_opt(opt) is True
            await s.connect("127.0.0.1", port, timeout=LONG)
            async with opened(await lst.accept(timeout=LONG)) as c:
                # set before connect, still set after
                for opt in (SOBool.REUSE_ADDR, SOBool.KEEP_ALIVE, SOBool.NO_DELAY):
                    assert s.get_sock_opt(opt) is True, opt
                # NO_DELAY lives at IPPROTO_TCP without being told; the kernel agrees
                with _dup(s.get_fd()) as raw:
                    assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
                    assert raw.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0
                assert s.get_sock_opt(SOBool.NO_DELAY, level=socket.IPPROTO_TCP) is True
                # changed after connect
                s.set_sock_opt(SOBool.NO_DELAY, False)
                s.set_sock_opt(SOBool.KEEP_ALIVE, False)
                assert s.get_sock_opt(SOBool.NO_DELAY) is False
                assert s.get_sock_opt(SOBool.KEEP_ALIVE) is False
                with _dup(s.get_fd()) as raw:
                    assert raw.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
                    assert raw.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
                c.set_sock_opt(SOBool.NO_DELAY, True)
                assert c.get_sock_opt(SOBool.NO_DELAY) is True
                assert not c.get_sock_opt(SOBool.ACCEPT_CONN)
                await s.send(b"still works\n")
                assert await c.recv_line(timeout=LONG) == b"still works"


@scenario(transports=TRANSPORTS)
async def addresses_and_fd(face: Face, transport: str) -> None:
    async with (
        duonet_listener(face, transport) as (lst, where),
        opened(new_stream(face, transport)) as s,
        opened(await accept_connected(lst, s, transport, where)) as c,
    ):
        if transport != "unix":
            assert s.get_local_addr() == c.get_peer_addr()
            assert s.get_peer_addr() == c.get_local_addr() == ("127.0.0.1", where)
        for sock in (s, c, lst):
            fd = sock.get_fd()
            assert isinstance(fd, int)
            assert fd >= 0
            assert sock.fileno() == fd
            assert stat.S_ISSOCK(os.fstat(fd).st_mode)
            assert sock.get_socket_error() == 0
        assert len({s.get_fd(), c.get_fd(), lst.get_fd()}) == 3


def _stdlib_connection(transport: str) -> tuple[socket.socket, socket.socket]:
    """Two connected stdlib sockets (a real TCP connection on loopback, or a Unix pair)."""
    if transport == "unix":
        return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(LONG)
        a = socket.create_connection(server.getsockname(), timeout=LONG)
        try:
            b, _ = server.accept()
        except BaseException:
            a.close()
            raise
    return a, b


# Not TLS: it adopts plain stdlib sockets; TLS on an adopted socket is wrap_connected_socket
# (test_tls.py, STARTTLS).
@scenario(transports=BOTH)
async def from_socket_adopts(face: Face, transport: str) -> None:
    # a connected stdlib socket (Nim's newSocket(fd))
    a, b = _stdlib_connection(transport)
    with a, b:
        b.settimeout(LONG)
        async with opened(face.from_socket(a)) as s:
            b.sendall(b"hello\r\nworld")
            b.shutdown(socket.SHUT_WR)
            assert await s.recv_line(timeout=LONG) == b"hello"
            assert await s.recv(10, timeout=LONG) == b"world"
            assert await s.recv(10, timeout=LONG) == b""
            await s.send(b"adopted\n")
            assert b.recv(100) == b"adopted\n"
            if transport == "tcp":
                assert s.get_peer_addr() == b.getsockname()
        assert b.recv(1) == b""  # closing the adopted socket closed the connection
    # unbuffered
    a, b = _stdlib_connection(transport)
    with a, b:
        async with opened(face.from_socket(a, buffered=False)) as s:
            b.sendall(b"abc")
            await until_readable(s.fileno())
            assert await s.recv(10, timeout=LONG) == b"abc"
    # a listening stdlib socket
    with short_tmpdir() as directory, socket.socket(family_of(transport)) as raw:
        if transport == "unix":
            where: Any = os.path.join(directory, "a")
            raw.bind(where)
        else:
            raw.bind(("127.0.0.1", 0))
            where = raw.getsockname()[1]
        raw.listen()
        async with opened(face.from_socket(raw)) as lst:
            with stdlib_client(transport, where) as client:
                async with opened(await lst.accept(timeout=LONG)) as c:
                    client.sendall(b"via adopted listener\n")
                    assert await c.recv_line(timeout=LONG) == b"via adopted listener"


# -- recv, recv_into ------------------------------------------------------------------------------


@scenario(transports=TRANSPORTS)
async def recv_buffered_waits_for_size(face: Face, transport: str) -> None:
    # Nim §3.4 #10 (buffered): "abc", a pause, 13 bytes, close -> "abcdefghij", "klmnop", "".
    for side in ("client", "server"):
        async with stream_pair(face, transport, side=side) as (s, conn):
            conn.sendall(b"abc")
            await until_readable(s.fileno())

            def rest() -> None:
                conn.sendall(b"defghijklmnop")
                conn.shutdown(socket.SHUT_WR)

            async with anyio.create_task_group() as tg:
                tg.start_soon(later, 0.05, rest)
                assert await s.recv(10, timeout=LONG) == b"abcdefghij"
            assert await s.recv(10, timeout=LONG) == b"klmnop"
            assert await s.recv(10, timeout=LONG) == b""
            assert await s.recv(10, timeout=LONG) == b""


@scenario(transports=TRANSPORTS)
async def recv_unbuffered_returns_one_read(face: Face, transport: str) -> None:
    # Nim §3.4 #10 (unbuffered): "abc" at once, then "defghijklm", "nop", "".
    for side in ("client", "server"):
        async with stream_pair(face, transport, side=side, buffered=False) as (s, conn):
            conn.sendall(b"abc")
            await until_readable(s.fileno())
            assert await s.recv(10, timeout=LONG) == b"abc"
            conn.sendall(b"defghijklmnop")
            await until_readable(s.fileno())
            assert await s.recv(10, timeout=LONG) == b"defghijklm"
            assert await s.recv(10, timeout=LONG) == b"nop"
            conn.shutdown(socket.SHUT_WR)
            assert await s.recv(10, timeout=LONG) == b""
            assert await s.recv(10, timeout=LONG) == b""


@scenario(transports=TRANSPORTS)
async def recv_zero(face: Face, transport: str) -> None:
    async with stream_pair(face, transport) as (s, conn):
        assert await s.recv(0) == b""  # nothing sent, and it does not wait
        assert await s.recv(0, timeout=0) == b""
        assert await s.recv_into(bytearray(4), 0) == 0
        conn.sendall(b"x")
        await until_readable(s.fileno())
        assert await s.recv(0) == b""
        assert await s.recv(1, timeout=LONG) == b"x"
        conn.shutdown(socket.SHUT_WR)
        assert await s.recv(1, timeout=LONG) == b""
        assert await s.recv(0) == b""


@scenario(transports=TRANSPORTS)
async def recv_into_sizes(face: Face, transport: str) -> None:
    async with stream_pair(face, transport) as (s, conn):
        conn.sendall(b"hello world!")
        buf = bytearray(10)
        assert await s.recv_into(buf, timeout=LONG) == 10  # default size: len(buffer)
        assert buf == b"hello worl"
        buf = bytearray(b"......")
        assert await s.recv_into(buf, 2, timeout=LONG) == 2
        assert buf == b"d!...."
        # buffered: fills exactly size bytes, waiting for the rest
        conn.sendall(b"ab")
        await until_readable(s.fileno())
        target = bytearray(6)
        async with anyio.create_task_group() as tg:
            tg.start_soon(later, 0.05, conn.sendall, b"cdef")
            assert await s.recv_into(memoryview(target), timeout=LONG) == 6
        assert target == b"abcdef"
        # after a line read, the rest of the buffer comes first
        conn.sendall(b"line\nrest")
        assert await s.recv_line(timeout=LONG) == b"line"
        target = bytearray(4)
        assert await s.recv_into(target, timeout=LONG) == 4
        assert target == b"rest"
        # partial data, then EOF: what there was, then 0
        conn.sendall(b"xyz")
        conn.shutdown(socket.SHUT_WR)
        target = bytearray(8)
        assert await s.recv_into(target, timeout=LONG) == 3
        assert target[:3] == b"xyz"
        assert await s.recv_into(target, timeout=LONG) == 0


@scenario(transports=TRANSPORTS)
async def recv_into_unbuffered(face: Face, transport: str) -> None:
    async with stream_pair(face, transport, buffered=False) as (s, conn):
        conn.sendall(b"abc")
        await until_readable(s.fileno())
        target = bytearray(10)
        assert await s.recv_into(target, timeout=LONG) == 3
        assert target[:3] == b"abc"
        conn.shutdown(socket.SHUT_WR)
        assert await s.recv_into(target, timeout=LONG) == 0


@scenario(transports=TRANSPORTS)
async def partial_data_then_eof(face: Face, transport: str) -> None:
    for buffered in (True, False):
        async with stream_pair(face, transport, buffered=buffered) as (s, conn):
            conn.sendall(b"hello")
            conn.shutdown(socket.SHUT_WR)
            await until_readable(s.fileno())
            assert await s.recv(10, timeout=LONG) == b"hello"
            assert await s.recv(10, timeout=LONG) == b""
            assert await s.recv_line(timeout=LONG) == b""
            assert await s.skip(1, timeout=LONG) == 0
            assert await s.recv(10, timeout=LONG) == b""


# -- recv_line ------------------------------------------------------------------------------------


async def read_lines(s: Sock, count: int, **kwargs: Any) -> list[bytes]:
    return [await s.recv_line(timeout=LONG, **kwargs) for _ in range(count)]


async def lines_of(
    face: Face, transport: str, data: bytes, count: int, **kwargs: Any
) -> list[list[bytes]]:
    """What ``count`` recv_line calls give for ``data`` then EOF, on every side x buffering."""
    results = []
    for side in ("client", "server"):
        for buffered in (True, False):
            async with stream_pair(face, transport, side=side, buffered=buffered) as (s, conn):
                conn.sendall(data)
                conn.shutdown(socket.SHUT_WR)
                results.append(await read_lines(s, count, **kwargs))
    return results


@scenario(transports=TRANSPORTS)
async def recv_line_terminators(face: Face, transport: str) -> None:
    # Nim §3.4 #1 (b/u): \r\n, \n and a lone \r all end a line; b"" at EOF, again and again.
    expected = [b"abc", b"def", b"ghi", b"jkl", b"", b""]
    for got in await lines_of(face, transport, b"abc\r\ndef\nghi\rjkl\n", 6):
        assert got == expected
    # read_line is the same
    async with stream_pair(face, transport) as (s, conn):
        conn.sendall(b"one\r\ntwo\n")
        conn.shutdown(socket.SHUT_WR)
        assert await s.read_line(timeout=LONG) == b"one"
        assert await s.read_line(timeout=LONG, flags=SocketFlag.SAFE_DISCONN) == b"two"
        assert await s.read_line(timeout=LONG) == b""


@scenario(transports=TRANSPORTS)
async def recv_line_empty_lines(face: Face, transport: str) -> None:
    # Nim §3.4 #2 (b/u): an empty line reads as b"\r\n", whatever ended it.
    expected = [b"\r\n"] * 4 + [b"x", b""]
    for got in await lines_of(face, transport, b"\r\n\n\r\r\nx\n", 6):
        assert got == expected


@scenario(transports=TRANSPORTS)
async def recv_line_cr_cr_lf(face: Face, transport: str) -> None:
    # SPEC: b"a\r\r\nb\n" gives b"a", b"\r\n", b"b".
    for got in await lines_of(face, transport, b"a\r\r\nb\n", 4):
        assert got == [b"a", b"\r\n", b"b", b""]


@scenario(transports=TRANSPORTS)
async def recv_line_partial_last_line(face: Face, transport: str) -> None:
    # Nim §3.4 #3 drops "abc"; SPEC returns it, then b"".
    for got in await lines_of(face, transport, b"abc", 3):
        assert got == [b"abc", b"", b""]
    for got in await lines_of(face, transport, b"x\nabc", 3):
        assert got == [b"x", b"abc", b""]


@scenario(transports=TRANSPORTS)
async def recv_line_cr_then_eof(face: Face, transport: str) -> None:
    # Nim §3.4 #4 raises OSError "No valid socket error code available"; SPEC: the \r ends it.
    for got in await lines_of(face, transport, b"abc\r", 3):
        assert got == [b"abc", b"", b""]


@scenario(transports=TRANSPORTS)
async def recv_line_max_length(face: Face, transport: str) -> None:
    # Nim §3.4 #5 gives "abcd", "efg", "xy" (max_length + 1); SPEC: pieces of at most max_length.
    for got in await lines_of(face, transport, b"abcdefg\nxy\n", 5, max_length=3):
        assert got == [b"abc", b"def", b"g", b"xy", b""]
    # a line of exactly max_length (or a multiple) is not followed by an empty piece
    for got in await lines_of(face, transport, b"abcdef\nxyz\r\nq\n", 5, max_length=3):
        assert got == [b"abc", b"def", b"xyz", b"q", b""]
    # Nim §3.4 #6 uses max_length=0 for 1-byte pieces; SPEC's smallest is 1.
    for got in await lines_of(face, transport, b"abc\n", 4, max_length=1):
        assert got == [b"a", b"b", b"c", b""]


@scenario(transports=TRANSPORTS)
async def recv_line_max_length_validation(face: Face, transport: str) -> None:
    async with stream_pair(face, transport) as (s, conn):
        with pytest.raises(ValueError, match="max_length"):
            await s.recv_line(timeout=LONG, max_length=0)
        conn.sendall(b"kept\n")
        await until_readable(s.fileno())
        with pytest.raises(ValueError, match="max_length"):
            await s.recv_line(timeout=LONG, max_length=0)
        with pytest.raises(ValueError, match="max_length"):
            await s.read_line(timeout=LONG, max_length=-5)
        assert await s.recv_line(timeout=LONG, max_length=1_000) == b"kept"  # nothing consumed


@scenario(transports=TRANSPORTS)
async def recv_line_cr_at_chunk_boundary(face: Face, transport: str) -> None:
    # A lone \r ends the line at once (even at the very end of what arrived); a \n arriving
    # later completes that terminator and is skipped by whatever read comes next.
    async with stream_pair(face, transport) as (s, conn):

        async def line_then(first: bytes, second: bytes) -> None:
            conn.sendall(first)
            await until_readable(s.fileno())
            # timeout 0: the line is complete with what already arrived
            assert await s.recv_line(timeout=0) == first[:-1]
            conn.sendall(second)
            await until_readable(s.fileno())

        await line_then(b"abc\r", b"\ndef\n")
        assert await s.recv_line(timeout=LONG) == b"def"
        await line_then(b"ghi\r", b"\nxyz")
        assert await s.recv(3, timeout=LONG) == b"xyz"
        await line_then(b"m\r", b"\nnop")
        assert await s.skip(2, timeout=LONG) == 2
        assert await s.recv(1, timeout=LONG) == b"p"
        await line_then(b"q\r", b"\nr\n")
        assert s.read_line_nowait() == (FULL_LINE, b"r")
        await line_then(b"s\r", b"\r\nt\n")  # a second \r is a new (empty) line
        assert await s.recv_line(timeout=LONG) == b"\r\n"
        assert await s.recv_line(timeout=LONG) == b"t"
        # the skipped \n alone is no data: a recv waits for the next real byte
        await line_then(b"u\r", b"\n")
        with pytest.raises(TimeoutError):
            await s.recv(1, timeout=SHORT)
        conn.sendall(b"v")
        assert await s.recv(1, timeout=LONG) == b"v"
        # a \r taken by recv (not by a line) does not swallow the next \n
        conn.sendall(b"w\r")
        assert await s.recv(2, timeout=LONG) == b"w\r"
        conn.sendall(b"\nz")
        assert await s.recv(2, timeout=LONG) == b"\nz"
        assert not s.has_data_buffered()


@scenario(transports=TRANSPORTS)
async def recv_into_skips_lf_after_cr(face: Face, transport: str) -> None:
    # SPEC "Pinned details": a \n that completes a lone-\r terminator is skipped by every later
    # read, recv_into included.
    for buffered in (True, False):
        async with stream_pair(face, transport, buffered=buffered) as (s, conn):
            conn.sendall(b"j\r")
            await until_readable(s.fileno())
            assert await s.recv_line(timeout=0) == b"j"
            conn.sendall(b"\nkl")
            await until_readable(s.fileno())
            target = bytearray(2)
            assert await s.recv_into(target, timeout=LONG) == 2
            assert target == b"kl", f"buffered={buffered}"


ONE_BYTE_STREAM = b"one\r\ntwo\nthree\rfour\r\r\nfive\n\nsix\r\n\rseven"
ONE_BYTE_LINES = [
    b"one",
    b"two",
    b"three",
    b"four",
    b"\r\n",
    b"five",
    b"\r\n",
    b"six",
    b"\r\n",
    b"seven",
]


@scenario(transports=TRANSPORTS)
async def recv_line_one_byte_chunks(face: Face, transport: str) -> None:
    # h11's three ways: whole, byte by byte (each byte its own chunk, deterministically), and
    # trickled while a reader waits. All read the same lines.
    async with stream_pair(face, transport) as (s, conn):
        conn.sendall(ONE_BYTE_STREAM)
        conn.shutdown(socket.SHUT_WR)
        assert await face.drain_lines(s, timeout=LONG) == ONE_BYTE_LINES

    # byte by byte, awaited: each byte is in the kernel before recv_line(timeout=0) looks
    async with stream_pair(face, transport) as (s, conn):
        got = []
        for i in range(len(ONE_BYTE_STREAM)):
            conn.sendall(ONE_BYTE_STREAM[i : i + 1])
            await until_readable(s.fileno())
            while True:
                try:
                    got.append(await s.recv_line(timeout=0))
                except TimeoutError:
                    break
        conn.shutdown(socket.SHUT_WR)
        got += await face.drain_lines(s, timeout=LONG)
        assert got == ONE_BYTE_LINES

    # byte by byte, with read_line_nowait
    async with stream_pair(face, transport) as (s, conn):
        got = []
        for i in range(len(ONE_BYTE_STREAM)):
            conn.sendall(ONE_BYTE_STREAM[i : i + 1])
            await until_readable(s.fileno())
            while (result := s.read_line_nowait())[0] is FULL_LINE:
                got.append(result[1])
            assert result == (NONE, b"")
        conn.shutdown(socket.SHUT_WR)
        await until_readable(s.fileno())
        assert s.read_line_nowait() == (PARTIAL_LINE, b"seven")
        assert s.read_line_nowait() == (DISCONNECTED, b"")
        assert got == ONE_BYTE_LINES[:-1]

    # trickled: a reader blocked in recv_line while single bytes arrive
    async with stream_pair(face, transport) as (s, conn):

        async def trickle() -> None:
            for i in range(len(ONE_BYTE_STREAM)):
                conn.sendall(ONE_BYTE_STREAM[i : i + 1])
                await anyio.sleep(0.001)
            conn.shutdown(socket.SHUT_WR)

        async with anyio.create_task_group() as tg:
            tg.start_soon(trickle)
            assert await face.drain_lines(s, timeout=LONG) == ONE_BYTE_LINES


@scenario(transports=TRANSPORTS)
async def recv_line_100k_lines(face: Face, transport: str) -> None:
    terminators = (b"\n", b"\r\n", b"\r")
    lines = []
    for i in range(100_000):
        lines.append(b"" if i % 997 == 0 else b"line %d \x00 end" % i)
    payload = b"".join(
        line + (b"\r\n" if not line else terminators[i % 3]) for i, line in enumerate(lines)
    )
    expected = [line or b"\r\n" for line in lines]

    async with stream_pair(face, transport) as (s, conn):

        def send_all() -> None:
            conn.sendall(payload)
            conn.shutdown(socket.SHUT_WR)

        async with anyio.create_task_group() as tg:
            tg.start_soon(_in_thread, send_all)
            got = await face.drain_lines(s, timeout=LONG)
        assert len(got) == len(expected)
        assert got == expected


# -- read_line_nowait, skip, has_data_buffered ----------------------------------------------------


@scenario(transports=TRANSPORTS)
async def read_line_nowait_states(face: Face, transport: str) -> None:
    async with stream_pair(face, transport) as (s, conn):
        assert s.read_line_nowait() == (NONE, b"")
        conn.sendall(b"full\npart")
        await until_readable(s.fileno())
        assert s.read_line_nowait() == (FULL_LINE, b"full")
        assert s.read_line_nowait() == (NONE, b"")
        assert s.has_data_buffered()  # NONE consumed nothing
        conn.sendall(b"ial\n\r\n")
        await until_readable(s.fileno())
        assert s.read_line_nowait() == (FULL_LINE, b"partial")
        assert s.read_line_nowait() == (FULL_LINE, b"\r\n")
        assert s.read_line_nowait() == (NONE, b"")
        # NONE left "mid" in place for an awaited read
        conn.sendall(b"mid")
        await until_readable(s.fileno())
        assert s.read_line_nowait() == (NONE, b"")
        conn.sendall(b"dle\n")
        assert await s.recv_line(timeout=LONG) == b"middle"
        # the peer closes mid-line
        conn.sendall(b"tail")
        conn.shutdown(socket.SHUT_WR)
        await until_peer_closed(s)  # "tail" and the close have both arrived
        assert s.read_line_nowait() == (PARTIAL_LINE, b"tail")
        assert s.read_line_nowait() == (DISCONNECTED, b"")
        assert s.read_line_nowait() == (DISCONNECTED, b"")
    # a clean close between lines: DISCONNECTED at once
    async with stream_pair(face, transport) as (s, conn):
        conn.sendall(b"last\n")
        conn.shutdown(socket.SHUT_WR)
        await until_peer_closed(s)
        assert s.read_line_nowait() == (FULL_LINE, b"last")
        assert s.read_line_nowait() == (DISCONNECTED, b"")


@scenario(transports=TRANSPORTS)
async def skip_counts(face: Face, transport: str) -> None:
    async with stream_pair(face, transport) as (s, conn):
        conn.sendall(b"abcdef")
        assert await s.skip(3, timeout=LONG) == 3  # Nim §2.12: then recv(3) gives "def"
        assert await s.recv(3, timeout=LONG) == b"def"
        assert await s.skip(0) == 0
        # across buffered lines
        conn.sendall(b"line1\nline2\n")
        assert await s.recv_line(timeout=LONG) == b"line1"
        assert await s.skip(2, timeout=LONG) == 2
        assert await s.recv_line(timeout=LONG) == b"ne2"
        # waits for the bytes it skips
        conn.sendall(b"12")
        async with anyio.create_task_group() as tg:
            tg.start_soon(later, 0.05, conn.sendall, b"345X")
            assert await s.skip(5, timeout=LONG) == 5
        assert await s.recv(1, timeout=LONG) == b"X"
        # Nim §3.4 #14 hangs forever; SPEC: stops at EOF with the count
        conn.sendall(b"abc")
        conn.shutdown(socket.SHUT_WR)
        assert await s.skip(5, timeout=LONG) == 3
        assert await s.skip(1, timeout=LONG) == 0
        assert await s.recv(1, timeout=LONG) == b""


@scenario(transports=TRANSPORTS)
async def has_data_buffered_tracks_buffer(face: Face, transport: str) -> None:
    async with stream_pair(face, transport) as (s, conn):
        assert s.has_data_buffered() is False
        conn.sendall(b"abcdef")
        await until_readable(s.fileno())
        assert s.has_data_buffered() is False  # in the kernel, not yet read
        assert await s.recv(1, timeout=LONG) == b"a"
        assert s.has_data_buffered() is True  # Nim §2.12: true after recv(1) of 6 bytes
        assert await s.recv(5, timeout=LONG) == b"bcdef"
        assert s.has_data_buffered() is False
        conn.sendall(b"x\ny\n")
        await until_readable(s.fileno())
        assert await s.recv_line(timeout=LONG) == b"x"
        assert s.has_data_buffered() is True
        assert await s.recv_line(timeout=LONG) == b"y"
        assert s.has_data_buffered() is False


# -- send, half-close -----------------------------------------------------------------------------


@scenario(transports=TRANSPORTS)
async def send_data_types_and_big(face: Face, transport: str) -> None:
    async with stream_pair(face, transport) as (s, conn):
        await s.send("héllo\n")
        assert await peer_read(conn, 7) == "héllo\n".encode()
        await s.send(bytearray(b"ba"))
        await s.send(memoryview(b"xmvx")[1:3])
        numbers = array.array("H", [1, 2, 3])
        await s.send(numbers)
        await s.send(b"")
        assert await peer_read(conn, 4 + 6) == b"bamv" + numbers.tobytes()
        # a send far larger than the socket buffers arrives whole (partial writes resumed)
        big = os.urandom(1 << 16) * 96  # 6 MiB
        async with anyio.create_task_group() as tg:
            received: list[bytes] = []

            async def read_it() -> None:
                received.append(await peer_read(conn, len(big)))

            tg.start_soon(read_it)
            await s.send(big, timeout=LONG * 2)
        assert hashlib.sha256(received[0]).digest() == hashlib.sha256(big).digest()
        # the same through partial writes with items of 4 bytes: counted in bytes, not items
        words = array.array("I", range(1 << 20))  # 4 MiB
        async with anyio.create_task_group() as tg:
            received.clear()

            async def read_words() -> None:
                received.append(await peer_read(conn, len(words) * words.itemsize))

            tg.start_soon(read_words)
            await s.send(words, timeout=LONG * 2)
        assert received[0] == words.tobytes()
        assert await s.try_send(b"ok") is True
        assert await peer_read(conn, 2) == b"ok"


@scenario(transports=TRANSPORTS)
async def half_close(face: Face, transport: str) -> None:
    # The peer shuts down its sending side, then still reads what we send.
    for side in ("client", "server"):
        async with stream_pair(face, transport, side=side) as (s, conn):
            conn.sendall(b"request\n")
            conn.shutdown(socket.SHUT_WR)
            assert await s.recv_line(timeout=LONG) == b"request"
            assert await s.recv_line(timeout=LONG) == b""
            await s.send(b"response\r\n")
            await s.send(b"more")
            assert await peer_read(conn, 14) == b"response\r\nmore"
            assert await s.recv(1, timeout=LONG) == b""


@scenario(transports=TRANSPORTS)
async def bulk_both_ways_at_once(face: Face, transport: str) -> None:
    # Two duonet ends each send 1 MiB while receiving the other's: reading and writing one
    # socket at once (the socket buffers hold far less, so neither send can finish alone).
    size = 1 << 20
    up, down = os.urandom(size), os.urandom(size)
    got: dict[str, bytes] = {}

    async def receive(sock: Sock, key: str) -> None:
        got[key] = await sock.recv(size, timeout=LONG * 2)

    async with (
        duonet_listener(face, transport) as (lst, where),
        opened(new_stream(face, transport)) as client,
    ):
        async with (
            opened(await accept_connected(lst, client, transport, where)) as server,
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(receive, server, "up")
            tg.start_soon(receive, client, "down")
            tg.start_soon(functools.partial(server.send, down, timeout=LONG * 2))
            await client.send(up, timeout=LONG * 2)
        assert await client.recv(1, timeout=LONG) == b""  # the server closed (TLS: close_notify)
    assert got["up"] == up
    assert got["down"] == down


# -- timeouts -------------------------------------------------------------------------------------


@scenario(transports=TRANSPORTS)
async def timeout_recv_keeps_bytes(face: Face, transport: str) -> None:
    assert duonet.TimeoutError is builtins.TimeoutError is duonet.aio.TimeoutError
    async with stream_pair(face, transport) as (s, conn):
        conn.sendall(b"abc")
        await until_readable(s.fileno())
        with pytest.raises(builtins.TimeoutError):
            await s.recv(10, timeout=SHORT)  # the peer stalls after "abc"
        assert s.has_data_buffered()
        conn.sendall(b"defghij")
        assert await s.recv(10, timeout=LONG) == b"abcdefghij"  # Nim §3.4 #11 loses "abc"
        await s.send(b"alive")
        assert await peer_read(conn, 5) == b"alive"
    # unbuffered: what one read gives; the timeout only matters when nothing comes
    async with stream_pair(face, transport, buffered=False) as (s, conn):
        conn.sendall(b"abc")
        await until_readable(s.fileno())
        assert await s.recv(10, timeout=SHORT) == b"abc"
        with pytest.raises(builtins.TimeoutError):
            await s.recv(10, timeout=SHORT)
        conn.sendall(b"d")
        assert await s.recv(10, timeout=LONG) == b"d"


@scenario(transports=TRANSPORTS)
async def timeout_recv_into_keeps_bytes(face: Face, transport: str) -> None:
    async with stream_pair(face, transport) as (s, conn):
        conn.sendall(b"abc")
        await until_readable(s.fileno())
        target = bytearray(10)
        with pytest.raises(builtins.TimeoutError):
            await s.recv_into(target, timeout=SHORT)
        assert s.has_data_buffered()
        conn.sendall(b"defghij")
        target = bytearray(10)
        assert await s.recv_into(target, timeout=LONG) == 10
        assert target == b"abcdefghij"


@scenario(transports=TRANSPORTS)
async def timeout_recv_line_keeps_partial(face: Face, transport: str) -> None:
    # Nim §3.4 #7: "ab", a stall, "c\n": TimeoutError, then "c" (recvLine loses "ab"). SPEC: "abc".
    async with stream_pair(face, transport) as (s, conn):
        conn.sendall(b"ab")
        await until_readable(s.fileno())
        with pytest.raises(builtins.TimeoutError):
            await s.recv_line(timeout=SHORT)
        assert s.has_data_buffered()
        with pytest.raises(builtins.TimeoutError):
            await s.read_line(timeout=SHORT)
        conn.sendall(b"c\nnext\n")
        assert await s.recv_line(timeout=LONG) == b"abc"
        assert await s.recv_line(timeout=LONG) == b"next"


@scenario(transports=TRANSPORTS)
async def timeout_recv_line_cumulative(face: Face, transport: str) -> None:
    # Nim §3.4 #8: the timeout bounds the whole call, not each wait. Bytes come every 30 ms (each
    # gap well under the timeout) and the line ends no sooner than 300 ms (well over it): only a
    # whole-call budget can expire. The line is complete afterwards.
    text = b"abcdefghij"
    async with stream_pair(face, transport) as (s, conn):

        async def trickle() -> None:
            for i in range(len(text)):
                conn.sendall(text[i : i + 1])
                await anyio.sleep(0.03)
            conn.sendall(b"\n")

        async with anyio.create_task_group() as tg:
            tg.start_soon(trickle)
            with pytest.raises(builtins.TimeoutError):
                await s.recv_line(timeout=SHORT)
            assert await s.recv_line(timeout=LONG) == text


@scenario(transports=TRANSPORTS)
async def timeout_cr_then_late_lf(face: Face, transport: str) -> None:
    # Nim §3.4 #9: "abc\r", a stall, "\nz\n" -> TimeoutError, "\r\n" (a phantom line), "z".
    # SPEC: the lone \r ends "abc" at once; the late \n belongs to it; then "z".
    async with stream_pair(face, transport) as (s, conn):
        conn.sendall(b"abc\r")
        await until_readable(s.fileno())
        assert await s.recv_line(timeout=SHORT) == b"abc"
        with pytest.raises(builtins.TimeoutError):
            await s.recv_line(timeout=SHORT)
        conn.sendall(b"\nz\n")
        assert await s.recv_line(timeout=LONG) == b"z"


@scenario(transports=TRANSPORTS)
async def timeout_skip_keeps_bytes(face: Face, transport: str) -> None:
    # SPEC "Guarantees beyond Nim": a timeout in skip leaves every byte already received in the
    # buffer for the next call.
    async with stream_pair(face, transport) as (s, conn):
        conn.sendall(b"abc")
        await until_readable(s.fileno())
        with pytest.raises(builtins.TimeoutError):
            await s.skip(5, timeout=SHORT)
        assert s.has_data_buffered(), "skip's timeout dropped the bytes it had received"
        conn.sendall(b"defgh")
        assert await s.recv(8, timeout=LONG) == b"abcdefgh"


@scenario(transports=TRANSPORTS, faces=("async",))
async def cancel_keeps_bytes(face: Face, transport: str) -> None:
    # SPEC "Guarantees beyond Nim": cancellation (a cancel scope, not the call's own timeout)
    # loses nothing either. Async face only: a blocking call is cancelled by KeyboardInterrupt.
    async with stream_pair(face, transport) as (s, conn):
        conn.sendall(b"ab")
        await until_readable(s.fileno())
        for call in (
            lambda: s.recv_line(),
            lambda: s.recv(10),
            lambda: s.recv_into(bytearray(10)),
            lambda: s.skip(10),
        ):
            with anyio.move_on_after(SHORT) as scope:
                await call()
            assert scope.cancelled_caught
            assert s.has_data_buffered()
        conn.sendall(b"c\n")
        assert await s.recv_line(timeout=LONG) == b"abc"
    async with duonet_listener(face, transport) as (lst, where):
        with anyio.move_on_after(SHORT) as scope:
            await lst.accept()
        assert scope.cancelled_caught
        with stdlib_client(transport, where) as client:
            async with opened(await lst.accept(timeout=LONG)) as c:
                client.sendall(b"x")
                assert await c.recv(1, timeout=LONG) == b"x"


@scenario(transports=TRANSPORTS)
async def timeout_accept_keeps_client(face: Face, transport: str) -> None:
    async with duonet_listener(face, transport) as (lst, where):
        with pytest.raises(builtins.TimeoutError):
            await lst.accept(timeout=SHORT)
        with pytest.raises(builtins.TimeoutError):
            await lst.accept_addr(timeout=0)
        with stdlib_client(transport, where) as client:
            async with opened(await lst.accept(timeout=LONG)) as c:
                client.sendall(b"late client\n")
                assert await c.recv_line(timeout=LONG) == b"late client"
        # timeout 0 takes a client already waiting in the backlog
        with stdlib_client(transport, where) as client:
            await until_readable(lst.fileno())
            if transport == "tls":
                # Its TLS handshake takes round trips: timeout 0 hands the client out if the
                # handshake is already done, or gives up, keeping the client for the next accept
                # (test_tls.py pins the "already done" case).
                try:
                    accepted = await lst.accept(timeout=0)
                except builtins.TimeoutError:
                    accepted = await lst.accept(timeout=LONG)
            else:
                accepted = await lst.accept(timeout=0)
            async with opened(accepted) as c:
                await c.send(b"!")
                assert client.recv(1) == b"!"


@scenario(transports=TRANSPORTS)
async def timeout_zero_uses_arrived_data(face: Face, transport: str) -> None:
    # Nim §3.4 #12 raises at once although "abc" is in the kernel; SPEC uses what arrived.
    async with stream_pair(face, transport) as (s, conn):
        with pytest.raises(builtins.TimeoutError):
            await s.recv(1, timeout=0)
        conn.sendall(b"abc")
        await until_readable(s.fileno())
        assert await s.recv(3, timeout=0) == b"abc"
        with pytest.raises(builtins.TimeoutError):
            await s.recv(1, timeout=0)
        conn.sendall(b"line\npart")
        await until_readable(s.fileno())
        assert await s.recv_line(timeout=0) == b"line"
        with pytest.raises(builtins.TimeoutError):
            await s.recv_line(timeout=0)
        conn.sendall(b"ial\n")
        await until_readable(s.fileno())
        assert await s.recv_line(timeout=0) == b"partial"
        conn.sendall(b"xyz")
        await until_readable(s.fileno())
        assert await s.skip(2, timeout=0) == 2
        assert await s.recv(1, timeout=0) == b"z"
        # a buffered recv wanting more than arrived raises, keeping what came
        conn.sendall(b"abc")
        await until_readable(s.fileno())
        with pytest.raises(builtins.TimeoutError):
            await s.recv(10, timeout=0)
        conn.sendall(b"defghij")
        await until_readable(s.fileno())
        target = bytearray(10)
        assert await s.recv_into(target, timeout=0) == 10
        assert target == b"abcdefghij"


@scenario(transports=TRANSPORTS)
async def timeout_negative_waits(face: Face, transport: str) -> None:
    # None or any negative timeout waits as long as it takes (Nim's -1). The data comes later
    # than the call starts, so a call that did not wait would raise TimeoutError.
    async with stream_pair(face, transport) as (s, conn):
        async with anyio.create_task_group() as tg:
            tg.start_soon(later, 0.05, conn.sendall, b"abc")
            assert await s.recv(3, timeout=-1) == b"abc"
        async with anyio.create_task_group() as tg:
            tg.start_soon(later, 0.05, conn.sendall, b"line\n")
            assert await s.recv_line(timeout=-1.5) == b"line"
        async with anyio.create_task_group() as tg:
            tg.start_soon(later, 0.05, conn.sendall, b"12X")
            assert await s.skip(2, timeout=-1) == 2
        async with anyio.create_task_group() as tg:
            tg.start_soon(later, 0.05, conn.sendall, b"YZ")
            target = bytearray(3)
            assert await s.recv_into(target, timeout=-0.001) == 3
            assert target == b"XYZ"
        async with anyio.create_task_group() as tg:
            tg.start_soon(later, 0.05, conn.sendall, b"none\n")
            assert await s.recv_line(timeout=None) == b"none"
    async with duonet_listener(face, transport) as (lst, where):
        clients: list[socket.socket] = []
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(later, 0.05, lambda: clients.append(stdlib_client(transport, where)))
                async with opened(await lst.accept(timeout=-1)):
                    pass
            if transport == "tcp":
                async with opened(face.new_socket()) as s:
                    await s.connect("127.0.0.1", where, timeout=-1)
                    async with opened(await lst.accept(timeout=LONG)):
                        pass
                async with (
                    opened(await face.dial("127.0.0.1", where, timeout=-1)),
                    opened(await lst.accept(timeout=LONG)),
                ):
                    pass
        finally:
            for client in clients:
                client.close()


# Not TLS: the TCP handshake hangs, before any TLS byte.
@scenario()
async def connect_timeout(face: Face, transport: str) -> None:
    # A hanging connect without leaving loopback: a listener with backlog 0 whose accept queue
    # is full (one connection nobody accepts). The kernel then drops further SYNs.
    with contextlib.ExitStack() as stack:
        lst = stack.enter_context(socket.socket())
        lst.bind(("127.0.0.1", 0))
        lst.listen(0)
        port = lst.getsockname()[1]
        hanging = False
        for _ in range(8):
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            if not await writable_within(filler, 0.3):
                hanging = True
                break
        if not hanging:
            pytest.skip("this kernel completes connects to a full backlog-0 listener")
        async with opened(face.new_socket()) as s:
            with pytest.raises(builtins.TimeoutError):
                await s.connect("127.0.0.1", port, timeout=SHORT)
        with pytest.raises(builtins.TimeoutError):
            await face.dial("127.0.0.1", port, timeout=SHORT)


# -- disconnections -------------------------------------------------------------------------------


@scenario(transports=TCP_AND_TLS)
async def reset_mid_line(face: Face, transport: str) -> None:
    with peer(over(transport, resetter(b"abc")), clients=3) as p:
        # SAFE_DISCONN (the default): a reset reads as closed; the cut line is returned first
        async with opened(new_stream(face, transport)) as s:
            await s.connect(p.host, p.port, timeout=LONG)
            assert await s.recv_line(timeout=LONG) == b"abc"
            assert await s.recv_line(timeout=LONG) == b""
            assert await s.recv(10, timeout=LONG) == b""
            assert s.read_line_nowait() == (DISCONNECTED, b"")
        # no flags: ConnectionResetError
        async with opened(new_stream(face, transport)) as s:
            await s.connect(p.host, p.port, timeout=LONG)
            with pytest.raises(ConnectionResetError):
                await s.recv_line(timeout=LONG, flags=NO_FLAGS)
        async with opened(new_stream(face, transport)) as s:
            await s.connect(p.host, p.port, timeout=LONG)
            with pytest.raises(ConnectionResetError):
                await s.recv(10, timeout=LONG, flags=NO_FLAGS)
    assert not p.errors


def over(transport: str, handler: Callable[[Any], None]) -> Callable[[socket.socket], None]:
    """A :func:`conftest.peer` handler: ``handler`` itself (TCP), or ``handler`` run on the TLS
    server end once the handshake is done (TLS; closing that end sends no close_notify)."""
    if transport != "tls":
        return handler
    ctx = stdlib_server_context()

    def serve(conn: socket.socket) -> None:
        with ctx.wrap_socket(conn, server_side=True) as tls:
            handler(tls)

    return serve


def _reset_at_once(conn: socket.socket) -> None:
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


# Not TLS: there a reset at once breaks the handshake, so connect raises SslError (SPEC;
# test_tls.py), not the next read.
@scenario()
async def reset_right_after_accept(face: Face, transport: str) -> None:
    """SPEC: ``connect`` succeeds once the TCP handshake completed; a reset the peer sends at
    once shows up in the next read (``b""`` under SAFE_DISCONN, ``ConnectionResetError``
    without), not in ``connect``. The reset races connect's own wait for the handshake, so
    each way in is tried a number of times."""
    rounds = 8
    with peer(_reset_at_once, clients=4 * rounds) as p:
        for _ in range(rounds):
            async with opened(face.new_socket()) as s:
                await s.connect(p.host, p.port, timeout=LONG)
                await until_readable(s.fileno())  # the RST has arrived
                assert await s.recv(5, timeout=LONG) == b""
            async with opened(face.new_socket()) as s:
                await s.connect(p.host, p.port, timeout=LONG)
                await until_readable(s.fileno())
                with pytest.raises(ConnectionResetError) as info:
                    await s.recv_line(timeout=LONG, flags=NO_FLAGS)
                assert str(p.port) in str(info.value)
                assert await s.recv(5, timeout=LONG) == b""  # reported once, then closed
            async with opened(await face.dial(p.host, p.port, timeout=LONG)) as s:
                await until_readable(s.fileno())
                assert await s.recv_line(timeout=LONG) == b""
            async with opened(await face.dial(p.host, p.port, timeout=LONG)) as s:
                await until_readable(s.fileno())
                with pytest.raises(ConnectionResetError):
                    await s.recv(5, timeout=LONG, flags=NO_FLAGS)
    assert not p.errors


@scenario(transports=TCP_AND_TLS)
async def send_to_reset_peer(face: Face, transport: str) -> None:
    # Nim §3.4 #15: send to a reset peer loops forever under SafeDisconn. SPEC: it returns
    # quietly (SAFE_DISCONN) or raises (no flags); it never hangs (the timeout only bounds a bug).
    with peer(over(transport, resetter()), clients=3) as p:
        async with opened(new_stream(face, transport)) as s:
            await s.connect(p.host, p.port, timeout=LONG)
            await until_readable(s.fileno())  # the RST has arrived
            await s.send(b"hello", timeout=LONG)
            await s.send(b"hello" * 100_000, timeout=LONG)
            assert s.read_line_nowait() == (DISCONNECTED, b"")  # as recv says: the end
            assert await s.recv(10, timeout=LONG) == b""
        async with opened(new_stream(face, transport)) as s:
            await s.connect(p.host, p.port, timeout=LONG)
            await until_readable(s.fileno())
            with pytest.raises((ConnectionResetError, BrokenPipeError)):
                await s.send(b"hello", flags=NO_FLAGS, timeout=LONG)
            # the stream is broken for good: a recv under SAFE_DISCONN sees its end
            assert await s.recv(10, timeout=LONG) == b""
        async with opened(new_stream(face, transport)) as s:
            await s.connect(p.host, p.port, timeout=LONG)
            await until_readable(s.fileno())
            assert await s.try_send(b"x") is False
    assert not p.errors


@scenario(transports=TCP_AND_TLS)
async def send_big_when_peer_resets(face: Face, transport: str) -> None:
    # The peer resets while our send is blocked on full buffers: the send ends.
    go = threading.Event()

    def stall_then_reset(conn: socket.socket) -> None:
        go.wait(LONG)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    big = b"x" * (32 << 20)
    with peer(over(transport, stall_then_reset), clients=2) as p:
        for flags in (SocketFlag.SAFE_DISCONN, NO_FLAGS):
            go.clear()
            async with opened(new_stream(face, transport)) as s:
                await s.connect(p.host, p.port, timeout=LONG)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(later, 0.1, go.set)
                    if flags:
                        await s.send(big, flags=flags, timeout=LONG)
                    else:
                        with pytest.raises(ConnectionError):
                            await s.send(big, flags=flags, timeout=LONG)
    assert not p.errors


# -- closing, concurrency, context managers -------------------------------------------------------


@scenario(transports=TRANSPORTS)
async def peer_closes_without_half_close(face: Face, transport: str) -> None:
    """The peer closes its socket outright. TCP, Unix: a plain EOF. TLS: the close comes without
    close_notify (as a truncation attack would): SPEC reads it as closed under SAFE_DISCONN and
    raises SslError ("truncated") without."""
    for flags in (SocketFlag.SAFE_DISCONN, NO_FLAGS):
        async with stream_pair(face, transport) as (s, conn):
            conn.sendall(b"data\n")
            conn.close()  # TLS: TCP FIN, no close_notify
            assert await s.recv_line(timeout=LONG, flags=flags) == b"data"
            if flags or transport != "tls":
                assert await s.recv_line(timeout=LONG, flags=flags) == b""
                assert await s.recv(10, timeout=LONG, flags=flags) == b""
            else:
                with pytest.raises(SslError, match="truncated"):
                    await s.recv_line(timeout=LONG, flags=flags)


@scenario(transports=TRANSPORTS)
async def close_idempotent(face: Face, transport: str) -> None:
    s = new_stream(face, transport)
    await s.close()
    await s.close()
    async with stream_pair(face, transport) as (s, conn):
        await s.close()
        await s.close()
        assert conn.recv(1) == b""  # the peer sees the close
        with pytest.raises(duonet.SocketClosedError):
            await s.recv(1, timeout=LONG)
        with pytest.raises(duonet.SocketClosedError):
            await s.recv_line(timeout=LONG)
        with pytest.raises(OSError, match="closed"):
            await s.send(b"x", timeout=LONG)
    # (stream_pair closes it once more on exit)


async def _outcome(call: Awaitable[Any], into: list[Any]) -> None:
    try:
        into.append(await call)
    except BaseException as exc:  # inspected by the scenario
        into.append(exc)
        if not isinstance(exc, Exception):
            raise


@scenario(transports=TRANSPORTS)
async def close_wakes_blocked_calls(face: Face, transport: str) -> None:
    # A call blocked without a timeout returns promptly with SocketClosedError when another task
    # (or thread) closes the socket. Whichever comes first, the call ends with that error.
    for method, args in (("recv_line", ()), ("recv", (10,)), ("skip", (10,))):
        async with stream_pair(face, transport) as (s, conn):
            conn.sendall(b"partial")  # some bytes buffered, no full line
            outcome: list[Any] = []
            with anyio.fail_after(LONG):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_outcome, getattr(s, method)(*args), outcome)
                    await face.settle()
                    started = time.monotonic()
                    await s.close()
            assert time.monotonic() - started < PROMPT, f"{method} was not woken promptly"
            assert len(outcome) == 1
            assert isinstance(outcome[0], duonet.SocketClosedError), (method, outcome)
            assert isinstance(outcome[0], OSError)
    async with duonet_listener(face, transport) as (lst, _):
        outcome = []
        with anyio.fail_after(LONG):
            async with anyio.create_task_group() as tg:
                tg.start_soon(_outcome, lst.accept(), outcome)
                await face.settle()
                await lst.close()
        assert isinstance(outcome[0], duonet.SocketClosedError), outcome


@scenario(transports=TRANSPORTS)
async def concurrent_readers_busy(face: Face, transport: str) -> None:
    async with stream_pair(face, transport) as (s, conn):
        result: list[bytes] = []

        async def reader() -> None:
            while True:
                try:
                    result.append(await s.recv_line(timeout=LONG))
                    return
                except duonet.BusyError:  # our probe got in first: try again
                    await anyio.sleep(0.01)

        busy: list[BaseException] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(reader)
            await face.settle()
            for _ in range(100):
                try:
                    await s.recv_line(timeout=0.02)
                except duonet.BusyError as exc:
                    busy.append(exc)
                    break
                except builtins.TimeoutError:
                    continue  # the reader was not waiting yet
            # every reading call is refused while the reader waits
            for call in (
                lambda: s.recv(1, timeout=SHORT),
                lambda: s.recv_into(bytearray(1), timeout=SHORT),
                lambda: s.skip(1, timeout=SHORT),
                lambda: s.read_line(timeout=SHORT),
            ):
                with pytest.raises(duonet.BusyError):
                    await call()
            with pytest.raises(duonet.BusyError):
                s.read_line_nowait()
            conn.sendall(b"for the first reader\n")
        assert busy, "a second concurrent reader was never refused"
        assert isinstance(busy[0], RuntimeError)
        assert duonet.BusyError is duonet.aio.BusyError
        assert result == [b"for the first reader"]
        # refused calls consumed nothing and broke nothing
        conn.sendall(b"after\n")
        assert await s.recv_line(timeout=LONG) == b"after"


@scenario(transports=TRANSPORTS)
async def concurrent_writers_busy(face: Face, transport: str) -> None:
    async with stream_pair(face, transport) as (s, _conn):
        big = b"y" * (32 << 20)  # far beyond the socket buffers: the peer never reads
        outcome: list[Any] = []

        async def writer() -> None:
            while True:
                try:
                    await s.send(big)
                except duonet.BusyError:  # our probe got in first: try again
                    await anyio.sleep(0.01)
                    continue
                except Exception as exc:
                    outcome.append(exc)
                return

        busy: list[BaseException] = []
        with anyio.fail_after(LONG * 2):
            async with anyio.create_task_group() as tg:
                tg.start_soon(writer)
                await face.settle()
                for _ in range(100):
                    try:
                        await s.send(b"z", timeout=0.02)
                    except duonet.BusyError as exc:
                        busy.append(exc)
                        break
                    except builtins.TimeoutError:
                        continue
                refused: list[Any] = []
                await _outcome(s.try_send(b"z"), refused)
                await s.close()  # wakes the blocked writer
        assert busy, "a second concurrent writer was never refused"
        assert len(outcome) == 1
        assert isinstance(outcome[0], OSError), outcome
        assert refused == [False], "try_send must say False, not raise"  # SPEC: try_send


@scenario(transports=TRANSPORTS)
async def context_managers(face: Face, transport: str) -> None:
    async with duonet_listener(face, transport) as (lst, where):
        async with new_stream(face, transport) as c:
            async with await accept_connected(lst, c, transport, where) as server_side:
                await c.send(b"hi\n")
                assert await server_side.recv_line(timeout=LONG) == b"hi"
                await c.close()
                assert await server_side.recv(1, timeout=LONG) == b""  # closed at once
            with pytest.raises(duonet.SocketClosedError):
                await server_side.recv(1, timeout=LONG)
        with pytest.raises(duonet.SocketClosedError):
            await c.recv(1, timeout=LONG)
        # an exception inside the block propagates, and the socket is closed
        c = new_stream(face, transport)

        async def fail_inside() -> None:
            async with c:
                await connect_to(c, transport, where)
                raise KeyError("boom")

        accepted: list[Any] = []
        async with anyio.create_task_group() as tg:
            if transport == "tls":  # connect's handshake needs the accept running
                tg.start_soon(_outcome, lst.accept(timeout=LONG), accepted)
            with pytest.raises(KeyError):
                await fail_inside()
        if not accepted:
            accepted.append(await lst.accept(timeout=LONG))
        assert not isinstance(accepted[0], BaseException), accepted
        async with opened(accepted[0]) as server_side:
            assert await server_side.recv(1, timeout=LONG) == b""
        with pytest.raises(duonet.SocketClosedError):
            await c.recv(1, timeout=LONG)


# -- Unix sockets ---------------------------------------------------------------------------------


@scenario(transports=("unix",))
async def unix_accept_addr_text(face: Face, transport: str) -> None:
    async with duonet_listener(face, "unix") as (lst, path):
        assert len(path) < 100
        # an unnamed client: "" (Nim prints "0.0.0.0")
        async with opened(new_stream(face, "unix")) as c:
            await c.connect_unix(path)
            client, text = await lst.accept_addr(timeout=LONG)
            async with opened(client):
                assert text == ""
                await c.send(b"unnamed\n")
                assert await client.recv_line(timeout=LONG) == b"unnamed"
        # a bound client: its path
        bound = os.path.join(os.path.dirname(path), "c")
        async with opened(new_stream(face, "unix")) as c:
            c.bind_unix(bound)
            await c.connect_unix(path)
            client, text = await lst.accept_addr(timeout=LONG)
            async with opened(client):
                assert text == bound
                await client.send(b"named\n")
                assert await c.recv_line(timeout=LONG) == b"named"


@scenario(transports=("unix",))
async def unix_nim_exchange(face: Face, transport: str) -> None:
    # Nim's tunixsocket.nim + unixsockettest.nim.
    async with duonet_listener(face, "unix") as (server, path):

        async def serve() -> None:
            async with opened(await server.accept(timeout=LONG)) as conn:
                assert await conn.read_line(timeout=LONG) == b"data sent through the socket"
                await conn.send("Hello from server\r\n")
                assert await conn.read_line(timeout=LONG) == b"bye"
                await conn.send("bye\r\n")

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            async with opened(face.new_socket(socket.AF_UNIX, socket.SOCK_STREAM, 0)) as client:
                await client.connect_unix(path)
                await client.send("data sent through the socket\r\n")
                assert await client.read_line(timeout=LONG) == b"Hello from server"
                await client.send("bye\r\n")
                assert await client.read_line(timeout=LONG) == b"bye"


@scenario(transports=("unix",))
async def unix_connect_missing_path(face: Face, transport: str) -> None:
    with short_tmpdir() as directory:
        missing = os.path.join(directory, "nobody-here")
        async with opened(new_stream(face, "unix")) as s:
            with pytest.raises(FileNotFoundError):
                await s.connect_unix(missing)
