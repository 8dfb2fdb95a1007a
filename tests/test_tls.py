"""TLS over real sockets, what only TLS has: client verification, TLS listeners, mutual TLS,
versions, STARTTLS, close_notify, resets during handshakes, records, PSK.

What any stream transport does (reads, lines, timeouts, no loss, sends, half-close, closing, bulk
data both ways, a peer closing without close_notify, a peer resetting after the handshake) is
checked over TLS by the conformance scenarios (``tests/scenarios.py``, transport ``"tls"``), on
the same four faces.

Every test runs on four faces, those of the conformance scenarios (``tests/scenarios.py``) as the
reliability suite's ``face`` fixture hands them out (``tests/reliability/test_harness.py``):
``duonet.aio`` on asyncio and on trio, and the blocking ``duonet`` face with its portal on asyncio
and on trio, whose sockets take the awaited calls of ``AsyncSocket`` and run each in a worker
thread, so one test body serves all four. Every connect, accept, read and handshake carries a
timeout, every socket is closed by the ``async with`` that made it, and every body runs under
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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme

from conftest import Peer, TlsFiles, needs_ipv6, peer
from duonet import (
    ReadLineResult,
    SocketFlag,
    SslContext,
    SslCVerifyMode,
    SslError,
    SslHandshakeType,
    new_context,
)
from reliability.test_harness import (  # noqa: F401 (fixtures, registered under their names)
    STEP,
    anyio_backend_fixture,
    face_fixture,
    face_name_fixture,
    stdlib_server_context,
    tls_client,
    wrap,
    wrap_connected,
)
from scenarios import NO_FLAGS, Face, Sock, duonet_listener, opened

SAFE = SocketFlag.SAFE_DISCONN
#: The bound of a whole scenario.
BODY = 20.0
HAS_PSK = sys.version_info >= (3, 13)
PSK_KEY = bytes(range(32))


# -- stdlib peers ------------------------------------------------------------------------------


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


# -- a duonet server and a duonet client -------------------------------------------------------


async def exchange(
    face: Face,
    server_ctx: SslContext,
    client_ctx: SslContext,
    server: Callable[[Sock], Awaitable[None]],
    client: Callable[[Sock], Awaitable[None]],
    flags: SocketFlag = NO_FLAGS,
) -> None:
    """A TLS listener with ``server_ctx`` and a client with ``client_ctx`` connected to it (as
    ``"localhost"``), at once: ``server(conn)`` on what ``accept`` (with ``flags``) hands out,
    ``client(sock)`` on the client. Both are closed after."""
    async with duonet_listener(face, "tls", ctx=server_ctx) as (listener, port):

        async def serve() -> None:
            async with await listener.accept(flags=flags, timeout=STEP) as conn:
                await server(conn)

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            async with await tls_client(face, client_ctx, port, "localhost") as sock:
                await client(sock)


async def client_refused(
    face: Face, server_ctx: SslContext, client_ctx: SslContext, *, in_read: bool = True
) -> SslError:
    """A client with ``client_ctx`` refused by a listener with ``server_ctx``: both ends raise
    ``SslError``. Returns the server's, raised by its ``accept``. The client's is raised by its
    ``connect``, or with ``in_read`` by its first read at the latest."""
    async with duonet_listener(face, "tls", ctx=server_ctx) as (listener, port):
        server_errors: list[SslError] = []

        async def serve() -> None:
            with pytest.raises(SslError) as info:
                await listener.accept(flags=NO_FLAGS, timeout=STEP)
            server_errors.append(info.value)

        async with anyio.create_task_group() as tg:
            tg.start_soon(serve)
            if in_read:
                with pytest.raises(SslError):
                    async with await tls_client(face, client_ctx, port, "localhost") as c:
                        await c.recv(1, timeout=STEP)
            else:
                with pytest.raises(SslError):
                    await tls_client(face, client_ctx, port, "localhost")
    return server_errors[0]


# -- client: verification ----------------------------------------------------------------------


async def test_client_verifies_a_duonet_server(
    face: Face, tls_files: TlsFiles, tls_server_ctx: SslContext, tls_client_ctx: SslContext
) -> None:
    async def server(conn: Sock) -> None:
        assert conn.is_ssl()
        assert conn.got_handshake()
        await conn.send(b"hello " + await conn.recv_line(timeout=STEP) + b"\n")

    async def client(sock: Sock) -> None:
        assert sock.is_ssl()
        assert sock.got_handshake()
        certs = sock.get_peer_certificates()
        assert certs[0] == tls_files.cert_der
        assert len(certs) == expected_chain_length()
        assert certs[-1] == (tls_files.ca_der if HAS_PSK else tls_files.cert_der)
        await sock.send(b"duonet\n")
        assert await sock.recv_line(timeout=STEP) == b"hello duonet"
        # The server closed with close_notify: a clean EOF even without SAFE_DISCONN.
        assert await sock.recv(1, flags=NO_FLAGS, timeout=STEP) == b""

    with anyio.fail_after(BODY):
        await exchange(face, tls_server_ctx, tls_client_ctx, server, client, flags=SAFE)


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
            async with await tls_client(face, tls_client_ctx, p.port, host) as client:
                assert client.get_peer_certificates()[0] == tls_files.cert_der
                await client.send(b"ping\n")
                assert await client.recv_line(timeout=STEP) == b"pong"
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
            async with opened(face.new_socket()) as sock:
                wrap(tls_client_ctx, sock)
                with pytest.raises(SslError) as info:
                    await sock.connect(host, p.port, timeout=STEP)
                assert not sock.got_handshake()
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
            async with await tls_client(face, ctx, p.port, host) as client:
                assert client.got_handshake()
                assert await client.recv_line(timeout=STEP) == b"fine"
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
            async with await tls_client(face, ctx, p.port, "localhost") as client:
                assert await client.recv_line(timeout=STEP) == b"trusted"
            # Plain PEER ignores the variable (certifi's CAs): the same server is unknown.
            with pytest.raises(SslError, match="certificate verify failed"):
                await tls_client(face, new_context(), p.port, "localhost")
    assert len(p.errors) == 1  # the second handshake, refused by the client


# -- server: TLS listeners ---------------------------------------------------------------------


async def test_accept_hands_out_handshaken_clients(
    face: Face, tls_files: TlsFiles, tls_server_ctx: SslContext
) -> None:
    results = Results()
    with anyio.fail_after(BODY):
        async with duonet_listener(face, "tls", ctx=tls_server_ctx) as (listener, port):
            assert listener.is_ssl()
            assert not listener.got_handshake()
            client = stdlib_client(port, stdlib_client_context(tls_files.ca), b"hi\n")
            async with anyio.create_task_group() as tg:
                tg.start_soon(results.runner(client))
                conn, address = await listener.accept_addr(timeout=STEP)
                async with conn:
                    assert address == "127.0.0.1"
                    assert conn.is_ssl()
                    assert conn.got_handshake()
                    assert conn.get_peer_certificates() == []  # the client sent none
                    assert conn.get_psk_identity() == ""
                    assert await conn.recv_line(timeout=STEP) == b"hi"
                    await conn.send(b"bye\n")
    assert results.values == [b"bye\n"]  # ... and then a clean close (close_notify)


async def test_got_handshake_follows_the_socket(face: Face, tls_files: TlsFiles) -> None:
    def handler(tls: ssl.SSLSocket) -> None:
        tls.sendall(b"x\n")
        read_to_eof(tls)

    with tls_peer(stdlib_server_context(tls_files.cert, tls_files.key), handler) as p:
        with anyio.fail_after(BODY):
            async with face.new_socket() as sock:
                assert not sock.is_ssl()
                with pytest.raises(SslError):
                    sock.got_handshake()
                wrap(new_context(ca_file=tls_files.ca), sock)
                assert sock.is_ssl()
                assert sock.got_handshake() is False  # wrapped, not connected yet
                await sock.connect("localhost", p.port, timeout=STEP)
                assert sock.got_handshake() is True
                assert await sock.recv_line(timeout=STEP) == b"x"
            async with duonet_listener(face) as (plain, _):
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
        async with duonet_listener(face, "tls", ctx=tls_server_ctx) as (listener, port):
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
                            await conn.send(b"ok " + await conn.recv_line(timeout=STEP) + b"\n")
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
        async with duonet_listener(face, "tls", ctx=tls_server_ctx) as (listener, port):
            with socket.create_connection(("127.0.0.1", port), timeout=STEP) as http:
                http.sendall(b"GET / HTTP/1.0\r\n\r\n")
                good = stdlib_client(port, stdlib_client_context(tls_files.ca), b"tls\n")
                async with anyio.create_task_group() as tg:
                    tg.start_soon(results.runner(good))
                    async with await listener.accept(timeout=STEP) as conn:
                        assert await conn.recv_line(timeout=STEP) == b"tls"
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
        async with duonet_listener(face, "tls", ctx=tls_server_ctx) as (listener, port):
            with socket.create_connection(("127.0.0.1", port), timeout=STEP) as http:
                http.sendall(b"GET / HTTP/1.0\r\n\r\n")
                with pytest.raises(SslError) as info:
                    await listener.accept(flags=NO_FLAGS, timeout=STEP)
            assert "http" in str(info.value).lower()
            assert isinstance(info.value.__cause__, ssl.SSLError)
            # The listener goes on serving.
            good = stdlib_client(port, stdlib_client_context(tls_files.ca))
            async with anyio.create_task_group() as tg:
                tg.start_soon(results.runner(good))
                async with await listener.accept(flags=NO_FLAGS, timeout=STEP) as conn:
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
                assert await conn.recv_line(timeout=STEP) == b"and you"


@contextlib.asynccontextmanager
async def waiting_for_finished(
    face: Face, ctx: SslContext, files: TlsFiles, spent: float
) -> AsyncIterator[tuple[Sock, ManualClient]]:
    """A TLS listener, and a client whose ClientHello an ``accept`` answered before timing out
    after ``spent`` seconds (nobody was there before): the server waits for its Finished."""
    async with duonet_listener(face, "tls", ctx=ctx) as (listener, port):
        with pytest.raises(TimeoutError):
            await listener.accept(timeout=0.1)  # nobody there
        client = ManualClient(port, stdlib_client_context(files.ca))
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
    async def server(conn: Sock) -> None:
        assert conn.get_peer_certificates() == []
        await conn.send(b"anonymous ok\n")

    async def client(sock: Sock) -> None:
        assert await sock.recv_line(timeout=STEP) == b"anonymous ok"

    server_ctx = mutual_server_ctx(tls_files, required=False)
    with anyio.fail_after(BODY):
        await exchange(face, server_ctx, tls_client_ctx, server, client)


async def test_cert_required_refuses_a_client_without_certificate(
    face: Face, tls_files: TlsFiles, tls_client_ctx: SslContext
) -> None:
    server_ctx = mutual_server_ctx(tls_files, required=True)
    with anyio.fail_after(BODY):
        # Under TLS 1.3 the client's handshake ends before the server's verdict: the refusal
        # may only show up in the client's first read.
        server_error = await client_refused(face, server_ctx, tls_client_ctx)
    assert "certificate" in str(server_error).lower()


@pytest.mark.parametrize("required", [False, True], ids=["peer", "cert_required"])
async def test_client_certificate_is_verified_and_visible(
    face: Face, tls_files: TlsFiles, required: bool
) -> None:
    client_ctx = new_context(
        cert_file=tls_files.client_cert, key_file=tls_files.client_key, ca_file=tls_files.ca
    )

    async def server(conn: Sock) -> None:
        certs = conn.get_peer_certificates()
        assert certs[0] == tls_files.client_der
        assert len(certs) == expected_chain_length()
        if HAS_PSK:
            assert certs[-1] == tls_files.ca_der
        await conn.send(b"hello client.example\n")

    async def client(sock: Sock) -> None:
        assert await sock.recv_line(timeout=STEP) == b"hello client.example"

    server_ctx = mutual_server_ctx(tls_files, required)
    with anyio.fail_after(BODY):
        await exchange(face, server_ctx, client_ctx, server, client)


async def test_peer_server_refuses_an_untrusted_client_certificate(
    face: Face, tls_files: TlsFiles, bad: BadCerts
) -> None:
    cert, key = bad.untrusted_client
    client_ctx = new_context(cert_file=cert, key_file=key, ca_file=tls_files.ca)
    server_ctx = mutual_server_ctx(tls_files, required=False)
    with anyio.fail_after(BODY):
        server_error = await client_refused(face, server_ctx, client_ctx)
    assert "certificate verify failed" in str(server_error)


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
            async with await tls_client(face, tls_client_ctx, p.port, "localhost") as client:
                await client.send(b"echo\n")
                assert await client.recv_line(timeout=STEP) == b"echo"
    assert p.errors == []
    assert versions == ["TLSv1.2" if version is ssl.TLSVersion.TLSv1_2 else "TLSv1.3"]


async def test_tls11_server_is_refused(
    face: Face, tls_files: TlsFiles, tls_client_ctx: SslContext
) -> None:
    server_ctx = versioned_server_context(tls_files, ssl.TLSVersion.TLSv1_1)
    with tls_peer(server_ctx, ignore) as p, anyio.fail_after(BODY), pytest.raises(SslError):
        await tls_client(face, tls_client_ctx, p.port, "localhost")


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
        async with (
            duonet_listener(face, "tls", ctx=tls_server_ctx) as (listener, port),
            anyio.create_task_group() as tg,
        ):
            tg.start_soon(results.runner(old_client))
            with pytest.raises(SslError):
                await listener.accept(flags=NO_FLAGS, timeout=STEP)
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
            async with await tls_client(face, tls_client_ctx, p.port, "localhost") as client:
                while not seen or seen[-1][0] != ReadLineResult.DISCONNECTED:
                    # The blocking face makes it from a thread without a loop (a hop for TLS).
                    result = client.read_line_nowait()
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
        async with duonet_listener(face) as (listener, port):

            async def serve() -> None:
                async with await listener.accept(timeout=STEP) as conn:
                    await conn.send(b"220 ready\r\n")
                    assert await conn.recv_line(timeout=STEP) == b"STARTTLS"
                    await conn.send(b"220 go ahead\r\n")
                    await wrap_connected(tls_server_ctx, conn, SslHandshakeType.SERVER)
                    assert conn.is_ssl()
                    assert conn.got_handshake()
                    await conn.send(b"secret " + await conn.recv_line(timeout=STEP) + b"\r\n")

            async with anyio.create_task_group() as tg:
                tg.start_soon(serve)
                async with opened(face.new_socket()) as client:
                    await client.connect("127.0.0.1", port, timeout=STEP)
                    assert await client.recv_line(timeout=STEP) == b"220 ready"
                    await client.send(b"STARTTLS\r\n")
                    assert await client.recv_line(timeout=STEP) == b"220 go ahead"
                    assert not client.is_ssl()
                    await wrap_connected(
                        tls_client_ctx, client, SslHandshakeType.CLIENT, "localhost"
                    )
                    assert client.got_handshake()
                    assert client.get_peer_certificates()[0] == tls_files.cert_der
                    await client.send(b"over tls\r\n")
                    assert await client.recv_line(timeout=STEP) == b"secret over tls"


async def test_starttls_client_hello_in_the_same_write(
    face: Face, tls_files: TlsFiles, tls_server_ctx: SslContext
) -> None:
    """The ClientHello arrives with the STARTTLS line: recv_line has buffered it already."""
    with anyio.fail_after(BODY):
        async with duonet_listener(face) as (listener, port):
            client = ManualClient(port, stdlib_client_context(tls_files.ca))
            try:
                client.sock.sendall(b"STARTTLS\r\n" + client.client_hello())
                async with await listener.accept(timeout=STEP) as conn:
                    assert await conn.recv_line(timeout=STEP) == b"STARTTLS"
                    assert conn.has_data_buffered()  # the ClientHello, read along with the line
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(anyio.to_thread.run_sync, client.finish)
                        await wrap_connected(tls_server_ctx, conn, SslHandshakeType.SERVER)
                    await conn.send(b"over tls\n")
                    assert await anyio.to_thread.run_sync(client.read) == b"over tls\n"
                    await anyio.to_thread.run_sync(client.write, b"reply\n")
                    assert await conn.recv_line(timeout=STEP) == b"reply"
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
            async with opened(face.new_socket()) as client:
                await client.connect("127.0.0.1", p.port, timeout=STEP)
                await client.send(b"STARTTLS\r\n")
                assert await client.recv_line(timeout=STEP) == b"220 go ahead"
                with pytest.raises(SslError, match="mismatch"):
                    await wrap_connected(
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
                client = await tls_client(face, tls_client_ctx, p.port, "localhost")
                async with opened(client):
                    assert await client.recv_line(timeout=STEP) == b"hello"
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
        async with duonet_listener(face, "tls", ctx=tls_server_ctx) as (listener, port):
            client = stdlib_client(port, stdlib_client_context(tls_files.ca), b"hi\n")
            async with anyio.create_task_group() as tg:
                tg.start_soon(results.runner(client))
                async with opened(await listener.accept(timeout=STEP)) as conn:
                    assert await conn.recv_line(timeout=STEP) == b"hi"
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
        await tls_client(face, tls_client_ctx, p.port, "localhost")
    assert info.value.__cause__ is not None
    assert "reset" in str(info.value).lower()


@pytest.mark.parametrize("flags", [SAFE, NO_FLAGS], ids=["SAFE_DISCONN", "no_flags"])
async def test_reset_during_server_handshake(
    face: Face, tls_files: TlsFiles, tls_server_ctx: SslContext, flags: SocketFlag
) -> None:
    results = Results()
    ctx = stdlib_client_context(tls_files.ca)
    with anyio.fail_after(BODY):
        async with duonet_listener(face, "tls", ctx=tls_server_ctx) as (listener, port):
            half = ManualClient(port, ctx)
            half.sock.sendall(half.client_hello()[:30])
            half.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await anyio.sleep(0.05)
            half.close()  # RST mid-ClientHello
            errors: list[SslError] = []
            async with anyio.create_task_group() as tg:
                tg.start_soon(results.runner(stdlib_client(port, ctx, b"good\n")))
                # Without SAFE_DISCONN the failure is raised by one accept, before or after the good
                # client's (handshakes end in any order: trio shuffles its tasks).
                for _ in range(2 if flags is NO_FLAGS else 1):
                    try:
                        conn = await listener.accept(flags=flags, timeout=STEP)
                    except SslError as exc:
                        errors.append(exc)
                        continue
                    async with conn:
                        assert await conn.recv_line(timeout=STEP) == b"good"
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
        async with duonet_listener(face, "tls", ctx=tls_server_ctx) as (listener, port):
            client = ManualClient(port, stdlib_client_context(tls_files.ca))
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(anyio.to_thread.run_sync, client.finish)
                    conn = await listener.accept(timeout=STEP)
                async with conn:
                    record = client.encrypt(b"one record\nand more")
                    client.sock.sendall(record[: len(record) // 2])
                    with pytest.raises(TimeoutError):
                        await conn.recv_line(timeout=0.3)
                    client.sock.sendall(record[len(record) // 2 :])
                    assert await conn.recv_line(timeout=STEP) == b"one record"
                    with pytest.raises(TimeoutError):
                        await conn.recv(9, timeout=0.2)
                    client.sock.sendall(client.encrypt(b"!"))
                    assert await conn.recv(9, timeout=STEP) == b"and more!"
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

    async def server(conn: Sock) -> None:
        assert conn.get_psk_identity() == "client-1"
        assert conn.get_peer_certificates() == []
        await conn.send(b"psk " + await conn.recv_line(timeout=STEP) + b"\n")

    async def client(sock: Sock) -> None:
        assert sock.get_peer_certificates() == []
        await sock.send(b"works\n")
        assert await sock.recv_line(timeout=STEP) == b"psk works"

    with anyio.fail_after(BODY):
        await exchange(face, server_ctx, client_ctx, server, client)
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
        server_error = await client_refused(face, server_ctx, client_ctx, in_read=False)
    assert "psk" in str(server_error).lower()


@pytest.mark.skipif(HAS_PSK, reason="PSK works on Python >= 3.13")
def test_psk_functions_need_python_313() -> None:
    ctx = new_context(verify_mode=SslCVerifyMode.NONE)
    with pytest.raises(NotImplementedError, match=r"3\.13"):
        ctx.client_get_psk_func = lambda hint: ("client-1", PSK_KEY)
    with pytest.raises(NotImplementedError, match=r"3\.13"):
        ctx.server_get_psk_func = lambda name: PSK_KEY
