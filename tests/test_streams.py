"""Issue 18, streams: ``lines()`` and iteration, ``send_eof``, and ``AsyncSocket`` as an anyio
``ByteStream``, on both faces (SPEC "Added in the second release").

Peers are stdlib sockets (``socket.socketpair()`` or a TCP pair on 127.0.0.1, and a stdlib
``ssl`` server for TLS); duonet adopts its end with ``from_socket``. Blocking tests run with the
portal on asyncio and trio (``portal_backend``), async tests on asyncio and trio
(``anyio_backend``).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import math
import os
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import anyio.abc
import anyio.streams.tls
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.text import TextReceiveStream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import duonet
import duonet.aio
from conftest import TlsFiles
from linemodel import split_lines

LONG = 5.0
SHORT = 0.1


# -- helpers ----------------------------------------------------------------------------------


@contextlib.contextmanager
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """Two connected stdlib sockets over 127.0.0.1: (ours, the peer's)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        ours = socket.create_connection(listener.getsockname(), timeout=LONG)
        peer, _ = listener.accept()
    peer.settimeout(LONG)
    with ours, peer:
        yield ours, peer


@contextlib.contextmanager
def pair(kind: str) -> Iterator[tuple[socket.socket, socket.socket]]:
    if kind == "tcp":
        with tcp_pair() as both:
            yield both
    else:
        ours, peer = socket.socketpair()
        peer.settimeout(LONG)
        with ours, peer:
            yield ours, peer


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


class Thread(threading.Thread):
    """Runs ``fn()`` and keeps its result or exception; ``result()`` joins and returns it."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self._fn = fn
        self.value: Any = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.value = self._fn()
        except BaseException as exc:
            self.error = exc

    def result(self, timeout: float = 15) -> Any:
        self.join(timeout)
        assert not self.is_alive(), "peer thread did not finish"
        if self.error is not None:
            raise self.error
        return self.value


def read_all(conn: socket.socket | ssl.SSLSocket) -> bytes:
    parts = []
    while data := conn.recv(65536):
        parts.append(data)
    return b"".join(parts)


LINE_BYTES = st.binary(max_size=300) | st.lists(
    st.sampled_from([b"a", b"bc", b"\r", b"\n", b"\r\n", b"x" * 7]), max_size=60
).map(b"".join)


# -- iteration: the same lines as successive recv_line calls ----------------------------------


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=LINE_BYTES, cuts=st.lists(st.integers(0, 400), max_size=8), max_length=st.integers(1, 9)
)
def test_blocking_iteration_equals_recv_line(
    portal_backend: str, data: bytes, cuts: list[int], max_length: int
) -> None:
    for buffered in (True, False):
        with pair("unix") as (ours, peer):
            sock = duonet.Socket.from_socket(ours, buffered=buffered)
            sender = Thread(lambda: [peer.sendall(c) for c in chunked(data, cuts)] and None)
            sender.result()
            peer.shutdown(socket.SHUT_WR)
            got = list(sock.lines(timeout=LONG, max_length=max_length))
            sock.close()
        assert got == split_lines(data, max_length), buffered


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=25, deadline=None)
@given(
    data=LINE_BYTES, cuts=st.lists(st.integers(0, 400), max_size=8), max_length=st.integers(1, 9)
)
def test_async_iteration_equals_recv_line(
    backend: str, data: bytes, cuts: list[int], max_length: int
) -> None:
    async def main() -> list[list[bytes]]:
        results = []
        for buffered in (True, False):
            with pair("unix") as (ours, peer):
                sock = duonet.aio.AsyncSocket.from_socket(ours, buffered=buffered)
                got = []
                for chunk in chunked(data, cuts):
                    peer.sendall(chunk)
                    with anyio.fail_after(LONG):
                        # read what is there so far, then stop at a timeout: nothing lost
                        with contextlib.suppress(TimeoutError):
                            async for line in sock.lines(timeout=0, max_length=max_length):
                                got.append(line)
                peer.shutdown(socket.SHUT_WR)
                with anyio.fail_after(LONG):
                    got += [line async for line in sock.lines(max_length=max_length)]
                await sock.close()
                results.append(got)
        return results

    for got in anyio.run(main, backend=backend):
        assert got == split_lines(data, max_length)


def test_blocking_for_line_in_sock(portal_backend: str) -> None:
    with pair("tcp") as (ours, peer), duonet.Socket.from_socket(ours) as sock:
        peer.sendall(b"one\r\n\r\ntwo\rthree\nfour")
        peer.shutdown(socket.SHUT_WR)
        assert list(sock) == [b"one", b"\r\n", b"two", b"three", b"four"]
        assert sock.recv_line() == b""
        assert list(sock) == []


async def test_async_for_line_in_sock(anyio_backend: str) -> None:
    with pair("tcp") as (ours, peer):
        async with duonet.aio.AsyncSocket.from_socket(ours) as sock:
            peer.sendall(b"one\r\n\r\ntwo\rthree\nfour")
            peer.shutdown(socket.SHUT_WR)
            with anyio.fail_after(LONG):
                assert [line async for line in sock] == [
                    b"one",
                    b"\r\n",
                    b"two",
                    b"three",
                    b"four",
                ]
                assert await sock.recv_line() == b""


# -- leaving the loop loses nothing -----------------------------------------------------------

STREAM = b"".join(b"line %d\n" % i for i in range(2000))


@pytest.mark.parametrize("buffered", [True, False])
@pytest.mark.parametrize("stop_at", [0, 1, 7, 600])
def test_blocking_break_and_other_reads_lose_nothing(
    portal_backend: str, buffered: bool, stop_at: int
) -> None:
    with pair("tcp") as (ours, peer):
        with duonet.Socket.from_socket(ours, buffered=buffered) as sock:
            sender = Thread(lambda: peer.sendall(STREAM))
            got = []
            for i, line in enumerate(sock.lines(timeout=LONG)):
                got.append(line + b"\n")
                if i == stop_at:
                    break
                if i % 3 == 1:  # another read between two steps sees the very next bytes
                    got.append(sock.recv(2, timeout=LONG))
                    got.append(sock.recv_line(timeout=LONG) + b"\n")
            sender.result()
            peer.shutdown(socket.SHUT_WR)
            rest = sock.recv(len(STREAM), timeout=LONG)
        assert b"".join(got) + rest == STREAM
        if not buffered:
            assert not sock.has_data_buffered()


def test_blocking_exception_and_timeout_lose_nothing(portal_backend: str) -> None:
    with pair("unix") as (ours, peer), duonet.Socket.from_socket(ours) as sock:
        peer.sendall(b"a\nb\nc")
        got: list[bytes] = []

        def fail_on_first(lines: Iterator[bytes]) -> None:
            for line in lines:
                got.append(line)
                raise KeyError(line)

        with pytest.raises(KeyError):
            fail_on_first(iter(sock))
        with pytest.raises(TimeoutError):
            got.extend(sock.lines(timeout=SHORT))
        assert got == [b"a", b"b"]
        peer.sendall(b"d\n")
        peer.shutdown(socket.SHUT_WR)
        assert list(sock.lines(timeout=LONG)) == [b"cd"]


def test_blocking_partial_line_kept_across_timeout(portal_backend: str) -> None:
    with pair("unix") as (ours, peer), duonet.Socket.from_socket(ours) as sock:
        peer.sendall(b"a\nb")
        it = sock.lines(timeout=SHORT)
        assert next(it) == b"a"
        with pytest.raises(TimeoutError):
            next(it)
        peer.sendall(b"c\n")
        peer.shutdown(socket.SHUT_WR)
        assert list(sock.lines(timeout=LONG)) == [b"bc"]


@pytest.mark.parametrize("buffered", [True, False])
async def test_async_leaving_the_loop_loses_nothing(anyio_backend: str, buffered: bool) -> None:
    with pair("tcp") as (ours, peer):
        async with duonet.aio.AsyncSocket.from_socket(ours, buffered=buffered) as sock:
            peer.sendall(b"a\nb\nc\nd\ne")
            got = []
            with anyio.fail_after(LONG):
                async for line in sock:  # break
                    got.append(line)
                    break

                async def collect(lines: AsyncIterator[bytes], fail: bool) -> None:
                    async for line in lines:
                        got.append(line)
                        if fail:
                            raise KeyError(line)

                with pytest.raises(KeyError):  # an exception
                    await collect(sock.lines(), fail=True)
                assert await sock.recv(1) == b"c"
                assert await sock.recv(1) == b"\n"
                with pytest.raises(TimeoutError):  # a timeout (the partial "e" stays)
                    await collect(sock.lines(timeout=SHORT), fail=False)
                with anyio.move_on_after(SHORT):  # a cancellation
                    async for line in sock.lines():
                        got.append(line)
                peer.sendall(b"f\n")
                peer.shutdown(socket.SHUT_WR)
                got += [line async for line in sock.lines()]
            assert got == [b"a", b"b", b"d", b"ef"]
            if not buffered:
                assert not sock.has_data_buffered()


def test_lines_checks_its_arguments(portal_backend: str) -> None:
    with pair("unix") as (ours, _peer), duonet.Socket.from_socket(ours) as sock:
        asock = sock.aio
        for face in (sock, asock):
            with pytest.raises(ValueError, match="max_length"):
                face.lines(max_length=0)
            with pytest.raises(TypeError, match="max_length"):
                face.lines(max_length=1.5)  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="timeout"):
                face.lines(timeout=True)
            with pytest.raises(TypeError, match="timeout"):
                face.lines(timeout="1")  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="timeout"):
                face.lines(timeout=math.nan)
            with pytest.raises(TypeError, match="flags"):
                face.lines(None, 1)  # type: ignore[arg-type]


def test_blocking_iteration_at_least_as_fast_as_recv_line(portal_backend: str) -> None:
    # Not a timing assertion: iterating serves buffered lines in the caller's thread (no
    # portal hop), as recv_line does. Counted by the portal's calls.
    data = b"x\n" * 20000
    with pair("unix") as (ours, peer), duonet.Socket.from_socket(ours) as sock:
        sender = Thread(lambda: (peer.sendall(data), peer.shutdown(socket.SHUT_WR)))
        count = sum(1 for _ in sock)
        sender.result()
    assert count == 20000


# -- send_eof ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_blocking_send_eof_peer_reads_eof_then_replies(portal_backend: str, kind: str) -> None:
    with pair(kind) as (ours, peer), duonet.Socket.from_socket(ours) as sock:

        def serve() -> None:
            request = read_all(peer)  # ends at our send_eof
            peer.sendall(b"got " + request + b"\nbye\n")
            peer.shutdown(socket.SHUT_WR)

        server = Thread(serve)
        sock.send(b"hello")
        sock.send_eof()
        sock.send_eof()  # idempotent
        assert list(sock.lines(timeout=LONG)) == [b"got hello", b"bye"]
        server.result()
        sock.send_eof()  # also after the peer closed
        with pytest.raises(BrokenPipeError, match="send_eof"):
            sock.send(b"more")
        assert not sock.try_send(b"more")


@pytest.mark.parametrize("kind", ["tcp", "unix"])
async def test_async_send_eof(anyio_backend: str, kind: str) -> None:
    with pair(kind) as (ours, peer):
        async with duonet.aio.AsyncSocket.from_socket(ours) as sock:
            await sock.send(b"ping")
            await sock.send_eof()
            assert peer.recv(10) == b"ping"
            assert peer.recv(10) == b""  # the end of the stream, while we can still read
            peer.sendall(b"pong\n")
            peer.close()
            with anyio.fail_after(LONG):
                assert await sock.recv_line() == b"pong"
                assert await sock.recv_line() == b""
            await sock.send_eof()
            await sock.send_eof()


def test_send_eof_after_a_reset_and_unconnected(portal_backend: str) -> None:
    with pair("tcp") as (ours, peer), duonet.Socket.from_socket(ours) as sock:
        import struct

        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()
        time.sleep(0.05)
        sock.send_eof()  # the peer is gone: no error
        assert sock.recv(1, timeout=LONG) == b""
    with duonet.new_socket() as fresh:
        with pytest.raises(OSError, match="not connected") as info:
            fresh.send_eof()
        assert info.value.errno == errno.ENOTCONN
    fresh.close()
    with pytest.raises(duonet.SocketClosedError):
        fresh.send_eof()


@contextlib.contextmanager
def stdlib_tls_server(
    tls_files: TlsFiles, handler: Callable[[ssl.SSLSocket], Any]
) -> Iterator[tuple[int, Thread]]:
    """A stdlib ``ssl`` server on 127.0.0.1 running ``handler`` for one client (TLS 1.3)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls_files.cert, tls_files.key)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(LONG)

    def run() -> Any:
        conn, _ = listener.accept()
        conn.settimeout(LONG)
        with ctx.wrap_socket(conn, server_side=True) as tls:
            return handler(tls)

    try:
        thread = Thread(run)
        yield listener.getsockname()[1], thread
    finally:
        thread.join(15)
        listener.close()


