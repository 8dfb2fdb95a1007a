"""Issue 18: ``send_file`` on both faces, over TCP, Unix and TLS, against stdlib peers.

Every transfer is checked byte for byte (sha256) against the slice of the file that was asked for;
a transfer cut by a timeout (the peer stops reading) is completed by a second call from
``offset=file.tell()``, and the peer must then hold exactly the file: nothing lost, nothing twice.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import math
import os
import socket
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

import duonet
import duonet.aio
from conftest import TlsFiles
from test_streams import LONG, Thread, pair, read_all

KINDS = ["tcp", "unix", "tls"]
SIZE = 3 * 1024 * 1024 + 12345
#: Big enough that a peer that does not read blocks the sender (with the small buffers below).
BIG = 8 * 1024 * 1024


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def payload(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    data = os.urandom(BIG)
    path = tmp_path_factory.mktemp("sendfile") / "payload.bin"
    path.write_bytes(data)
    return path, data


def server_context(tls_files: TlsFiles) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls_files.cert, tls_files.key)
    return ctx


class Receiver:
    """The stdlib end: handshakes (TLS), waits for ``go``, then reads everything to the end."""

    def __init__(self, peer: socket.socket, kind: str, tls_files: TlsFiles, small: bool) -> None:
        if small:
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
        self.go = threading.Event()
        self.peer = peer
        self.kind = kind
        self.ctx = server_context(tls_files) if kind == "tls" else None
        self.thread = Thread(self._run)

    def _run(self) -> bytes:
        with contextlib.ExitStack() as stack:
            conn: Any = self.peer
            if self.ctx is not None:
                conn = stack.enter_context(self.ctx.wrap_socket(self.peer, server_side=True))
            assert self.go.wait(30)
            conn.settimeout(30)
            return read_all(conn)


@contextlib.contextmanager
def blocking_sender(
    kind: str, tls_files: TlsFiles, ctx: duonet.SslContext, small: bool = False
) -> Iterator[tuple[duonet.Socket, Receiver]]:
    with pair("unix" if kind == "unix" else "tcp") as (ours, peer):
        if small:
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
        receiver = Receiver(peer, kind, tls_files, small)
        sock = duonet.Socket.from_socket(ours)
        try:
            if kind == "tls":
                duonet.wrap_connected_socket(
                    ctx, sock, duonet.SslHandshakeType.CLIENT, "localhost", timeout=LONG
                )
            yield sock, receiver
        finally:
            receiver.go.set()
            sock.close()
            receiver.thread.join(30)


@contextlib.asynccontextmanager
async def async_sender(
    kind: str, tls_files: TlsFiles, ctx: duonet.SslContext, small: bool = False
) -> AsyncIterator[tuple[duonet.aio.AsyncSocket, Receiver]]:
    with pair("unix" if kind == "unix" else "tcp") as (ours, peer):
        if small:
            ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
        receiver = Receiver(peer, kind, tls_files, small)
        sock = duonet.aio.AsyncSocket.from_socket(ours)
        try:
            if kind == "tls":
                await duonet.aio.wrap_connected_socket(
                    ctx, sock, duonet.SslHandshakeType.CLIENT, "localhost", timeout=LONG
                )
            yield sock, receiver
        finally:
            receiver.go.set()
            await sock.close()
            await anyio.to_thread.run_sync(receiver.thread.join, 30)


# -- whole files, slices, paths, file objects without a descriptor ----------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_blocking_send_file(
    portal_backend: str,
    kind: str,
    payload: tuple[Path, bytes],
    tls_files: TlsFiles,
    tls_client_ctx: duonet.SslContext,
) -> None:
    path, data = payload
    expected = b""
    with blocking_sender(kind, tls_files, tls_client_ctx) as (sock, receiver):
        receiver.go.set()
        with open(path, "rb") as f:
            assert sock.send_file(f, count=SIZE) == SIZE  # from the start
            assert f.tell() == SIZE
            expected += data[:SIZE]
            f.seek(5)  # offset is absolute: the position does not matter
            assert sock.send_file(f, offset=1000, count=777) == 777
            assert f.tell() == 1777
            expected += data[1000:1777]
            assert sock.send_file(f, offset=BIG - 10, count=100) == 10  # stops at the end
            assert f.tell() == BIG
            expected += data[-10:]
            assert sock.send_file(f, offset=BIG + 5) == 0
        assert sock.send_file(str(path), offset=BIG - 1000) == 1000  # a path
        expected += data[-1000:]
        assert sock.send_file(path, count=0) == 0
        buffer = io.BytesIO(data[:200_000])  # no descriptor: read and sent in chunks
        assert sock.send_file(buffer, offset=7) == 200_000 - 7
        assert buffer.tell() == 200_000
        expected += data[7:200_000]
        sock.send_eof()
        got = receiver.thread.result()
    assert len(got) == len(expected)
    assert sha(got) == sha(expected)


@pytest.mark.parametrize("kind", KINDS)
async def test_async_send_file(
    anyio_backend: str,
    kind: str,
    payload: tuple[Path, bytes],
    tls_files: TlsFiles,
    tls_client_ctx: duonet.SslContext,
) -> None:
    path, data = payload
    async with async_sender(kind, tls_files, tls_client_ctx) as (sock, receiver):
        receiver.go.set()
        with anyio.fail_after(30), open(path, "rb") as f:
            assert await sock.send_file(f, offset=3, count=SIZE) == SIZE
            assert f.tell() == SIZE + 3
            assert await sock.send_file(path, offset=BIG - 5) == 5
            await sock.send_eof()
        got = await anyio.to_thread.run_sync(receiver.thread.result)
    assert sha(got) == sha(data[3 : SIZE + 3] + data[-5:])


# -- a timeout mid-file, then a second call that completes it exactly ---------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_blocking_send_file_timeout_then_resume(
    portal_backend: str,
    kind: str,
    payload: tuple[Path, bytes],
    tls_files: TlsFiles,
    tls_client_ctx: duonet.SslContext,
) -> None:
    path, data = payload
    with blocking_sender(kind, tls_files, tls_client_ctx, small=True) as (sock, receiver):
        with open(path, "rb") as f:
            with pytest.raises(TimeoutError, match="send_file"):
                sock.send_file(f, timeout=0.3)  # the peer does not read yet
            stopped = f.tell()
            assert 0 < stopped < BIG
            receiver.go.set()
            assert sock.send_file(f, offset=stopped, timeout=30) == BIG - stopped
            assert f.tell() == BIG
        sock.send_eof()
        got = receiver.thread.result()
    assert len(got) == BIG
    assert sha(got) == sha(data)


@pytest.mark.parametrize("kind", KINDS)
async def test_async_send_file_cancel_then_resume(
    anyio_backend: str,
    kind: str,
    payload: tuple[Path, bytes],
    tls_files: TlsFiles,
    tls_client_ctx: duonet.SslContext,
) -> None:
    path, data = payload
    async with async_sender(kind, tls_files, tls_client_ctx, small=True) as (sock, receiver):
        with open(path, "rb") as f:
            with anyio.move_on_after(0.3) as scope:  # a cancellation, not a timeout
                await sock.send_file(f)
            assert scope.cancelled_caught
            stopped = f.tell()
            assert 0 < stopped < BIG
            with pytest.raises(TimeoutError):
                await sock.send_file(f, offset=stopped, timeout=0.2)
            stopped = f.tell()
            receiver.go.set()
            with anyio.fail_after(30):
                assert await sock.send_file(f, offset=stopped) == BIG - stopped
                await sock.send_eof()
        got = await anyio.to_thread.run_sync(receiver.thread.result)
    assert sha(got) == sha(data)


# -- arguments ----------------------------------------------------------------------------------


def test_send_file_checks_its_arguments(
    portal_backend: str, payload: tuple[Path, bytes], tmp_path: Path
) -> None:
    path, _data = payload
    text = tmp_path / "t.txt"
    text.write_text("text")
    with pair("unix") as (ours, peer), duonet.Socket.from_socket(ours) as sock:
        with open(text) as tf, pytest.raises(TypeError, match="binary"):
            sock.send_file(tf)
        with pytest.raises(TypeError, match="file"):
            sock.send_file(42)
        with pytest.raises(ValueError, match="offset"):
            sock.send_file(path, offset=-1)
        with pytest.raises(TypeError, match="offset"):
            sock.send_file(path, offset=1.0)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="count"):
            sock.send_file(path, count=-1)
        with pytest.raises(ValueError, match="timeout"):
            sock.send_file(path, timeout=math.nan)
        with pytest.raises(TypeError, match="timeout"):
            sock.send_file(path, timeout=True)
        with pytest.raises(FileNotFoundError):
            sock.send_file(tmp_path / "missing")
        peer.setblocking(False)
        with pytest.raises(BlockingIOError):
            peer.recv(1)  # nothing was sent by any of them


@pytest.mark.parametrize("kind", KINDS)
def test_zero_copy_on_plain_sockets_only(
    portal_backend: str,
    kind: str,
    payload: tuple[Path, bytes],
    tls_files: TlsFiles,
    tls_client_ctx: duonet.SslContext,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, data = payload
    calls = []
    real = os.sendfile

    def counting(*args: Any) -> int:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(os, "sendfile", counting)
    with blocking_sender(kind, tls_files, tls_client_ctx) as (sock, receiver):
        receiver.go.set()
        assert sock.send_file(path, count=100_000) == 100_000
        sock.send_eof()
        assert receiver.thread.result() == data[:100_000]
    assert bool(calls) == (kind != "tls")


def test_send_file_needs_a_connected_stream(
    portal_backend: str, payload: tuple[Path, bytes]
) -> None:
    path, _data = payload
    with duonet.new_socket() as sock, pytest.raises(OSError, match="not connected") as info:
        sock.send_file(path)
    assert info.value.errno == errno.ENOTCONN
    with pair("unix") as (ours, _peer), duonet.Socket.from_socket(ours) as sock:
        sock.send_eof()
        with pytest.raises(BrokenPipeError, match="send_eof"):
            sock.send_file(path)


async def test_async_send_file_reads_wrapped_files(
    anyio_backend: str, tmp_path: Path, tls_files: TlsFiles, tls_client_ctx: duonet.SslContext
) -> None:
    # A GzipFile has the fileno() of the compressed file: its bytes are what read() gives.
    import gzip

    text = b"decompressed " * 10000
    path = tmp_path / "t.gz"
    with gzip.open(path, "wb") as out:
        out.write(text)
    async with async_sender("tcp", tls_files, tls_client_ctx) as (sock, receiver):
        receiver.go.set()
        with gzip.open(path, "rb") as f, anyio.fail_after(LONG):
            assert await sock.send_file(f, offset=13) == len(text) - 13
            await sock.send_eof()
        got = await anyio.to_thread.run_sync(receiver.thread.result)
    assert got == text[13:]
