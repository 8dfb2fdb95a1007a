"""TLS against real peers: ``openssl s_server``, ``openssl s_client`` and ``curl``.

Each test is skipped when its binary is missing. Every subprocess listens or connects on
127.0.0.1 only, is bounded by timeouts and is killed (and its output reader joined) in cleanup.
The four faces (aio on asyncio and trio, blocking with the portal on asyncio and trio) are the
conformance scenarios' faces, from the ``face`` fixture of ``tests/reliability/test_harness.py``,
as in ``test_tls``.
"""

from __future__ import annotations

import contextlib
import queue
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import trustme

from conftest import TlsFiles
from duonet import SslContext, SslCVerifyMode, SslError, new_context
from reliability.test_harness import (  # noqa: F401 (fixtures, registered under their names)
    STEP,
    anyio_backend_fixture,
    face_fixture,
    face_name_fixture,
    tls_client,
)
from scenarios import NO_FLAGS, Face, duonet_listener
from test_tls import BODY

NONE = SslCVerifyMode.NONE

OPENSSL = shutil.which("openssl")
CURL = shutil.which("curl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl binary is not installed")
needs_curl = pytest.mark.skipif(CURL is None, reason="the curl binary is not installed")
#: How long a subprocess may take to start listening, or to finish its exchange (seconds).
PROCESS_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def other_host(tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """``(cert, key)`` for other.example, from the trusted CA."""
    folder: Path = tmp_path_factory.mktemp("interop")
    leaf = tls_ca.issue_cert("other.example")
    cert, key = str(folder / "other.pem"), str(folder / "other.key")
    leaf.cert_chain_pems[0].write_to_path(cert)
    leaf.private_key_pem.write_to_path(key)
    return cert, key


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A CA file that does not hold the session CA."""
    path = str(tmp_path_factory.mktemp("interop_ca") / "other_ca.pem")
    trustme.CA().cert_pem.write_to_path(path)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    """A subprocess whose combined output is read by a thread, line by line."""

    def __init__(self, args: list[str], stdin: bytes | None = None) -> None:
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.lines: queue.Queue[bytes] = queue.Queue()
        self.output: list[bytes] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if stdin is not None:
            assert self.proc.stdin is not None
            self.proc.stdin.write(stdin)
            self.proc.stdin.close()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)

    def wait_for(self, text: bytes, timeout: float = PROCESS_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0.01))
            except queue.Empty:
                raise AssertionError(f"no {text!r} within {timeout} s: {self.text()!r}") from None
            if text in line:
                return
            if left <= 0:
                raise AssertionError(f"no {text!r} within {timeout} s: {self.text()!r}")

    def wait(self, timeout: float = PROCESS_TIMEOUT) -> int:
        """The exit status (blocking; run it in a worker thread from async code)."""
        status = self.proc.wait(timeout)
        self._reader.join(timeout)
        return status

    def text(self) -> bytes:
        return b"".join(self.output)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(PROCESS_TIMEOUT)
        self._reader.join(PROCESS_TIMEOUT)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        assert not self._reader.is_alive()


@contextlib.contextmanager
def process(args: list[str], stdin: bytes | None = None) -> Iterator[Process]:
    proc = Process(args, stdin)
    try:
        yield proc
    finally:
        proc.stop()


@contextlib.contextmanager
def s_server(files: TlsFiles, *options: str) -> Iterator[int]:
    """``openssl s_server`` on 127.0.0.1 with the session's localhost certificate; its port."""
    assert OPENSSL is not None
    port = free_port()
    args = [OPENSSL, "s_server", "-accept", f"127.0.0.1:{port}", "-cert", files.cert]
    with process([*args, "-key", files.key, *options]) as server:
        server.wait_for(b"ACCEPT")
        yield port


def s_client_args(port: int, ca: str, *options: str) -> list[str]:
    assert OPENSSL is not None
    return [
        OPENSSL,
        "s_client",
        "-connect",
        f"127.0.0.1:{port}",
        "-CAfile",
        ca,
        "-verify_return_error",
        "-verify_hostname",
        "localhost",
        "-quiet",
        *options,
    ]


# -- duonet client, openssl s_server -----------------------------------------------------------


@needs_openssl
async def test_client_against_s_server_www(
    face: Face, tls_files: TlsFiles, tls_client_ctx: SslContext
) -> None:
    with s_server(tls_files, "-www") as port, anyio.fail_after(BODY):
        async with await tls_client(face, tls_client_ctx, port, "localhost") as client:
            assert client.get_peer_certificates()[0] == tls_files.cert_der
            await client.send(b"GET / HTTP/1.0\r\n\r\n")
            assert await client.recv_line(timeout=STEP) == b"HTTP/1.0 200 ok"
            lines = []
            while line := await client.recv_line(timeout=STEP):
                lines.append(line)
            assert any(b"Ciphers supported" in line for line in lines), lines


@needs_openssl
@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
async def test_client_against_s_server_echo(
    face: Face, tls_files: TlsFiles, tls_client_ctx: SslContext, version: str
) -> None:
    with s_server(tls_files, "-rev", version) as port, anyio.fail_after(BODY):
        async with await tls_client(face, tls_client_ctx, port, "localhost") as client:
            for word in (b"hello", b"duonet", b"x" * 1000):
                await client.send(word + b"\n")
                assert await client.recv_line(timeout=STEP) == word[::-1]


@needs_openssl
async def test_client_refuses_a_tls11_s_server(
    face: Face, tls_files: TlsFiles, tls_client_ctx: SslContext
) -> None:
    options = ("-rev", "-tls1_1", "-cipher", "ALL:@SECLEVEL=0")
    with s_server(tls_files, *options) as port, anyio.fail_after(BODY), pytest.raises(SslError):
        await tls_client(face, tls_client_ctx, port, "localhost")


@needs_openssl
async def test_client_refuses_s_server_for_another_host(
    face: Face, tls_files: TlsFiles, tls_client_ctx: SslContext, other_host: tuple[str, str]
) -> None:
    cert, key = other_host
    with s_server(tls_files, "-rev", "-cert", cert, "-key", key) as port, anyio.fail_after(BODY):
        with pytest.raises(SslError, match="mismatch"):
            await tls_client(face, tls_client_ctx, port, "localhost")
        # The same server passes with verification off.
        async with await tls_client(face, new_context(verify_mode=NONE), port, "localhost") as c:
            await c.send(b"abc\n")
            assert await c.recv_line(timeout=STEP) == b"cba"


# -- duonet server, openssl s_client -----------------------------------------------------------


@needs_openssl
async def test_server_against_s_client(
    face: Face, tls_files: TlsFiles, tls_server_ctx: SslContext
) -> None:
    with anyio.fail_after(BODY):
        async with duonet_listener(face, "tls", ctx=tls_server_ctx) as (listener, port):
            with process(s_client_args(port, tls_files.ca), stdin=b"ping\n") as client:
                async with await listener.accept(flags=NO_FLAGS, timeout=STEP) as conn:
                    assert conn.got_handshake()
                    assert await conn.recv_line(timeout=STEP) == b"ping"
                    await conn.send(b"hello ping\n")
                status = await anyio.to_thread.run_sync(client.wait)
                assert b"hello ping" in client.text()
                assert status == 0, client.text()


@needs_openssl
async def test_server_refused_by_s_client_with_another_ca(
    face: Face, tls_files: TlsFiles, tls_server_ctx: SslContext, other_ca: str
) -> None:
    with anyio.fail_after(BODY):
        async with duonet_listener(face, "tls", ctx=tls_server_ctx) as (listener, port):
            with process(s_client_args(port, other_ca), stdin=b"ping\n") as client:
                with pytest.raises(SslError, match="unknown CA"):
                    await listener.accept(flags=NO_FLAGS, timeout=STEP)
                status = await anyio.to_thread.run_sync(client.wait)
                assert status != 0


@needs_openssl
async def test_server_requires_and_sees_the_s_client_certificate(
    face: Face, tls_files: TlsFiles
) -> None:
    server_ctx = new_context(cert_file=tls_files.cert, key_file=tls_files.key, ca_file=tls_files.ca)
    server_ctx.context.verify_mode = ssl.CERT_REQUIRED
    options = ("-cert", tls_files.client_cert, "-key", tls_files.client_key)
    with anyio.fail_after(BODY):
        async with duonet_listener(face, "tls", ctx=server_ctx) as (listener, port):
            args = s_client_args(port, tls_files.ca, *options)
            with process(args, stdin=b"who\n") as client:
                async with await listener.accept(flags=NO_FLAGS, timeout=STEP) as conn:
                    assert conn.get_peer_certificates()[0] == tls_files.client_der
                    assert await conn.recv_line(timeout=STEP) == b"who"
                    await conn.send(b"client.example\n")
                status = await anyio.to_thread.run_sync(client.wait)
                assert b"client.example" in client.text()
                assert status == 0, client.text()


# -- duonet HTTP-ish server, curl --------------------------------------------------------------


@needs_curl
async def test_curl_against_a_duonet_https_server(
    face: Face, tls_files: TlsFiles, tls_server_ctx: SslContext
) -> None:
    assert CURL is not None
    with anyio.fail_after(BODY):
        async with duonet_listener(face, "tls", ctx=tls_server_ctx) as (listener, port):
            args = [
                CURL,
                "--silent",
                "--show-error",
                "--max-time",
                str(PROCESS_TIMEOUT),
                "--cacert",
                tls_files.ca,
                "--resolve",
                f"localhost:{port}:127.0.0.1",
                f"https://localhost:{port}/hello",
            ]
            with process(args) as curl:
                async with await listener.accept(flags=NO_FLAGS, timeout=STEP) as conn:
                    request = []
                    while (line := await conn.recv_line(timeout=STEP)) not in (b"\r\n", b""):
                        request.append(line)
                    assert request[0].startswith(b"GET /hello HTTP/1.")
                    assert f"Host: localhost:{port}".encode() in request
                    await conn.send(
                        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello curl\n"
                    )
                status = await anyio.to_thread.run_sync(curl.wait)
                assert status == 0, curl.text()
                assert curl.text() == b"hello curl\n"


@needs_curl
async def test_curl_refuses_a_duonet_server_it_does_not_trust(
    face: Face, tls_files: TlsFiles, tls_server_ctx: SslContext
) -> None:
    assert CURL is not None
    with anyio.fail_after(BODY):
        async with duonet_listener(face, "tls", ctx=tls_server_ctx) as (listener, port):
            url = f"https://127.0.0.1:{port}/"
            args = [CURL, "--silent", "--max-time", str(PROCESS_TIMEOUT), url]
            # No --cacert: curl uses the system CAs, which do not know the trustme CA.
            with process(args) as curl:
                with pytest.raises(SslError, match="unknown CA"):
                    await listener.accept(flags=NO_FLAGS, timeout=STEP)
                status = await anyio.to_thread.run_sync(curl.wait)
                assert status != 0