def tls_echo_after_eof(tls: ssl.SSLSocket) -> bytes:
    """Read to the client's close_notify, answer, then send close_notify back."""
    request = read_all(tls)
    tls.sendall(b"got " + request + b"\n")
    tls.unwrap()
    return request


def test_blocking_send_eof_tls(
    portal_backend: str, tls_files: TlsFiles, tls_client_ctx: duonet.SslContext
) -> None:
    with (
        stdlib_tls_server(tls_files, tls_echo_after_eof) as (port, server),
        duonet.new_socket() as sock,
    ):
        duonet.wrap_socket(tls_client_ctx, sock)
        sock.connect("127.0.0.1", port, timeout=LONG)
        sock.send(b"hello")
        sock.send_eof()
        sock.send_eof()
        # the peer's close_notify answering ours is the end of the stream, not an error
        no_flags = duonet.SocketFlag(0)
        assert sock.recv_line(timeout=LONG, flags=no_flags) == b"got hello"
        assert sock.recv_line(timeout=LONG, flags=no_flags) == b""
        assert server.result() == b"hello"
        sock.send_eof()


async def test_async_send_eof_tls(
    anyio_backend: str, tls_files: TlsFiles, tls_client_ctx: duonet.SslContext
) -> None:
    with stdlib_tls_server(tls_files, tls_echo_after_eof) as (port, server):
        async with duonet.aio.new_async_socket() as sock:
            duonet.wrap_socket(tls_client_ctx, sock)
            with anyio.fail_after(LONG):
                await sock.connect("127.0.0.1", port)
                await sock.send(b"hello")
                await sock.send_eof()
                assert await sock.recv(100, flags=duonet.SocketFlag(0)) == b"got hello\n"
                with pytest.raises(anyio.EndOfStream):
                    await sock.receive()
                await sock.send_eof()
        assert await anyio.to_thread.run_sync(server.result) == b"hello"


