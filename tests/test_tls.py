"""TLS over real sockets, what only TLS has: client verification, TLS listeners, mutual TLS,
versions, STARTTLS, close_notify, resets during handshakes, records, PSK.

What any stream transport does (reads, lines, timeouts, no loss, sends, half-close, closing, bulk
data both ways, a peer closing without close_notify, a peer resetting after the handshake) is
checked over TLS by the conformance scenarios (``tests/scenarios.py``, transport ``"tls"``), on
the same four faces.

Every scenario runs on four faces: ``duonet.aio`` on asyncio and on trio, and the blocking
``duonet`` face with its portal on asyncio and on trio. For the blocking face the test loop is
asyncio and each blocking call runs in a worker thread (``anyio.to_thread.run_sync``), so one
scenario body serves all four. Every blocking step carries a timeout and every body runs under
``anyio.fail_after``. Peers written with the stdlib ``ssl`` module run in threads (or worker
threads), so a duonet bug cannot hide on both ends. The context layer alone is tested in memory
by ``test_tls_context.py``.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import socket
import ssl
import struct
import sys
import threading
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme

import duonet
import duonet.aio as aio
from conftest import Peer, TlsFiles, needs_ipv6, peer
from duonet import (
    ReadLineResult,
    SocketFlag,
    SslContext,
    SslCVerifyMode,
    SslError,
    SslHandshakeType,
    _portal,
    new_context,
)

SAFE = SocketFlag.SAFE_DISCONN
NO_FLAGS = SocketFlag(0)
#: The timeout of every single step (seconds): generous, never reached when things work.
STEP = 5.0
#: The bound of a whole scenario.
BODY = 20.0
HAS_PSK = sys.version_info >= (3, 13)
PSK_KEY = bytes(range(32))


# -- the four faces ----------------------------------------------------------------------------


class Sock:
    """A duonet socket of either face; I/O is awaited (in a worker thread for the blocking face)."""

    def __init__(self, face: Face, raw: Any) -> None:
        self.face = face
        self.raw = raw
        face.sockets.append(self)

    async def _io(self, name: str, *args: Any, **kwargs: Any) -> Any:
        method = getattr(self.raw, name)
        if self.face.blocking:
            return await anyio.to_thread.run_sync(functools.partial(method, *args, **kwargs))
        return await method(*args, **kwargs)

    async def connect(self, host: str, port: int, timeout: float = STEP) -> None:
        await self._io("connect", host, port, timeout=timeout)

    async def accept(self, flags: SocketFlag = SAFE, timeout: float = STEP) -> Sock:
        return Sock(self.face, await self._io("accept", flags, timeout=timeout))

    async def accept_addr(
        self, flags: SocketFlag = SAFE, timeout: float = STEP
    ) -> tuple[Sock, str]:
        raw, address = await self._io("accept_addr", flags, timeout=timeout)
        return Sock(self.face, raw), address

    async def recv(self, size: int, timeout: float = STEP, flags: SocketFlag = SAFE) -> bytes:
        return bytes(await self._io("recv", size, timeout=timeout, flags=flags))

    async def recv_line(self, timeout: float = STEP, flags: SocketFlag = SAFE) -> bytes:
        return bytes(await self._io("recv_line", timeout=timeout, flags=flags))

    async def send(self, data: bytes, flags: SocketFlag = SAFE, timeout: float = STEP) -> None:
        await self._io("send", data, flags=flags, timeout=timeout)

    async def close(self) -> None:
        await self._io("close")

    @property
    def port(self) -> int:
        return int(self.raw.get_local_addr()[1])

    def is_ssl(self) -> bool:
        return bool(self.raw.is_ssl())

    def got_handshake(self) -> bool:
        return bool(self.raw.got_handshake())

    def get_peer_certificates(self) -> list[bytes]:
        return list(self.raw.get_peer_certificates())

    def get_psk_identity(self) -> str:
        return str(self.raw.get_psk_identity())

    def has_data_buffered(self) -> bool:
        return bool(self.raw.has_data_buffered())

    async def __aenter__(self) -> Sock:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()


class Face:
    """Makes sockets of one face and closes all of them at the end of the test."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.blocking = name.startswith("blocking")
        self.sockets: list[Sock] = []

    def socket(self, family: int = socket.AF_INET, buffered: bool = True) -> Sock:
        make = duonet.new_socket if self.blocking else aio.new_async_socket
        return Sock(self, make(family, buffered=buffered))

    def wrap(self, ctx: SslContext, sock: Sock) -> None:
        (duonet.wrap_socket if self.blocking else aio.wrap_socket)(ctx, sock.raw)

    async def wrap_connected(
        self,
        ctx: SslContext,
        sock: Sock,
        handshake: SslHandshakeType,
        hostname: str = "",
        timeout: float = STEP,
    ) -> None:
        if self.blocking:
            call = functools.partial(
                duonet.wrap_connected_socket, ctx, sock.raw, handshake, hostname, timeout
            )
            await anyio.to_thread.run_sync(call)
        else:
            await aio.wrap_connected_socket(ctx, sock.raw, handshake, hostname, timeout)

    def listener(self, ctx: SslContext | None = None, host: str = "127.0.0.1") -> Sock:
        """A listening socket on loopback, wrapped with ``ctx`` when given."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = self.socket(family)
        sock.raw.bind_addr(0, host)
        if ctx is not None:
            self.wrap(ctx, sock)
        sock.raw.listen()
        return sock

    async def client(self, ctx: SslContext, host: str, port: int, timeout: float = STEP) -> Sock:
        """A wrapped socket connected (and handshaken) to ``host``; closed again on failure."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = self.socket(family)
        self.wrap(ctx, sock)
        try:
            await sock.connect(host, port, timeout)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await sock.close()
            raise
        return sock

    async def plain_client(self, port: int, host: str = "127.0.0.1") -> Sock:
        sock = self.socket()
        await sock.connect(host, port)
        return sock

    async def close_all(self) -> None:
        for sock in self.sockets:
            with contextlib.suppress(Exception):
                await sock.close()


