"""duonet's own TLS channel (``duonet._core._tlschannel.TlsChannel``), on its edge cases.

The channels run over real TCP loopback sockets, with the stdlib's TLS contexts and trustme
certificates; the whole-socket behaviour (errors, flags, lines) is in ``test_tls``. Here: both
directions at once, a send cancelled while the kernel is full and the good send after it,
close_notify both ways, truncation, no-wait decryption, several records per read, and a TLS 1.3
key update from ``openssl s_server`` answered while reading.
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
from collections.abc import AsyncIterator, Iterator

import anyio
import anyio.abc
import pytest
from anyio.streams.tls import TLSAttribute

import duonet.aio as aio
from conftest import TlsFiles
from duonet import SslContext
from duonet._core._io import Waiter
from duonet._core._tlschannel import TlsChannel

BODY = 20.0
OPENSSL = shutil.which("openssl")


@contextlib.contextmanager
def tcp_pair(small: bool) -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected loopback pair, non-blocking (tiny kernel buffers when ``small``)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname()[:2])
        server, _ = listener.accept()
    with client, server:
        for sock in (client, server):
            sock.setblocking(False)
            if small:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32768)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
        yield client, server


def make_channel(ctx: ssl.SSLContext, sock: socket.socket, server_side: bool) -> TlsChannel:
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    sslobj = ctx.wrap_bio(
        incoming,
        outgoing,
        server_side=server_side,
        server_hostname=None if server_side else "localhost",
    )
    return TlsChannel(sslobj, incoming, outgoing, sock, Waiter(sock))


async def handshake(channel: TlsChannel, sock: socket.socket) -> None:
    while True:
        try:
            channel.ssl_object.do_handshake()
            break
        except ssl.SSLWantReadError:
            await channel.flush()
            if not channel.pull():
                await anyio.wait_readable(sock)
    await channel.flush()


@contextlib.asynccontextmanager
async def channels(
    files: TlsFiles, small: bool = False
) -> AsyncIterator[tuple[TlsChannel, TlsChannel, socket.socket, socket.socket]]:
    """``(client, server, client_sock, server_sock)`` after a TLS 1.3 handshake."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(files.cert, files.key)
    server_ctx.num_tickets = 4  # tickets arrive while the client reads
    client_ctx = ssl.create_default_context(cafile=files.ca)
    with tcp_pair(small) as (client_sock, server_sock):
        client = make_channel(client_ctx, client_sock, False)
        server = make_channel(server_ctx, server_sock, True)
        with anyio.fail_after(BODY):
            async with anyio.create_task_group() as tg:
                tg.start_soon(handshake, server, server_sock)
                await handshake(client, client_sock)
        assert client.ssl_object.version() == "TLSv1.3"
        yield client, server, client_sock, server_sock


async def receive_exactly(channel: TlsChannel, size: int) -> bytes:
    got = bytearray()
    while len(got) < size:
        data = await channel.receive(65536)
        assert data, f"the stream ended after {len(got)} of {size} bytes"
        got += data
    return bytes(got)