# -- AsyncSocket is an anyio ByteStream -------------------------------------------------------


async def test_bytestream_receive_and_attributes(anyio_backend: str) -> None:
    with pair("tcp") as (ours, peer):
        async with duonet.aio.AsyncSocket.from_socket(ours) as sock:
            assert isinstance(sock, anyio.abc.ByteStream)
            A = anyio.abc.SocketAttribute
            assert sock.extra(A.family) == socket.AF_INET
            assert sock.extra(A.local_address) == ours.getsockname()
            assert sock.extra(A.local_port) == ours.getsockname()[1]
            assert sock.extra(A.remote_address) == peer.getsockname()
            assert sock.extra(A.remote_port) == peer.getsockname()[1]
            assert sock.extra(A.raw_socket) is ours
            with pytest.raises(ValueError, match="max_bytes"):
                await sock.receive(0)
            await sock.send(b"via ByteStream.send")  # ByteStream.send(item) is duonet's send
            assert peer.recv(100) == b"via ByteStream.send"
            peer.sendall(b"abc\ndef")
            with anyio.fail_after(LONG):
                assert await sock.recv_line() == b"abc"
                assert await sock.receive(2) == b"de"  # buffered bytes first
                assert await sock.receive() == b"f"
                peer.sendall(b"0123456789")
                got = await sock.receive(4)
                assert 1 <= len(got) <= 4
                assert got + await sock.recv(10 - len(got)) == b"0123456789"
                peer.shutdown(socket.SHUT_WR)
                with pytest.raises(anyio.EndOfStream):
                    await sock.receive()
        with pytest.raises(anyio.ClosedResourceError):
            await sock.receive()