FACES = ["aio-asyncio", "aio-trio", "blocking-asyncio", "blocking-trio"]


# Fixtures are declared with name= so that test_tls_interop can import them without clashes.


@pytest.fixture(params=FACES, name="face_name")
def face_name_fixture(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(name="anyio_backend")
def anyio_backend_fixture(face_name: str) -> str:
    """The test loop: trio for ``aio-trio``, asyncio otherwise (the blocking face's threads)."""
    return "trio" if face_name == "aio-trio" else "asyncio"


@pytest.fixture(name="face")
async def face_fixture(face_name: str) -> AsyncIterator[Face]:
    made = Face(face_name)
    if made.blocking:
        _portal.reset()
        _portal.configure(face_name.split("-", 1)[1])
    try:
        yield made
    finally:
        with anyio.CancelScope(shield=True):
            await made.close_all()
        if made.blocking:
            _portal.reset()
            _portal.configure(None)


# -- stdlib peers ------------------------------------------------------------------------------


def stdlib_server_context(
    cert: str, key: str, ca: str | None = None, require_client_cert: bool = False
) -> ssl.SSLContext:
    """A stdlib server context that reports a peer closing without close_notify."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    ctx.load_cert_chain(cert, key)
    if ca:
        ctx.load_verify_locations(ca)
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


def stdlib_client_context(ca: str) -> ssl.SSLContext:
    """A verifying stdlib client context that reports a peer closing without close_notify."""
    ctx = ssl.create_default_context(cafile=ca)
    ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    return ctx


@contextlib.contextmanager
def tls_peer(
    ctx: ssl.SSLContext,
    handler: Callable[[ssl.SSLSocket], None],
    family: int = socket.AF_INET,
    clients: int = 1,
) -> Iterator[Peer]:
    """A stdlib TLS server in a thread: ``handler`` gets each client after its handshake."""

    def serve(conn: socket.socket) -> None:
        with ctx.wrap_socket(conn, server_side=True, suppress_ragged_eofs=False) as tls:
            handler(tls)

    with peer(serve, family, clients) as p:
        yield p


def ignore(tls: ssl.SSLSocket) -> None:
    """A handler for peers whose handshake is expected to fail."""


def read_to_eof(tls: ssl.SSLSocket) -> bytes:
    """Everything until a clean close (close_notify); a bare TCP close raises ``SSLEOFError``."""
    data = b""
    while chunk := tls.recv(65536):
        data += chunk
    return data


def stdlib_client(port: int, ctx: ssl.SSLContext, send: bytes = b"", host: str = "localhost"):
    """A stdlib TLS client: handshake, send ``send``, return what it reads until a clean close."""

    def run() -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=STEP) as raw:  # noqa: SIM117
            with ctx.wrap_socket(raw, server_hostname=host, suppress_ragged_eofs=False) as tls:
                if send:
                    tls.sendall(send)
                return read_to_eof(tls)

    return run


class Results:
    """Collects what worker-thread peers return, for the test to check after joining them."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def runner(self, func: Callable[[], Any]) -> Callable[[], Any]:
        async def run() -> None:
            self.values.append(await anyio.to_thread.run_sync(func))

        return run


class ManualClient:
    """A stdlib TLS client driven step by step over memory BIOs (to stop mid-handshake)."""

    def __init__(self, port: int, ctx: ssl.SSLContext, host: str = "localhost") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=STEP)
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname=host)

    def client_hello(self) -> bytes:
        """The first flight, not sent."""
        with contextlib.suppress(ssl.SSLWantReadError):
            self.obj.do_handshake()
        return self.outgoing.read()

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.sock.sendall(data)

    def _pull(self) -> None:
        self._flush()
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        self.incoming.write(data)

    def finish(self) -> None:
        """Complete the handshake (blocking, bounded by the socket's timeout)."""
        while True:
            try:
                self.obj.do_handshake()
            except ssl.SSLWantReadError:
                self._pull()
                continue
            self._flush()
            return

    def read(self) -> bytes:
        while True:
            try:
                return self.obj.read(65536)
            except ssl.SSLWantReadError:
                self._pull()

    def write(self, data: bytes) -> None:
        self.obj.write(data)
        self._flush()

    def encrypt(self, data: bytes) -> bytes:
        """The TLS records carrying ``data``, not sent."""
        self.obj.write(data)
        return self.outgoing.read()

    def close(self) -> None:
        self.sock.close()


# -- certificates beyond the shared ones -------------------------------------------------------