def payload(size: int, seed: int) -> bytes:
    return bytes((i * seed + i // 251) & 0xFF for i in range(size))


async def test_both_directions_at_once(anyio_backend: str, tls_files: TlsFiles) -> None:
    """A reader and a writer on each side at the same time, the kernel's buffers tiny."""
    up, down = payload(700_000, 7), payload(500_000, 13)
    results: dict[str, bytes] = {}
    async with channels(tls_files, small=True) as (client, server, _c, _s):
        with anyio.fail_after(BODY):

            async def send_in_pieces(channel: TlsChannel, data: bytes) -> None:
                for start in range(0, len(data), 150_000):
                    await channel.send(data[start : start + 150_000])

            async def read(name: str, channel: TlsChannel, size: int) -> None:
                results[name] = await receive_exactly(channel, size)

            async with anyio.create_task_group() as tg:
                tg.start_soon(send_in_pieces, client, up)
                tg.start_soon(send_in_pieces, server, down)
                tg.start_soon(read, "server", server, len(up))
                tg.start_soon(read, "client", client, len(down))
    assert results["server"] == up
    assert results["client"] == down


async def test_a_cancelled_send_then_a_good_send(anyio_backend: str, tls_files: TlsFiles) -> None:
    """A send cancelled while the kernel is full keeps its records queued, in order: a read
    does not wait for them, the next send sends them first, and the peer decrypts everything."""
    big = payload(1_000_000, 3)
    async with channels(tls_files, small=True) as (client, server, _c, _s):
        with anyio.move_on_after(0.3) as scope:
            await client.send(big)  # the server does not read yet
        assert scope.cancelled_caught
        with anyio.fail_after(BODY):  # reading needs no flush of what the cancelled send left
            await server.send(b"reply")
            assert await receive_exactly(client, 5) == b"reply"
        got: list[bytes] = []
        with anyio.fail_after(BODY):
            async with anyio.create_task_group() as tg:

                async def read() -> None:
                    got.append(await receive_exactly(server, len(big) + 5))

                tg.start_soon(read)
                await client.send(b"after")
    assert got == [big + b"after"]


async def test_a_send_that_may_not_wait(anyio_backend: str, tls_files: TlsFiles) -> None:
    """``timeout=0``'s waiter: a send that would wait raises WouldBlock and loses nothing."""
    big = payload(600_000, 5)
    async with channels(tls_files, small=True) as (client, server, _c, _s):
        waiter = client._waiter
        waiter.nowait = True
        with pytest.raises(anyio.WouldBlock):
            await client.send(big)
        waiter.nowait = False
        with anyio.fail_after(BODY):
            async with anyio.create_task_group() as tg:
                got: list[bytes] = []

                async def read() -> None:
                    got.append(await receive_exactly(server, len(big) + 2))

                tg.start_soon(read)
                await client.send(b"ok")
    assert got == [big + b"ok"]


async def test_close_notify_both_ways(anyio_backend: str, tls_files: TlsFiles) -> None:
    async with channels(tls_files) as (client, server, _c, _s):
        with anyio.fail_after(BODY):
            await server.send(b"last words")
            server.send_close_notify()  # never waits
            assert await receive_exactly(client, 10) == b"last words"
            assert await client.receive(100) == b""  # the server's close_notify came first
            assert await client.receive(100) == b""  # and stays the end
            await client.send_close_notify_fully()
            with pytest.raises(ssl.SSLZeroReturnError):  # the answer to ours
                await server.receive(100)


async def test_close_notify_after_ours(anyio_backend: str, tls_files: TlsFiles) -> None:
    """``send_eof``'s order: ours first, then reading goes on until the peer's."""
    async with channels(tls_files) as (client, server, _c, _s):
        with anyio.fail_after(BODY):
            await client.send_close_notify_fully()
            assert await server.receive(100) == b""
            await server.send(b"still here")
            server.send_close_notify()
            assert await receive_exactly(client, 10) == b"still here"
            with pytest.raises(ssl.SSLZeroReturnError):
                await client.receive(100)


async def test_truncation_is_an_eof_error(anyio_backend: str, tls_files: TlsFiles) -> None:
    async with channels(tls_files) as (client, server, _c, server_sock):
        with anyio.fail_after(BODY):
            await server.send(b"cut")
            server_sock.shutdown(socket.SHUT_WR)  # a FIN without close_notify
            assert await receive_exactly(client, 3) == b"cut"
            with pytest.raises(ssl.SSLError) as info:
                await client.receive(100)
            assert isinstance(info.value, ssl.SSLEOFError) or "UNEXPECTED_EOF" in str(info.value)


async def test_receive_nowait(anyio_backend: str, tls_files: TlsFiles) -> None:
    async with channels(tls_files) as (client, server, _c, _s):
        with anyio.fail_after(BODY):
            assert client.receive_nowait(100) is None  # (the tickets alone are no plaintext)
            await server.send(b"ready")
            while (data := client.receive_nowait(100)) is None:
                await anyio.sleep(0.01)
            assert data == b"ready"
            assert client.receive_nowait(100) is None
            server.send_close_notify()
            while (data := client.receive_nowait(100)) is None:
                await anyio.sleep(0.01)
            assert data == b""


async def test_one_read_takes_several_records(anyio_backend: str, tls_files: TlsFiles) -> None:
    """What the kernel holds is decrypted in one read, up to ``max_bytes`` (records are 16 KiB)."""
    data = payload(100_000, 11)
    async with channels(tls_files) as (client, server, _c, _s):
        with anyio.fail_after(BODY):
            await server.send(data)
            await anyio.sleep(0.2)  # everything has arrived
            first = await client.receive(1 << 20)
            assert len(first) > 16384
            assert first + await receive_exactly(client, len(data) - len(first)) == data
            await server.send(data)
            await anyio.sleep(0.2)
            assert await client.receive(1000) == data[:1000]  # never more than asked
            assert await receive_exactly(client, len(data) - 1000) == data[1000:]


# -- a TLS 1.3 key update from openssl s_server, answered while reading --------------------------


class SServer:
    """``openssl s_server`` in its interactive mode: stdin lines go to the client (``K`` alone
    sends a key update that asks for one back), what the client sends is printed."""

    def __init__(self, files: TlsFiles) -> None:
        assert OPENSSL is not None
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        args = [OPENSSL, "s_server", "-accept", f"127.0.0.1:{self.port}", "-tls1_3", "-msg"]
        self.proc = subprocess.Popen(
            [*args, "-cert", files.cert, "-key", files.key],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.lines: queue.Queue[bytes] = queue.Queue()
        self.output: list[bytes] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line)
            self.lines.put(line)

    def say(self, line: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line)
        self.proc.stdin.flush()

    def wait_for(self, text: bytes, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if text in self.lines.get(timeout=0.1):
                    return
            except queue.Empty:
                pass
        raise AssertionError(f"no {text!r} from s_server: {b''.join(self.output)!r}")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self.reader.join(10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


@pytest.mark.skipif(OPENSSL is None, reason="the openssl binary is not installed")
async def test_key_update_answered_while_reading(
    anyio_backend: str, tls_files: TlsFiles, tls_client_ctx: SslContext
) -> None:
    server = SServer(tls_files)
    try:
        await anyio.to_thread.run_sync(server.wait_for, b"ACCEPT")
        with anyio.fail_after(BODY):
            async with aio.new_async_socket() as sock:
                aio.wrap_socket(tls_client_ctx, sock)
                await sock.connect("localhost", server.port)
                server.say(b"first\n")
                assert await sock.recv_line() == b"first"
                server.say(b"K\n")  # a key update that asks for ours
                await anyio.to_thread.run_sync(server.wait_for, b"KeyUpdate")  # (-msg: sent)
                server.say(b"second\n")
                assert await sock.recv_line() == b"second"  # read past the key update
                await sock.send(b"from the client\n")  # under our updated key
                await anyio.to_thread.run_sync(server.wait_for, b"from the client")
    finally:
        await anyio.to_thread.run_sync(server.stop)
    answers = [line for line in server.output if line.startswith(b"<<<") and b"KeyUpdate" in line]
    assert answers, b"".join(server.output)  # the client answered the server's request


async def test_extra_gives_anyio_tls_attributes(
    anyio_backend: str, tls_files: TlsFiles, tls_server_ctx: SslContext, tls_client_ctx: SslContext
) -> None:
    """``extra()`` on a TLS socket: anyio's ``TLSAttribute`` values, from the channel's
    ``SSLObject``, next to the socket ones."""
    with anyio.fail_after(BODY):
        async with aio.new_async_socket() as listener:
            aio.wrap_socket(tls_server_ctx, listener)
            listener.bind_addr(0, "127.0.0.1")
            listener.listen()
            port = listener.get_local_addr()[1]
            async with aio.new_async_socket() as client:
                aio.wrap_socket(tls_client_ctx, client)
                async with anyio.create_task_group() as tg:
                    tg.start_soon(client.connect, "127.0.0.1", port)
                    server = await listener.accept()
                async with server:
                    assert server.extra(TLSAttribute.server_side) is True
                    assert server.extra(TLSAttribute.shared_ciphers)
                    assert server.extra(TLSAttribute.peer_certificate_binary) is None
                sslobj = client.extra(TLSAttribute.ssl_object)
                assert isinstance(sslobj, ssl.SSLObject)
                assert client.extra(TLSAttribute.tls_version) == sslobj.version() == "TLSv1.3"
                assert client.extra(TLSAttribute.cipher) == sslobj.cipher()
                assert client.extra(TLSAttribute.peer_certificate_binary) == tls_files.cert_der
                assert client.extra(TLSAttribute.peer_certificate)["subjectAltName"]
                assert client.extra(TLSAttribute.server_side) is False
                assert client.extra(TLSAttribute.shared_ciphers) is None
                assert client.extra(TLSAttribute.alpn_protocol) is None
                assert client.extra(TLSAttribute.standard_compatible) is True
                assert client.extra(anyio.abc.SocketAttribute.remote_port) == port