async def test_bytestream_unix_attributes_and_aclose(anyio_backend: str) -> None:
    with pair("unix") as (ours, _peer):
        sock = duonet.aio.AsyncSocket.from_socket(ours)
        A = anyio.abc.SocketAttribute
        assert sock.extra(A.family) == socket.AF_UNIX
        assert sock.extra(A.raw_socket) is ours
        with pytest.raises(anyio.TypedAttributeLookupError):
            sock.extra(A.local_port)
        await sock.aclose()
        assert sock.get_fd() == -1
        with pytest.raises(anyio.ClosedResourceError):
            await sock.receive()


async def test_bytestream_close_during_receive(anyio_backend: str) -> None:
    with pair("unix") as (ours, _peer):
        sock = duonet.aio.AsyncSocket.from_socket(ours)
        async with anyio.create_task_group() as tg:

            async def closer() -> None:
                await anyio.wait_all_tasks_blocked()
                await sock.aclose()

            tg.start_soon(closer)
            with anyio.fail_after(LONG), pytest.raises(anyio.ClosedResourceError):
                await sock.receive()


async def test_anyio_wrappers_mixed_with_duonet_reads(anyio_backend: str) -> None:
    with pair("tcp") as (ours, peer):
        async with duonet.aio.AsyncSocket.from_socket(ours) as sock:
            peer.sendall(b"HEAD\r\nlen: 5\r\n\r\nhello" + "héllo wörld\n".encode() + b"tail\n")
            peer.shutdown(socket.SHUT_WR)
            with anyio.fail_after(LONG):
                assert await sock.recv_line() == b"HEAD"
                buffered = BufferedByteReceiveStream(sock)
                assert await buffered.receive_until(b"\r\n\r\n", 100) == b"len: 5"
                assert await buffered.receive_exactly(5) == b"hello"
                rest = buffered.buffer  # what anyio's wrapper read ahead stays there
                text = TextReceiveStream(sock)
                chars = rest.decode()
                async for piece in text:
                    chars += piece
                assert chars == "héllo wörld\ntail\n"
                assert await sock.recv_line() == b""