class BadCerts:
    """Server certificates that a verifying client must refuse (``(cert, key)`` paths)."""

    def __init__(self, ca: trustme.CA, folder: Path) -> None:
        def write(name: str, leaf: trustme.LeafCert) -> tuple[str, str]:
            cert, key = str(folder / f"{name}.pem"), str(folder / f"{name}.key")
            leaf.cert_chain_pems[0].write_to_path(cert)
            leaf.private_key_pem.write_to_path(key)
            return cert, key

        now = datetime.datetime.now(datetime.timezone.utc)
        self.wrong_host = write("wrong_host", ca.issue_cert("other.example"))
        self.no_ip_san = write("no_ip_san", ca.issue_cert("localhost"))
        self.expired = write(
            "expired",
            ca.issue_cert(
                "localhost",
                "127.0.0.1",
                not_before=now - datetime.timedelta(days=30),
                not_after=now - datetime.timedelta(days=1),
            ),
        )
        other_ca = trustme.CA()
        self.untrusted = write("untrusted", other_ca.issue_cert("localhost", "127.0.0.1"))
        self.other_ca = str(folder / "other_ca.pem")
        other_ca.cert_pem.write_to_path(self.other_ca)
        self.untrusted_client = write("untrusted_client", other_ca.issue_cert("client.example"))


