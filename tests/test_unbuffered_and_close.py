"""Issue 18: unbuffered sockets hold nothing back, and closing loses nothing that was sent.

* An unbuffered duonet socket and a stdlib reader on ``os.dup`` of its descriptor share one stream:
  whatever duonet did not return, the other reader gets, byte for byte (SPEC "Unbuffered sockets
  hold nothing back").
* A client that sends 4 MiB and closes while the kernel still holds bytes it never read (a
  greeting, TLS 1.3 session tickets) must close with a FIN, not a reset: the peer receives all
  4 MiB (SPEC "Closing loses nothing that was sent").
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import time
from typing import Any

import anyio
import anyio.to_thread
import pytest

import duonet
import duonet.aio
from conftest import TlsFiles
from linemodel import split_lines
from test_streams import LONG, SHORT, Thread, pair, read_all, stdlib_tls_server

NO_FLAGS = duonet.SocketFlag(0)


def dup_reader(sock: Any) -> socket.socket:
    reader = socket.socket(fileno=os.dup(sock.get_fd()))
    reader.settimeout(LONG)
    return reader


def recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        assert chunk
        data += chunk
    return data


# -- unbuffered: an os.dup reader sees every byte duonet did not return -----------------------


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_blocking_unbuffered_shares_the_stream_with_a_dup_reader(
    portal_backend: str, kind: str
) -> None:
    stream = b"first\r\nsecond\nTHIRD-raw-bytes" + b"x" * 5000 + b"\nfourth\rfifth\n" + b"tail"
    with (
        pair(kind) as (ours, peer),
        duonet.Socket.from_socket(ours, buffered=False) as sock,
        dup_reader(sock) as other,
    ):
        peer.sendall(stream)
        peer.shutdown(socket.SHUT_WR)
        assert sock.recv_line(timeout=LONG) == b"first"
        assert not sock.has_data_buffered()
        assert sock.recv_line(timeout=LONG) == b"second"
        assert not sock.has_data_buffered()
        assert recv_exactly(other, 5) == b"THIRD"
        assert sock.recv(4, timeout=LONG) == b"-raw"  # no more than 4 taken from the kernel
        assert not sock.has_data_buffered()
        assert sock.skip(6, timeout=LONG) == 6  # exactly "-bytes"
        assert not sock.has_data_buffered()
        target = bytearray(10)
        assert sock.recv_into(target, timeout=LONG) == 10
        assert target == b"x" * 10
        assert recv_exactly(other, 10) == b"x" * 10
        pieces = []
        for line in sock.lines(timeout=LONG, max_length=1000):
            assert not sock.has_data_buffered()
            pieces.append(line)
            if line == b"fourth":
                break
        assert pieces == [b"x" * 1000] * 4 + [b"x" * 980, b"fourth"]
        assert recv_exactly(other, 6) == b"fifth\n"
        assert sock.recv_line(timeout=LONG) == b"tail"  # the last line, cut by the close
        assert sock.recv_line(timeout=LONG) == b""


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_blocking_unbuffered_line_waits_without_taking(portal_backend: str, kind: str) -> None:
    with (
        pair(kind) as (ours, peer),
        duonet.Socket.from_socket(ours, buffered=False) as sock,
        dup_reader(sock) as other,
    ):
        peer.sendall(b"ab")
        with pytest.raises(TimeoutError):
            sock.recv_line(timeout=SHORT)
        assert not sock.has_data_buffered()
        assert sock.read_line_nowait() == (duonet.ReadLineResult.NONE, b"")
        assert recv_exactly(other, 1) == b"a"  # the partial line is still in the kernel

        def trickle() -> None:
            for piece in (b"c", b"d", b"e\r"):
                time.sleep(0.05)
                peer.sendall(piece)
            time.sleep(0.05)
            peer.sendall(b"\nnext\n")

        sender = Thread(trickle)
        assert sock.recv_line(timeout=LONG) == b"bcde"  # ended by the lone \r at once
        sender.result()
        assert sock.recv_line(timeout=LONG) == b"next"  # the \n after the \r was state
        assert not sock.has_data_buffered()
        peer.sendall(b"rest")
        assert recv_exactly(other, 4) == b"rest"


@pytest.mark.parametrize("kind", ["tcp", "unix"])
async def test_async_unbuffered_shares_the_stream(anyio_backend: str, kind: str) -> None:
    with pair(kind) as (ours, peer):
        async with duonet.aio.AsyncSocket.from_socket(ours, buffered=False) as sock:
            with dup_reader(sock) as other, anyio.fail_after(LONG):
                peer.sendall(b"one\ntwo\nthree\nfour")
                assert await sock.recv_line() == b"one"
                assert not sock.has_data_buffered()
                async for line in sock.lines():
                    assert line == b"two"
                    break
                assert not sock.has_data_buffered()
                assert recv_exactly(other, 6) == b"three\n"
                assert await sock.receive(2) == b"fo"  # anyio's read: at most max_bytes
                assert not sock.has_data_buffered()
                with pytest.raises(TimeoutError):
                    await sock.recv_line(timeout=SHORT)
                assert recv_exactly(other, 2) == b"ur"


@pytest.mark.parametrize("buffered", [True, False])
def test_blocking_tls_unbuffered_holds_no_plaintext(
    portal_backend: str, buffered: bool, tls_files: TlsFiles, tls_client_ctx: duonet.SslContext
) -> None:
    lines = b"".join(b"line %d\r\n" % i for i in range(50))

    def serve(tls: ssl.SSLSocket) -> None:
        tls.sendall(lines + b"blob" * 100)
        tls.recv(1)  # until the client closes

    with (
        stdlib_tls_server(tls_files, serve) as (port, server),
        duonet.new_socket(buffered=buffered) as sock,
    ):
        duonet.wrap_socket(tls_client_ctx, sock)
        sock.connect("127.0.0.1", port, timeout=LONG)
        for i in range(50):
            assert sock.recv_line(timeout=LONG) == b"line %d" % i
            if not buffered:
                assert not sock.has_data_buffered()
        data = b""
        while len(data) < 400:
            piece = sock.recv(7, timeout=LONG) if not buffered else sock.recv(400, timeout=LONG)
            assert 0 < len(piece) <= (7 if not buffered else 400)
            if not buffered:
                assert not sock.has_data_buffered()
            data += piece
        assert data == b"blob" * 100
    server.result()


# -- closing loses nothing --------------------------------------------------------------------

PAYLOAD = os.urandom(4 * 1024 * 1024)
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


def greeter_then_reader(conn: socket.socket) -> tuple[int, str]:
    conn.sendall(b"hello, this greeting is never read\r\n" * 50)
    data = read_all(conn)
    return len(data), hashlib.sha256(data).hexdigest()


def tls_reader(tls: ssl.SSLSocket) -> tuple[int, str]:
    data = read_all(tls)  # TLS 1.3: the server sent session tickets the client never reads
    return len(data), hashlib.sha256(data).hexdigest()


def test_blocking_close_with_unread_bytes_is_no_reset(portal_backend: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(LONG)

        def serve() -> tuple[int, str]:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(LONG)
                return greeter_then_reader(conn)

        server = Thread(serve)
        sock = duonet.dial("127.0.0.1", listener.getsockname()[1], timeout=LONG)
        time.sleep(0.1)  # the greeting is in our kernel, unread
        sock.send(PAYLOAD)
        sock.close()  # nothing in flight: closed in this thread (the fast path)
        assert server.result() == (len(PAYLOAD), DIGEST)


def test_blocking_tls13_close_with_unread_tickets_is_no_reset(
    portal_backend: str, tls_files: TlsFiles, tls_client_ctx: duonet.SslContext
) -> None:
    with stdlib_tls_server(tls_files, tls_reader) as (port, server):
        sock = duonet.new_socket()
        duonet.wrap_socket(tls_client_ctx, sock)
        sock.connect("127.0.0.1", port, timeout=LONG)
        time.sleep(0.1)
        sock.send(PAYLOAD)
        sock.close()
        assert server.result() == (len(PAYLOAD), DIGEST)


async def test_async_close_with_unread_bytes_is_no_reset(
    anyio_backend: str, tls_files: TlsFiles, tls_client_ctx: duonet.SslContext
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(LONG)

        def serve() -> tuple[int, str]:
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(LONG)
                return greeter_then_reader(conn)

        server = Thread(serve)
        with anyio.fail_after(LONG):
            sock = await duonet.aio.dial("127.0.0.1", listener.getsockname()[1])
            await anyio.sleep(0.1)
            await sock.send(PAYLOAD)
            await sock.close()
        assert await anyio.to_thread.run_sync(server.result) == (len(PAYLOAD), DIGEST)

    with stdlib_tls_server(tls_files, tls_reader) as (port, tls_server):
        tls = duonet.aio.new_async_socket()
        duonet.wrap_socket(tls_client_ctx, tls)
        with anyio.fail_after(LONG):
            await tls.connect("127.0.0.1", port)
            await anyio.sleep(0.1)
            await tls.send(PAYLOAD)
            await tls.aclose()
        assert await anyio.to_thread.run_sync(tls_server.result) == (len(PAYLOAD), DIGEST)


def test_close_leaves_unread_bytes_to_a_dup_holder(portal_backend: str) -> None:
    # Another descriptor of the same socket: the close is not the last one, and what the kernel
    # holds belongs to that reader.
    with pair("tcp") as (ours, peer):
        sock = duonet.Socket.from_socket(ours, buffered=False)
        other = dup_reader(sock)
        with other:
            peer.sendall(b"for the other reader")
            time.sleep(0.05)
            sock.close()
            assert recv_exactly(other, 20) == b"for the other reader"


TRICKY = b"one\r\ntwo\nthree\rfour\r\r\nfive\n\nsix\r\n\rseven-is-long\r" + b"\neight"


@pytest.mark.parametrize("max_length", [1, 5, 100])
async def test_async_tls_unbuffered_lines_follow_the_rules(
    anyio_backend: str,
    max_length: int,
    tls_files: TlsFiles,
    tls_client_ctx: duonet.SslContext,
) -> None:
    def serve(tls: ssl.SSLSocket) -> None:
        for i in range(0, len(TRICKY), 7):  # records that cut lines and terminators
            tls.sendall(TRICKY[i : i + 7])
        tls.unwrap()

    with stdlib_tls_server(tls_files, serve) as (port, server):
        async with duonet.aio.new_async_socket(buffered=False) as sock:
            duonet.wrap_socket(tls_client_ctx, sock)
            with anyio.fail_after(LONG):
                await sock.connect("127.0.0.1", port)
                got = []
                async for line in sock.lines(max_length=max_length, flags=NO_FLAGS):
                    got.append(line)
                    if len(line) < max_length:  # ended by its terminator: nothing held back
                        assert not sock.has_data_buffered()
        await anyio.to_thread.run_sync(server.result)
    assert got == split_lines(TRICKY, max_length)


async def test_async_tls_unbuffered_read_line_nowait(
    anyio_backend: str, tls_files: TlsFiles, tls_client_ctx: duonet.SslContext
) -> None:
    def serve(tls: ssl.SSLSocket) -> None:
        tls.sendall(b"a\r\nb\n")
        assert tls.recv(1) == b"!"  # until the client has read both lines
        tls.sendall(b"c")
        tls.unwrap()

    async def next_result(sock: duonet.aio.AsyncSocket) -> tuple[duonet.ReadLineResult, bytes]:
        with anyio.fail_after(LONG):
            while (result := sock.read_line_nowait())[0] is duonet.ReadLineResult.NONE:
                await anyio.sleep(0.01)
        return result

    with stdlib_tls_server(tls_files, serve) as (port, server):
        async with duonet.aio.new_async_socket(buffered=False) as sock:
            duonet.wrap_socket(tls_client_ctx, sock)
            with anyio.fail_after(LONG):
                await sock.connect("127.0.0.1", port)
            assert await next_result(sock) == (duonet.ReadLineResult.FULL_LINE, b"a")
            assert not sock.has_data_buffered()
            assert await next_result(sock) == (duonet.ReadLineResult.FULL_LINE, b"b")
            assert not sock.has_data_buffered()
            assert sock.read_line_nowait() == (duonet.ReadLineResult.NONE, b"")
            await sock.send(b"!")
            assert await next_result(sock) == (duonet.ReadLineResult.PARTIAL_LINE, b"c")
            assert sock.read_line_nowait() == (duonet.ReadLineResult.DISCONNECTED, b"")
        await anyio.to_thread.run_sync(server.result)


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_blocking_unbuffered_line_longer_than_the_kernel_holds(
    portal_backend: str, kind: str
) -> None:
    # Waiting for the end of a 3 MB line without taking anything would wait forever: the
    # kernel's queue fills up first. The line still comes back whole, and nothing after it.
    line = os.urandom(3 * 1024 * 1024).replace(b"\n", b"-").replace(b"\r", b"-")
    with (
        pair(kind) as (ours, peer),
        duonet.Socket.from_socket(ours, buffered=False) as sock,
        dup_reader(sock) as other,
    ):
        sender = Thread(lambda: peer.sendall(line + b"\nafter"))
        assert sock.recv_line(timeout=30, max_length=4_000_000) == line
        assert not sock.has_data_buffered()
        sender.result()
        assert recv_exactly(other, 5) == b"after"


CHILD = """
import socket, sys
conn = socket.socket(fileno=int(sys.argv[1]))
conn.settimeout(10)
sys.stdin.readline()  # until the parent has closed its socket
data = b""
while chunk := conn.recv(65536):
    data += chunk
sys.stdout.write(data.decode())
"""


@pytest.mark.parametrize("buffered", [True, False])
def test_close_leaves_unread_bytes_to_a_child_process(portal_backend: str, buffered: bool) -> None:
    import subprocess
    import sys

    with pair("tcp") as (ours, peer):
        sock = duonet.Socket.from_socket(ours, buffered=buffered)
        peer.sendall(b"mine\n")
        assert sock.recv_line(timeout=LONG) == b"mine"
        if not buffered:
            peer.sendall(b"the child's")
            time.sleep(0.05)
        fd = sock.get_fd()
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(fd)],
            pass_fds=[fd],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            sock.close()  # not the last holder: the kernel's bytes are left to the child
            peer.sendall(b" bytes")
            peer.shutdown(socket.SHUT_WR)
            out, _ = child.communicate(b"go\n", timeout=LONG)
        finally:
            child.kill()
            child.wait()
    assert out == (b"the child's bytes" if not buffered else b" bytes")