async def test_bytestream_tls_truncation_is_end_of_stream(
    anyio_backend: str, tls_files: TlsFiles, tls_client_ctx: duonet.SslContext
) -> None:
    def rude(tls: ssl.SSLSocket) -> None:
        tls.sendall(b"data")
        # close the TCP connection without close_notify
        raw = socket.socket(fileno=os.dup(tls.fileno()))
        raw.shutdown(socket.SHUT_RDWR)
        raw.close()

    with stdlib_tls_server(tls_files, rude) as (port, server):
        async with duonet.aio.new_async_socket() as sock:
            duonet.wrap_socket(tls_client_ctx, sock)
            with anyio.fail_after(LONG):
                await sock.connect("127.0.0.1", port)
                A = anyio.abc.SocketAttribute
                assert sock.extra(A.remote_port) == port
                assert sock.extra(anyio.streams.tls.TLSAttribute.tls_version).startswith("TLS")
                assert await sock.receive() == b"data"
                with pytest.raises(anyio.EndOfStream):
                    await sock.receive()
        await anyio.to_thread.run_sync(server.result)


def test_blocking_socket_is_not_a_bytestream() -> None:
    # The blocking face has no event loop of its own to be a stream in; its AsyncSocket is.
    with duonet.new_socket() as sock:
        assert not isinstance(sock, anyio.abc.ByteStream)
        assert isinstance(sock.aio, anyio.abc.ByteStream)


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
async def test_bytestream_ipv6_addresses_as_anyio_gives_them(anyio_backend: str) -> None:
    try:
        listener = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError:
        pytest.skip("IPv6 loopback is not available")
    with listener:
        async with await duonet.aio.dial("::1", listener.getsockname()[1], timeout=LONG) as sock:
            conn, _ = listener.accept()
            with conn:
                A = anyio.abc.SocketAttribute
                assert sock.extra(A.family) == socket.AF_INET6
                assert sock.extra(A.remote_address) == ("::1", listener.getsockname()[1])
                assert sock.extra(A.local_address) == conn.getpeername()[:2]


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    data=LINE_BYTES,
    cuts=st.lists(st.integers(0, 400), max_size=6),
    max_length=st.integers(1, 9),
)
def test_blocking_unbuffered_tcp_iteration_with_trickling_peer(
    portal_backend: str, data: bytes, cuts: list[int], max_length: int
) -> None:
    # The peer sends in pieces with pauses, so lines are found while more is awaited (the
    # SO_RCVLOWAT wait of unbuffered TCP sockets); every step leaves nothing buffered.
    with pair("tcp") as (ours, peer), duonet.Socket.from_socket(ours, buffered=False) as sock:

        def trickle() -> None:
            for chunk in chunked(data, cuts):
                peer.sendall(chunk)
                time.sleep(0.003)
            peer.shutdown(socket.SHUT_WR)

        sender = Thread(trickle)
        got = []
        for line in sock.lines(timeout=LONG, max_length=max_length):
            got.append(line)
            assert not sock.has_data_buffered()
        sender.result()
    assert got == split_lines(data, max_length)


async def test_anyio_tls_stream_over_an_async_socket(
    anyio_backend: str, tls_files: TlsFiles
) -> None:
    # anyio's own TLS layered on a duonet socket: it drives receive/send/aclose as any stream.
    def upper(tls: ssl.SSLSocket) -> None:
        tls.sendall(tls.recv(100).upper())
        tls.unwrap()

    client_ctx = ssl.create_default_context(cafile=tls_files.ca)
    with stdlib_tls_server(tls_files, upper) as (port, server):
        with anyio.fail_after(LONG):
            sock = await duonet.aio.dial("127.0.0.1", port)
            tls = await anyio.streams.tls.TLSStream.wrap(
                sock, hostname="localhost", ssl_context=client_ctx
            )
            await tls.send(b"hello over anyio's tls")
            assert await tls.receive() == b"HELLO OVER ANYIO'S TLS"
            await tls.aclose()
        assert sock.get_fd() == -1
        await anyio.to_thread.run_sync(server.result)