@pytest.fixture(scope="module")
def bad(tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> BadCerts:
    return BadCerts(tls_ca, tmp_path_factory.mktemp("bad_certs"))


def expected_chain_length() -> int:
    return 2 if sys.version_info >= (3, 13) else 1


# -- client: verification ----------------------------------------------------------------------


async def test_client_verifies_a_duonet_server(
    face: Face, tls_files: TlsFiles, tls_server_ctx: SslContext, tls_client_ctx: SslContext
) -> None:
    with anyio.fail_after(BODY):
        listener = face.listener(tls_server_ctx)

        async def serve() -> None:
            async with await listener.accept() as conn:
                assert conn.is_ssl()
                assert conn.got_handshake()
                await conn.send(b"hello " + await conn.recv_line() + b"\n")

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            async with await face.client(tls_client_ctx, "localhost", listener.port) as client:
                assert client.is_ssl()
                assert client.got_handshake()
                certs = client.get_peer_certificates()
                assert certs[0] == tls_files.cert_der
                assert len(certs) == expected_chain_length()
                assert certs[-1] == (tls_files.ca_der if HAS_PSK else tls_files.cert_der)
                await client.send(b"duonet\n")
                assert await client.recv_line() == b"hello duonet"
                # The server closed with close_notify: a clean EOF even without SAFE_DISCONN.
                assert await client.recv(1, flags=NO_FLAGS) == b""


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", pytest.param("::1", marks=needs_ipv6)])
async def test_client_verifies_a_stdlib_server(
    face: Face, tls_files: TlsFiles, tls_client_ctx: SslContext, host: str
) -> None:
    seen: list[bytes] = []

    def handler(tls: ssl.SSLSocket) -> None:
        seen.append(tls.recv(100))
        tls.sendall(b"pong\n")
        seen.append(read_to_eof(tls))  # b"" only after a close_notify

    family = socket.AF_INET6 if host == "::1" else socket.AF_INET
    with tls_peer(stdlib_server_context(tls_files.cert, tls_files.key), handler, family) as p:
        with anyio.fail_after(BODY):
            async with await face.client(tls_client_ctx, host, p.port) as client:
                assert client.get_peer_certificates()[0] == tls_files.cert_der
                await client.send(b"ping\n")
                assert await client.recv_line() == b"pong"
    assert p.errors == []
    assert seen == [b"ping\n", b""]


REFUSALS = [
    # (certificate, host to connect to, words the SslError must contain)
    ("wrong_host", "localhost", ["mismatch"]),
    ("no_ip_san", "127.0.0.1", ["mismatch"]),
    ("untrusted", "localhost", ["certificate verify failed", "unknown ca"]),
    ("expired", "localhost", ["certificate verify failed", "expired"]),
]


@pytest.mark.parametrize(("cert", "host", "words"), REFUSALS, ids=[r[0] for r in REFUSALS])
async def test_client_refuses_a_bad_server_certificate(
    face: Face, bad: BadCerts, tls_client_ctx: SslContext, cert: str, host: str, words: list[str]
) -> None:
    cert_file, key_file = getattr(bad, cert)
    with tls_peer(stdlib_server_context(cert_file, key_file), ignore) as p:
        with anyio.fail_after(BODY):
            sock = face.socket()
            face.wrap(tls_client_ctx, sock)
            with pytest.raises(SslError) as info:
                await sock.connect(host, p.port)
            assert not sock.got_handshake()
            await sock.close()
    message = str(info.value).lower()
    for word in words:
        assert word in message, message
    assert info.value.__cause__ is not None


@pytest.mark.parametrize("cert", [r[0] for r in REFUSALS])
async def test_verify_none_accepts_any_server(face: Face, bad: BadCerts, cert: str) -> None:
    host = "127.0.0.1" if cert == "no_ip_san" else "localhost"
    cert_file, key_file = getattr(bad, cert)

    def handler(tls: ssl.SSLSocket) -> None:
        tls.sendall(b"fine\n")
        read_to_eof(tls)

    ctx = new_context(verify_mode=SslCVerifyMode.NONE)
    with tls_peer(stdlib_server_context(cert_file, key_file), handler) as p:
        with anyio.fail_after(BODY):
            async with await face.client(ctx, host, p.port) as client:
                assert client.got_handshake()
                assert await client.recv_line() == b"fine"
    assert p.errors == []


async def test_peer_use_env_vars_trusts_ssl_cert_file(
    face: Face, tls_files: TlsFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", tls_files.ca)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    ctx = new_context(verify_mode=SslCVerifyMode.PEER_USE_ENV_VARS)

    def handler(tls: ssl.SSLSocket) -> None:
        tls.sendall(b"trusted\n")
        read_to_eof(tls)

    with tls_peer(stdlib_server_context(tls_files.cert, tls_files.key), handler, clients=2) as p:
        with anyio.fail_after(BODY):
            async with await face.client(ctx, "localhost", p.port) as client:
                assert await client.recv_line() == b"trusted"
            # Plain PEER ignores the variable (certifi's CAs): the same server is unknown.
            with pytest.raises(SslError, match="certificate verify failed"):
                await face.client(new_context(), "localhost", p.port)
    assert len(p.errors) == 1  # the second handshake, refused by the client


# -- server: TLS listeners ---------------------------------------------------------------------


async def test_accept_hands_out_handshaken_clients(
    face: Face, tls_files: TlsFiles, tls_server_ctx: SslContext
) -> None:
    results = Results()
    with anyio.fail_after(BODY):
        listener = face.listener(tls_server_ctx)
        assert listener.is_ssl()
        assert not listener.got_handshake()
        client = stdlib_client(listener.port, stdlib_client_context(tls_files.ca), b"hi\n")
        async with anyio.create_task_group() as tg:
            tg.start_soon(results.runner(client))
            conn, address = await listener.accept_addr()
            async with conn:
                assert address == "127.0.0.1"
                assert conn.is_ssl()
                assert conn.got_handshake()
                assert conn.get_peer_certificates() == []  # the client sent none
                assert conn.get_psk_identity() == ""
                assert await conn.recv_line() == b"hi"
                await conn.send(b"bye\n")
    assert results.values == [b"bye\n"]  # ... and then a clean close (close_notify)


async def test_got_handshake_follows_the_socket(face: Face, tls_files: TlsFiles) -> None:
    def handler(tls: ssl.SSLSocket) -> None:
        tls.sendall(b"x\n")
        read_to_eof(tls)

    with tls_peer(stdlib_server_context(tls_files.cert, tls_files.key), handler) as p:
        with anyio.fail_after(BODY):
            async with face.socket() as sock:
                assert not sock.is_ssl()
                with pytest.raises(SslError):
                    sock.got_handshake()
                face.wrap(new_context(ca_file=tls_files.ca), sock)
                assert sock.is_ssl()
                assert sock.got_handshake() is False  # wrapped, not connected yet
                await sock.connect("localhost", p.port)
                assert sock.got_handshake() is True
                assert await sock.recv_line() == b"x"
            plain = face.listener()
            with pytest.raises(SslError):
                plain.got_handshake()
            assert not plain.is_ssl()
    assert p.errors == []


async def test_a_stalled_handshake_blocks_no_other_client(
    face: Face, tls_files: TlsFiles, tls_server_ctx: SslContext
) -> None:
    results = Results()
    ctx = stdlib_client_context(tls_files.ca)
    with anyio.fail_after(BODY):
        listener = face.listener(tls_server_ctx)
        port = listener.port
        # Two stallers reach the accept queue first: one silent, one stuck half-way into its
        # ClientHello. Neither must delay the five good clients behind them.
        silent = socket.create_connection(("127.0.0.1", port), timeout=STEP)
        half = ManualClient(port, ctx)
        half.sock.sendall(half.client_hello()[:20])
        try:
            started = time.monotonic()
            async with anyio.create_task_group() as tg:
                for i in range(5):
                    tg.start_soon(results.runner(stdlib_client(port, ctx, b"%d\n" % i)))
                for _ in range(5):
                    async with await listener.accept(timeout=STEP) as conn:
                        assert conn.got_handshake()
                        await conn.send(b"ok " + await conn.recv_line() + b"\n")
            assert time.monotonic() - started < 4.0
        finally:
            silent.close()
            half.close()
    assert sorted(results.values) == [b"ok %d\n" % i for i in range(5)]


async def test_plaintext_client_is_skipped_under_safe_disconn(
    face: Face, tls_files: TlsFiles, tls_server_ctx: SslContext
) -> None:
    results = Results()
    with anyio.fail_after(BODY):
        listener = face.listener(tls_server_ctx)
        with socket.create_connection(("127.0.0.1", listener.port), timeout=STEP) as http:
            http.sendall(b"GET / HTTP/1.0\r\n\r\n")
            good = stdlib_client(listener.port, stdlib_client_context(tls_files.ca), b"tls\n")
            async with anyio.create_task_group() as tg:
                tg.start_soon(results.runner(good))
                async with await listener.accept() as conn:
                    assert await conn.recv_line() == b"tls"
                    await conn.send(b"welcome\n")
            # The HTTP client was dropped: it reads EOF (perhaps after an alert).
            http_reply = await anyio.to_thread.run_sync(functools.partial(recv_all, http))
            assert b"HTTP" not in http_reply
    assert results.values == [b"welcome\n"]


def recv_all(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


async def test_plaintext_client_raises_without_safe_disconn(
    face: Face, tls_files: TlsFiles, tls_server_ctx: SslContext
) -> None:
    results = Results()
    with anyio.fail_after(BODY):
        listener = face.listener(tls_server_ctx)
        with socket.create_connection(("127.0.0.1", listener.port), timeout=STEP) as http:
            http.sendall(b"GET / HTTP/1.0\r\n\r\n")
            with pytest.raises(SslError) as info:
                await listener.accept(flags=NO_FLAGS)
        assert "http" in str(info.value).lower()
        assert isinstance(info.value.__cause__, ssl.SSLError)
        # The listener goes on serving.
        good = stdlib_client(listener.port, stdlib_client_context(tls_files.ca))
        async with anyio.create_task_group() as tg:
            tg.start_soon(results.runner(good))
            async with await listener.accept(flags=NO_FLAGS) as conn:
                await conn.send(b"next\n")
    assert results.values == [b"next\n"]


async def test_accept_timeout_loses_no_client(
    face: Face, tls_files: TlsFiles, tls_server_ctx: SslContext
) -> None:
    with anyio.fail_after(BODY):
        async with waiting_for_finished(face, tls_server_ctx, tls_files, 0.3) as (listener, client):
            async with anyio.create_task_group() as tg:
                tg.start_soon(anyio.to_thread.run_sync, client.finish)
                conn = await listener.accept(timeout=STEP)
            async with conn:
                assert conn.got_handshake()
                await conn.send(b"still here\n")
                assert await anyio.to_thread.run_sync(client.read) == b"still here\n"
                await anyio.to_thread.run_sync(client.write, b"and you\n")
                assert await conn.recv_line() == b"and you"


@contextlib.asynccontextmanager
async def waiting_for_finished(
    face: Face, ctx: SslContext, files: TlsFiles, spent: float
) -> AsyncIterator[tuple[Sock, ManualClient]]:
    """A TLS listener, and a client whose ClientHello an ``accept`` answered before timing out
    after ``spent`` seconds (nobody was there before): the server waits for its Finished."""
    listener = face.listener(ctx)
    with pytest.raises(TimeoutError):
        await listener.accept(timeout=0.1)  # nobody there
    client = ManualClient(listener.port, stdlib_client_context(files.ca))
    try:
        client.sock.sendall(client.client_hello())
        with pytest.raises(TimeoutError):
            await listener.accept(timeout=spent)
        yield listener, client
    finally:
        client.close()


async def test_accept_timeout_zero_hands_out_a_handshake_already_in(
    face: Face, tls_files: TlsFiles, tls_server_ctx: SslContext
) -> None:
    """SPEC: timeout 0 succeeds with what has already arrived, the kernel's included: a client
    whose Finished waits in the kernel is handed out without waiting."""
    with anyio.fail_after(BODY):
        async with waiting_for_finished(face, tls_server_ctx, tls_files, 0.3) as (listener, client):
            await anyio.to_thread.run_sync(client.finish)
            await anyio.sleep(0.1)  # the client's Finished has reached the server's kernel
            async with await listener.accept(timeout=0) as conn:
                assert conn.got_handshake()
                await conn.send(b"in\n")
                assert await anyio.to_thread.run_sync(client.read) == b"in\n"
            with pytest.raises(TimeoutError):
                await listener.accept(timeout=0)  # nobody else


async def test_a_parked_handshake_is_not_timed_out_while_nobody_accepts(
    face: Face, tls_files: TlsFiles
) -> None:
    """``handshake_timeout`` counts the time ``accept`` spends on a client, not the time the
    server spends elsewhere between two ``accept`` calls: a client that answers as soon as the
    next ``accept`` runs is handed out, not dropped."""
    ctx = new_context(cert_file=tls_files.cert, key_file=tls_files.key)
    ctx.handshake_timeout = 1.0
    with anyio.fail_after(BODY):
        # 0.1 + 0.2 s of the client's 1 s are spent in the two accept calls that time out.
        async with waiting_for_finished(face, ctx, tls_files, 0.2) as (listener, client):
            await anyio.sleep(1.5)  # the server is busy: past the client's timeout
            async with anyio.create_task_group() as tg:
                tg.start_soon(anyio.to_thread.run_sync, client.finish)
                conn = await listener.accept(timeout=STEP)
            async with conn:
                assert conn.got_handshake()


# -- mutual TLS --------------------------------------------------------------------------------


def mutual_server_ctx(files: TlsFiles, required: bool) -> SslContext:
    ctx = new_context(cert_file=files.cert, key_file=files.key, ca_file=files.ca)  # PEER
    if required:
        ctx.context.verify_mode = ssl.CERT_REQUIRED
    return ctx


async def test_peer_server_does_not_require_a_client_certificate(
    face: Face, tls_files: TlsFiles, tls_client_ctx: SslContext
) -> None:
    with anyio.fail_after(BODY):
        listener = face.listener(mutual_server_ctx(tls_files, required=False))

        async def serve() -> None:
            async with await listener.accept(flags=NO_FLAGS) as conn:
                assert conn.get_peer_certificates() == []
                await conn.send(b"anonymous ok\n")

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            async with await face.client(tls_client_ctx, "localhost", listener.port) as client:
                assert await client.recv_line() == b"anonymous ok"


async def test_cert_required_refuses_a_client_without_certificate(
    face: Face, tls_files: TlsFiles, tls_client_ctx: SslContext
) -> None:
    with anyio.fail_after(BODY):
        listener = face.listener(mutual_server_ctx(tls_files, required=True))
        server_errors: list[SslError] = []

        async def serve() -> None:
            with pytest.raises(SslError) as info:
                await listener.accept(flags=NO_FLAGS)
            server_errors.append(info.value)

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            # Under TLS 1.3 the client's handshake ends before the server's verdict: the
            # refusal may only show up in the first read.
            with pytest.raises(SslError):
                async with await face.client(tls_client_ctx, "localhost", listener.port) as c:
                    await c.recv(1)
    assert "certificate" in str(server_errors[0]).lower()


@pytest.mark.parametrize("required", [False, True], ids=["peer", "cert_required"])
async def test_client_certificate_is_verified_and_visible(
    face: Face, tls_files: TlsFiles, required: bool
) -> None:
    client_ctx = new_context(
        cert_file=tls_files.client_cert, key_file=tls_files.client_key, ca_file=tls_files.ca
    )
    with anyio.fail_after(BODY):
        listener = face.listener(mutual_server_ctx(tls_files, required))

        async def serve() -> None:
            async with await listener.accept(flags=NO_FLAGS) as conn:
                certs = conn.get_peer_certificates()
                assert certs[0] == tls_files.client_der
                assert len(certs) == expected_chain_length()
                if HAS_PSK:
                    assert certs[-1] == tls_files.ca_der
                await conn.send(b"hello client.example\n")

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            async with await face.client(client_ctx, "localhost", listener.port) as client:
                assert await client.recv_line() == b"hello client.example"


async def test_peer_server_refuses_an_untrusted_client_certificate(
    face: Face, tls_files: TlsFiles, bad: BadCerts
) -> None:
    cert, key = bad.untrusted_client
    client_ctx = new_context(cert_file=cert, key_file=key, ca_file=tls_files.ca)
    with anyio.fail_after(BODY):
        listener = face.listener(mutual_server_ctx(tls_files, required=False))
        server_errors: list[SslError] = []

        async def serve() -> None:
            with pytest.raises(SslError) as info:
                await listener.accept(flags=NO_FLAGS)
            server_errors.append(info.value)

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            with pytest.raises(SslError):
                async with await face.client(client_ctx, "localhost", listener.port) as c:
                    await c.recv(1)
    assert "certificate verify failed" in str(server_errors[0])


# -- protocol versions -------------------------------------------------------------------------


def versioned_server_context(files: TlsFiles, version: ssl.TLSVersion) -> ssl.SSLContext:
    ctx = stdlib_server_context(files.cert, files.key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.1 is deprecated
        if version < ssl.TLSVersion.TLSv1_2:
            ctx.set_ciphers("ALL:@SECLEVEL=0")
        ctx.minimum_version = version
        ctx.maximum_version = version
    return ctx


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
async def test_tls12_and_tls13_peers(
    face: Face, tls_files: TlsFiles, tls_client_ctx: SslContext, version: ssl.TLSVersion
) -> None:
    versions: list[str | None] = []

    def handler(tls: ssl.SSLSocket) -> None:
        versions.append(tls.version())
        tls.sendall(tls.recv(100))
        read_to_eof(tls)

    with tls_peer(versioned_server_context(tls_files, version), handler) as p:
        with anyio.fail_after(BODY):
            async with await face.client(tls_client_ctx, "localhost", p.port) as client:
                await client.send(b"echo\n")
                assert await client.recv_line() == b"echo"
    assert p.errors == []
    assert versions == ["TLSv1.2" if version is ssl.TLSVersion.TLSv1_2 else "TLSv1.3"]


async def test_tls11_server_is_refused(
    face: Face, tls_files: TlsFiles, tls_client_ctx: SslContext
) -> None:
    server_ctx = versioned_server_context(tls_files, ssl.TLSVersion.TLSv1_1)
    with tls_peer(server_ctx, ignore) as p, anyio.fail_after(BODY), pytest.raises(SslError):
        await face.client(tls_client_ctx, "localhost", p.port)


async def test_tls11_client_is_refused(
    face: Face, tls_files: TlsFiles, tls_server_ctx: SslContext
) -> None:
    ctx = stdlib_client_context(tls_files.ca)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1

    def old_client() -> str:
        try:
            stdlib_client(port, ctx)()
        except (ssl.SSLError, OSError) as exc:
            return type(exc).__name__
        return "connected"

    results = Results()
    with anyio.fail_after(BODY):
        listener = face.listener(tls_server_ctx)
        port = listener.port
        async with anyio.create_task_group() as tg:
            tg.start_soon(results.runner(old_client))
            with pytest.raises(SslError):
                await listener.accept(flags=NO_FLAGS)
    assert results.values != ["connected"]


# -- read_line_nowait on TLS -------------------------------------------------------------------


@pytest.mark.parametrize("ending", ["close_notify", "truncated"])
async def test_read_line_nowait_reads_tls_from_the_network(
    face: Face, tls_files: TlsFiles, tls_client_ctx: SslContext, ending: str
) -> None:
    """Polling ``read_line_nowait`` alone (no other read) sees every line, the cut last line
    and the close, whether the peer ends with close_notify or just closes TCP."""
    go_on = threading.Event()

    def handler(tls: ssl.SSLSocket) -> None:
        tls.sendall(b"first\nsecond\n")
        go_on.wait(STEP)  # the client has polled "nothing yet" in between
        tls.sendall(b"cut")
        if ending == "close_notify":
            tls.settimeout(STEP)
            with contextlib.suppress(OSError):
                tls.unwrap()  # ours now; returns when the client's close_notify comes back

    seen: list[tuple[ReadLineResult, bytes]] = []
    ctx = stdlib_server_context(tls_files.cert, tls_files.key)
    with tls_peer(ctx, handler) as p:
        with anyio.fail_after(BODY):
            async with await face.client(tls_client_ctx, "localhost", p.port) as client:
                poll = client.raw.read_line_nowait
                while not seen or seen[-1][0] != ReadLineResult.DISCONNECTED:
                    if face.blocking:  # a hop to the portal for TLS: not from this loop
                        result = await anyio.to_thread.run_sync(poll)
                    else:
                        result = poll()
                    if result[0] == ReadLineResult.NONE:
                        assert result[1] == b""
                        if len(seen) == 2:
                            go_on.set()
                        await anyio.sleep(0.01)
                    else:
                        seen.append(result)
    assert p.errors == []
    assert seen == [
        (ReadLineResult.FULL_LINE, b"first"),
        (ReadLineResult.FULL_LINE, b"second"),
        (ReadLineResult.PARTIAL_LINE, b"cut"),
        (ReadLineResult.DISCONNECTED, b""),
    ]


# -- STARTTLS ----------------------------------------------------------------------------------


async def test_starttls_on_a_line_protocol(
    face: Face, tls_files: TlsFiles, tls_server_ctx: SslContext, tls_client_ctx: SslContext
) -> None:
    with anyio.fail_after(BODY):
        listener = face.listener()

        async def serve() -> None:
            async with await listener.accept() as conn:
                await conn.send(b"220 ready\r\n")
                assert await conn.recv_line() == b"STARTTLS"
                await conn.send(b"220 go ahead\r\n")
                await face.wrap_connected(tls_server_ctx, conn, SslHandshakeType.SERVER)
                assert conn.is_ssl()
                assert conn.got_handshake()
                await conn.send(b"secret " + await conn.recv_line() + b"\r\n")

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            async with await face.plain_client(listener.port) as client:
                assert await client.recv_line() == b"220 ready"
                await client.send(b"STARTTLS\r\n")
                assert await client.recv_line() == b"220 go ahead"
                assert not client.is_ssl()
                await face.wrap_connected(
                    tls_client_ctx, client, SslHandshakeType.CLIENT, "localhost"
                )
                assert client.got_handshake()
                assert client.get_peer_certificates()[0] == tls_files.cert_der
                await client.send(b"over tls\r\n")
                assert await client.recv_line() == b"secret over tls"


async def test_starttls_client_hello_in_the_same_write(
    face: Face, tls_files: TlsFiles, tls_server_ctx: SslContext
) -> None:
    """The ClientHello arrives with the STARTTLS line: recv_line has buffered it already."""
    with anyio.fail_after(BODY):
        listener = face.listener()
        client = ManualClient(listener.port, stdlib_client_context(tls_files.ca))
        try:
            client.sock.sendall(b"STARTTLS\r\n" + client.client_hello())
            async with await listener.accept() as conn:
                assert await conn.recv_line() == b"STARTTLS"
                assert conn.has_data_buffered()  # the ClientHello, read along with the line
                async with anyio.create_task_group() as tg:
                    tg.start_soon(anyio.to_thread.run_sync, client.finish)
                    await face.wrap_connected(tls_server_ctx, conn, SslHandshakeType.SERVER)
                await conn.send(b"over tls\n")
                assert await anyio.to_thread.run_sync(client.read) == b"over tls\n"
                await anyio.to_thread.run_sync(client.write, b"reply\n")
                assert await conn.recv_line() == b"reply"
        finally:
            client.close()


async def test_starttls_client_checks_the_host_name(
    face: Face, tls_files: TlsFiles, tls_client_ctx: SslContext
) -> None:
    ctx = stdlib_server_context(tls_files.cert, tls_files.key)

    def handler(conn: socket.socket) -> None:
        assert conn.recv(100) == b"STARTTLS\r\n"
        conn.sendall(b"220 go ahead\r\n")
        with contextlib.suppress(ssl.SSLError, OSError):
            ctx.wrap_socket(conn, server_side=True).close()

    with peer(handler) as p:
        with anyio.fail_after(BODY):
            async with await face.plain_client(p.port) as client:
                await client.send(b"STARTTLS\r\n")
                assert await client.recv_line() == b"220 go ahead"
                with pytest.raises(SslError, match="mismatch"):
                    await face.wrap_connected(
                        tls_client_ctx, client, SslHandshakeType.CLIENT, "wrong.example"
                    )
    assert p.errors == []


# -- closing -----------------------------------------------------------------------------------


async def test_close_sends_close_notify_without_waiting_for_the_peer(
    face: Face, tls_files: TlsFiles, tls_client_ctx: SslContext
) -> None:
    release = threading.Event()
    after_close: list[bytes] = []

    def handler(tls: ssl.SSLSocket) -> None:
        tls.sendall(b"hello\n")
        release.wait(STEP)  # never answers the close_notify while the client closes
        after_close.append(read_to_eof(tls))

    with tls_peer(stdlib_server_context(tls_files.cert, tls_files.key), handler) as p:
        try:
            with anyio.fail_after(BODY):
                client = await face.client(tls_client_ctx, "localhost", p.port)
                assert await client.recv_line() == b"hello"
                started = time.monotonic()
                await client.close()
                assert time.monotonic() - started < 1.0
        finally:
            release.set()
    assert p.errors == []
    assert after_close == [b""]  # a clean EOF: the close_notify arrived


async def test_server_close_sends_close_notify(
    face: Face, tls_files: TlsFiles, tls_server_ctx: SslContext
) -> None:
    results = Results()
    with anyio.fail_after(BODY):
        listener = face.listener(tls_server_ctx)
        client = stdlib_client(listener.port, stdlib_client_context(tls_files.ca), b"hi\n")
        async with anyio.create_task_group() as tg:
            tg.start_soon(results.runner(client))
            conn = await listener.accept()
            assert await conn.recv_line() == b"hi"
            await conn.send(b"bye\n")
            await conn.close()
            await conn.close()  # idempotent
    assert results.values == [b"bye\n"]  # read_to_eof raised nothing: close_notify was sent


async def test_reset_during_client_handshake_is_an_ssl_error(
    face: Face, tls_client_ctx: SslContext
) -> None:
    def handler(conn: socket.socket) -> None:
        conn.recv(1)  # the ClientHello is on its way
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    with peer(handler) as p, anyio.fail_after(BODY), pytest.raises(SslError) as info:
        await face.client(tls_client_ctx, "localhost", p.port)
    assert info.value.__cause__ is not None
    assert "reset" in str(info.value).lower()


@pytest.mark.parametrize("flags", [SAFE, NO_FLAGS], ids=["SAFE_DISCONN", "no_flags"])
async def test_reset_during_server_handshake(
    face: Face, tls_files: TlsFiles, tls_server_ctx: SslContext, flags: SocketFlag
) -> None:
    results = Results()
    ctx = stdlib_client_context(tls_files.ca)
    with anyio.fail_after(BODY):
        listener = face.listener(tls_server_ctx)
        half = ManualClient(listener.port, ctx)
        half.sock.sendall(half.client_hello()[:30])
        half.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await anyio.sleep(0.05)
        half.close()  # RST mid-ClientHello
        errors: list[SslError] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(results.runner(stdlib_client(listener.port, ctx, b"good\n")))
            # Without SAFE_DISCONN the failure is raised by one accept, before or after the good
            # client's (handshakes end in any order: trio shuffles its tasks).
            for _ in range(2 if flags is NO_FLAGS else 1):
                try:
                    conn = await listener.accept(flags=flags)
                except SslError as exc:
                    errors.append(exc)
                    continue
                async with conn:
                    assert await conn.recv_line() == b"good"
                    await conn.send(b"served\n")
    assert results.values == [b"served\n"]
    assert len(errors) == (1 if flags is NO_FLAGS else 0)
    for error in errors:
        assert error.__cause__ is not None
        assert "reset" in str(error).lower()


# -- records -----------------------------------------------------------------------------------


async def test_timeout_in_the_middle_of_a_tls_record_loses_nothing(
    face: Face, tls_files: TlsFiles, tls_server_ctx: SslContext
) -> None:
    with anyio.fail_after(BODY):
        listener = face.listener(tls_server_ctx)
        client = ManualClient(listener.port, stdlib_client_context(tls_files.ca))
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(anyio.to_thread.run_sync, client.finish)
                conn = await listener.accept()
            async with conn:
                record = client.encrypt(b"one record\nand more")
                client.sock.sendall(record[: len(record) // 2])
                with pytest.raises(TimeoutError):
                    await conn.recv_line(timeout=0.3)
                client.sock.sendall(record[len(record) // 2 :])
                assert await conn.recv_line() == b"one record"
                with pytest.raises(TimeoutError):
                    await conn.recv(9, timeout=0.2)
                client.sock.sendall(client.encrypt(b"!"))
                assert await conn.recv(9) == b"and more!"
        finally:
            client.close()


# -- PSK ---------------------------------------------------------------------------------------


def psk_contexts(version: str) -> tuple[SslContext, SslContext, list[str | None]]:
    """(client, server, hints seen by the client) with certificate-less PSK contexts."""
    options: dict[str, str] = {}
    if version == "TLSv1.2":
        options = {"cipher_list": "PSK", "ciphersuites": ""}
    client, server = new_context(**options), new_context(**options)  # type: ignore[arg-type]
    hints: list[str | None] = []

    def identity(hint: str | None) -> tuple[str, bytes]:
        hints.append(hint)
        return "client-1", PSK_KEY

    client.client_get_psk_func = identity
    server.server_get_psk_func = lambda name: PSK_KEY if name == "client-1" else b""
    if version == "TLSv1.2":
        server.psk_identity_hint = "duonet-hint"
    return client, server, hints


@pytest.mark.skipif(not HAS_PSK, reason="PSK needs Python >= 3.13")
@pytest.mark.parametrize("version", ["TLSv1.2", "TLSv1.3"])
async def test_psk_handshake(face: Face, version: str) -> None:
    client_ctx, server_ctx, hints = psk_contexts(version)
    with anyio.fail_after(BODY):
        listener = face.listener(server_ctx)

        async def serve() -> None:
            async with await listener.accept(flags=NO_FLAGS) as conn:
                assert conn.get_psk_identity() == "client-1"
                assert conn.get_peer_certificates() == []
                await conn.send(b"psk " + await conn.recv_line() + b"\n")

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            async with await face.client(client_ctx, "localhost", listener.port) as client:
                assert client.get_peer_certificates() == []
                await client.send(b"works\n")
                assert await client.recv_line() == b"psk works"
    if version == "TLSv1.2":
        assert hints == ["duonet-hint"]
    else:
        assert hints
        assert set(hints) == {None}


@pytest.mark.skipif(not HAS_PSK, reason="PSK needs Python >= 3.13")
async def test_psk_unknown_identity_is_refused(face: Face) -> None:
    client_ctx, server_ctx, _ = psk_contexts("TLSv1.2")
    client_ctx.client_get_psk_func = lambda hint: ("stranger", PSK_KEY)
    with anyio.fail_after(BODY):
        listener = face.listener(server_ctx)
        server_errors: list[SslError] = []

        async def serve() -> None:
            with pytest.raises(SslError) as info:
                await listener.accept(flags=NO_FLAGS)
            server_errors.append(info.value)

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            with pytest.raises(SslError):
                await face.client(client_ctx, "localhost", listener.port)
    assert "psk" in str(server_errors[0]).lower()


@pytest.mark.skipif(HAS_PSK, reason="PSK works on Python >= 3.13")
def test_psk_functions_need_python_313() -> None:
    ctx = new_context(verify_mode=SslCVerifyMode.NONE)
    with pytest.raises(NotImplementedError, match=r"3\.13"):
        ctx.client_get_psk_func = lambda hint: ("client-1", PSK_KEY)
    with pytest.raises(NotImplementedError, match=r"3\.13"):
        ctx.server_get_psk_func = lambda name: PSK_KEY
