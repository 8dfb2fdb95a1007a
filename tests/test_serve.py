"""Servers: ``duonet.serve``, ``serve_unix``, ``Server`` and ``duonet.aio.serve``, ``serve_unix``.

Every documented rule on both faces: the blocking face with its portal on asyncio and on trio
(``portal_backend``), the async face on asyncio and on trio (``anyio_backend``). The clients are
stdlib sockets (and the stdlib ``ssl`` module) in threads, so a duonet bug cannot hide on both
ends. Every wait is bounded; every test closes its server and checks that it leaves no thread.
"""

from __future__ import annotations

import _thread
import contextlib
import functools
import logging
import math
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

import duonet
import duonet.aio as aio
from conftest import TlsFiles, needs_ipv6
from duonet import SslContext

WAIT = 10.0  # seconds: the bound of every wait that should end at once


# -- stdlib clients ----------------------------------------------------------------------------


def tcp_client(port: int, host: str = "127.0.0.1") -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(WAIT)
    try:
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def read_line(sock: socket.socket | ssl.SSLSocket) -> bytes:
    """Read up to and including ``\\n`` (or to the end of the stream), byte by byte."""
    data = b""
    while not data.endswith(b"\n"):
        byte = sock.recv(1)
        if not byte:
            break
        data += byte
    return data


def ask(port: int, line: bytes, host: str = "127.0.0.1") -> bytes:
    """Connect, send one line, return the answer line."""
    with tcp_client(port, host) as sock:
        sock.sendall(line + b"\n")
        return read_line(sock)


def tls_client_ctx(tls_files: TlsFiles) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=tls_files.ca)
    return ctx


def ask_tls(port: int, line: bytes, ctx: ssl.SSLContext) -> bytes:
    with tcp_client(port) as raw, ctx.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
        sock.sendall(line + b"\n")
        return read_line(sock)


def unix_client(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(WAIT)
    sock.connect(path)
    return sock


def server_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("duonet-serve")]


@pytest.fixture(autouse=True)
def _no_server_thread_left() -> Iterator[None]:
    """Whatever a test does, it leaves no thread of a server behind."""
    yield
    assert server_threads() == []


@pytest.fixture
def no_thread_left() -> Iterator[None]:
    """The test leaves no thread behind but duonet's portal."""
    before = set(threading.enumerate())
    yield
    left = [t for t in set(threading.enumerate()) - before if t.name != "duonet-portal"]
    assert left == []


@pytest.fixture
def sock_path(tmp_path: Path) -> Iterator[str]:
    # AF_UNIX paths are short (108 bytes): tmp_path can be too long.
    folder = Path(os.environ.get("TMPDIR", "/tmp"))
    path = folder / f"duonet-serve-{os.getpid()}-{time.monotonic_ns()}.sock"
    yield str(path)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


# -- blocking handlers ---------------------------------------------------------------------------


def upper(client: duonet.Socket) -> None:
    """Answer one line, upper-cased; ``boom`` raises."""
    line = client.recv_line(timeout=WAIT)
    if line == b"boom":
        raise RuntimeError("the handler blew up")
    client.send(line.upper() + b"\n")


# -- blocking face ------------------------------------------------------------------------------


def test_serve_answers_and_closes_each_client(portal_backend: str, no_thread_left: None) -> None:
    with duonet.serve(upper, 0, "127.0.0.1") as server:
        assert isinstance(server, duonet.Server)
        assert server.port > 0
        assert server.address == "127.0.0.1"
        with tcp_client(server.port) as sock:
            sock.sendall(b"hello\n")
            assert read_line(sock) == b"HELLO\n"
            assert sock.recv(1) == b""  # closed once the handler returned
    assert server_threads() == []


def test_address_empty_listens_on_every_ipv4_address(portal_backend: str) -> None:
    with duonet.serve(upper, 0) as server:
        assert server.address == "0.0.0.0"
        assert ask(server.port, b"any") == b"ANY\n"


def test_address_as_ipaddress(portal_backend: str) -> None:
    with duonet.serve(upper, 0, duonet.ipv4_loopback()) as server:
        assert server.address == "127.0.0.1"
        assert ask(server.port, b"ip") == b"IP\n"


@needs_ipv6
def test_ipv6_literal_gives_an_ipv6_listener(portal_backend: str) -> None:
    with duonet.serve(upper, 0, "::1") as server:
        assert server.address == "::1"
        assert server._listener.aio._family == socket.AF_INET6
        assert ask(server.port, b"six", "::1") == b"SIX\n"


def test_handlers_run_concurrently(portal_backend: str, no_thread_left: None) -> None:
    count = 5
    barrier = threading.Barrier(count, timeout=WAIT)

    def handler(client: duonet.Socket) -> None:
        client.recv_line(timeout=WAIT)
        barrier.wait()  # only passes if `count` handlers run at once
        client.send(b"together\n")

    with duonet.serve(handler, 0, "127.0.0.1") as server:
        socks = [tcp_client(server.port) for _ in range(count)]
        try:
            for sock in socks:
                sock.sendall(b"x\n")
            assert [read_line(s) for s in socks] == [b"together\n"] * count
        finally:
            for sock in socks:
                sock.close()


def test_max_clients_holds_further_clients_in_the_backlog(portal_backend: str) -> None:
    running = 0
    peak = 0
    lock = threading.Lock()
    release = threading.Event()

    def handler(client: duonet.Socket) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        try:
            client.send(b"in\n")
            release.wait(WAIT)
        finally:
            with lock:
                running -= 1

    with duonet.serve(handler, 0, "127.0.0.1", max_clients=2) as server:
        socks = [tcp_client(server.port) for _ in range(3)]
        try:
            assert read_line(socks[0]) == b"in\n"
            assert read_line(socks[1]) == b"in\n"
            socks[2].settimeout(0.5)
            with pytest.raises(TimeoutError):  # connected, but waiting in the backlog
                socks[2].recv(1)
            assert server.clients == 2
            release.set()
            socks[2].settimeout(WAIT)
            assert read_line(socks[2]) == b"in\n"
        finally:
            release.set()
            for sock in socks:
                sock.close()
    assert peak == 2


def test_a_handler_exception_is_logged_with_the_peer_and_the_server_goes_on(
    portal_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    with duonet.serve(upper, 0, "127.0.0.1") as server:
        with tcp_client(server.port) as sock:
            peer = f"127.0.0.1:{sock.getsockname()[1]}"
            sock.sendall(b"boom\n")
            assert sock.recv(1) == b""  # the client is closed when its handler raises
        assert ask(server.port, b"after") == b"AFTER\n"
    records = [r for r in caplog.records if r.name == "duonet" and r.levelno == logging.ERROR]
    assert len(records) == 1
    assert peer in records[0].getMessage()
    assert records[0].peer == peer  # type: ignore[attr-defined]
    assert records[0].exc_info is not None
    assert "the handler blew up" in caplog.text


def test_tls_clients_are_served_after_their_handshake(
    portal_backend: str, tls_server_ctx: SslContext, tls_files: TlsFiles
) -> None:
    seen: list[bool] = []

    def handler(client: duonet.Socket) -> None:
        seen.append(client.is_ssl() and client.got_handshake())
        upper(client)

    with duonet.serve(handler, 0, "127.0.0.1", ssl_context=tls_server_ctx) as server:
        assert ask_tls(server.port, b"secret", tls_client_ctx(tls_files)) == b"SECRET\n"
    assert seen == [True]


def test_a_stalled_tls_client_delays_no_one(
    portal_backend: str, tls_server_ctx: SslContext, tls_files: TlsFiles
) -> None:
    with (
        duonet.serve(upper, 0, "127.0.0.1", ssl_context=tls_server_ctx) as server,
        tcp_client(server.port),  # connects, never says a word
    ):
        time.sleep(0.1)
        start = time.monotonic()
        assert ask_tls(server.port, b"quick", tls_client_ctx(tls_files)) == b"QUICK\n"
        assert time.monotonic() - start < 5


def test_handshake_timeout_drops_the_client_and_logs_it(
    portal_backend: str, tls_server_ctx: SslContext, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        duonet.serve(
            upper, 0, "127.0.0.1", ssl_context=tls_server_ctx, handshake_timeout=0.3
        ) as server,
        tcp_client(server.port) as stalled,
    ):
        peer = f"127.0.0.1:{stalled.getsockname()[1]}"
        assert stalled.recv(1) == b""  # dropped after 0.3 s (WAIT bounds the wait)
    warnings = [r for r in caplog.records if r.name == "duonet" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert peer in warnings[0].getMessage()
    assert "handshake_timeout" in warnings[0].getMessage()


def test_a_failed_handshake_is_logged_with_the_peer(
    portal_backend: str, tls_server_ctx: SslContext, caplog: pytest.LogCaptureFixture
) -> None:
    with duonet.serve(upper, 0, "127.0.0.1", ssl_context=tls_server_ctx) as server:
        with tcp_client(server.port) as plain:
            peer = f"127.0.0.1:{plain.getsockname()[1]}"
            plain.sendall(b"GET / HTTP/1.0\r\n\r\n")  # not TLS
            with contextlib.suppress(ConnectionResetError):
                while plain.recv(1024):
                    pass
        deadline = time.monotonic() + WAIT
        while not any(r.name == "duonet" for r in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.01)
    records = [r for r in caplog.records if r.name == "duonet"]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    assert peer in records[0].getMessage()
    assert records[0].getMessage().count("TLS handshake with") == 1  # said once, not twice


def test_close_waits_then_closes_blocked_clients_and_leaves_no_thread(
    portal_backend: str, no_thread_left: None, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[BaseException] = []
    started = threading.Barrier(4, timeout=WAIT)

    def handler(client: duonet.Socket) -> None:
        started.wait()
        try:
            client.recv_line()  # blocked until close() closes the client
        except OSError as exc:
            errors.append(exc)
            raise

    server = duonet.serve(handler, 0, "127.0.0.1")
    socks = [tcp_client(server.port) for _ in range(3)]
    try:
        started.wait()
        assert len(server_threads()) == 4  # the accept thread and 3 client threads
        start = time.monotonic()
        server.close(timeout=0.2)
        assert time.monotonic() - start < 5
        assert server_threads() == []
        assert len(errors) == 3
        assert all(isinstance(e, duonet.SocketClosedError) for e in errors)
        for sock in socks:
            assert sock.recv(1) == b""
        server.close()  # idempotent
    finally:
        for sock in socks:
            sock.close()
    # A client closed by close() is no handler failure worth an error.
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    with pytest.raises(ConnectionRefusedError):
        tcp_client(server.port).close()


def test_close_ends_stalled_tls_handshakes_at_once(
    portal_backend: str, tls_server_ctx: SslContext, caplog: pytest.LogCaptureFixture
) -> None:
    server = duonet.serve(upper, 0, "127.0.0.1", ssl_context=tls_server_ctx)
    with tcp_client(server.port) as stalled:
        while server.clients == 0:
            time.sleep(0.01)
        start = time.monotonic()
        server.close(timeout=0)
        assert time.monotonic() - start < 5
        assert server_threads() == []
        assert stalled.recv(1) == b""
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_close_and_serve_forever_refuse_to_block_an_event_loop(portal_backend: str) -> None:
    server = duonet.serve(upper, 0, "127.0.0.1")
    try:

        async def inside() -> None:
            with pytest.raises(RuntimeError, match="event loop"):
                server.close()
            with pytest.raises(RuntimeError, match="event loop"):
                server.serve_forever()

        anyio.run(inside)
    finally:
        server.close()
    assert server_threads() == []


def test_close_waits_for_handlers_that_finish_in_time(portal_backend: str) -> None:
    finished = threading.Event()

    def handler(client: duonet.Socket) -> None:
        client.recv_line(timeout=WAIT)
        time.sleep(0.3)
        client.send(b"done\n")
        finished.set()

    server = duonet.serve(handler, 0, "127.0.0.1")
    with tcp_client(server.port) as sock:
        sock.sendall(b"go\n")
        time.sleep(0.1)
        server.close(timeout=WAIT)
        assert finished.is_set()
        assert read_line(sock) == b"done\n"
    assert server_threads() == []


def test_close_from_a_handler(portal_backend: str) -> None:
    servers: list[duonet.Server] = []

    def handler(client: duonet.Socket) -> None:
        client.recv_line(timeout=WAIT)
        servers[0].close()
        client.send(b"closed\n")  # the handler goes on; its client is still open

    server = duonet.serve(handler, 0, "127.0.0.1")
    servers.append(server)
    try:
        assert ask(server.port, b"stop") == b"closed\n"
        done = threading.Event()

        def forever() -> None:
            server.serve_forever()
            done.set()

        waiter = threading.Thread(target=forever)
        waiter.start()
        waiter.join(WAIT)
        assert done.is_set()
    finally:
        server.close()  # joins the handler thread that closed it
    assert server_threads() == []


def test_two_handlers_closing_the_server_at_once_do_not_wait_for_each_other(
    portal_backend: str,
) -> None:
    both_in = threading.Barrier(2, timeout=WAIT)
    servers: list[duonet.Server] = []

    def handler(client: duonet.Socket) -> None:
        client.recv_line(timeout=WAIT)
        both_in.wait()
        servers[0].close(timeout=None)
        client.send(b"closed\n")

    server = duonet.serve(handler, 0, "127.0.0.1")
    servers.append(server)
    socks = [tcp_client(server.port) for _ in range(2)]
    try:
        for sock in socks:
            sock.sendall(b"stop\n")
        assert [read_line(s) for s in socks] == [b"closed\n"] * 2
    finally:
        for sock in socks:
            sock.close()
        server.close()
    assert server_threads() == []


def test_serve_forever_returns_when_closed_from_another_thread(portal_backend: str) -> None:
    server = duonet.serve(upper, 0, "127.0.0.1")
    timer = threading.Timer(0.2, server.close)
    timer.start()
    server.serve_forever()
    timer.join(WAIT)
    assert server_threads() == []


def test_keyboard_interrupt_in_serve_forever_closes_the_server(portal_backend: str) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("Ctrl-C reaches the main thread only")
    # A shell that started the test run in the background has set SIGINT to "ignore", and
    # interrupt_main() then does nothing: Python's own handler, for this test.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    server = duonet.serve(upper, 0, "127.0.0.1")
    timer = threading.Timer(0.2, _thread.interrupt_main)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            server.serve_forever()
    finally:
        timer.join(WAIT)
        server.close()
        signal.signal(signal.SIGINT, previous)
    assert server_threads() == []
    with pytest.raises(ConnectionRefusedError):
        tcp_client(server.port).close()


def test_handler_threads_end_with_their_client(portal_backend: str) -> None:
    with duonet.serve(upper, 0, "127.0.0.1") as server:
        for index in range(5):
            assert ask(server.port, b"n%d" % index) == b"N%d\n" % index
        deadline = time.monotonic() + WAIT
        while len(server_threads()) > 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert [t.name for t in server_threads()] == [f"duonet-serve-127.0.0.1:{server.port}"]


def test_serve_unix_serves_and_removes_its_socket_file(
    portal_backend: str, sock_path: str, no_thread_left: None
) -> None:
    with duonet.serve_unix(upper, sock_path) as server:
        assert server.address == sock_path
        assert server.port == 0
        assert os.path.exists(sock_path)
        with unix_client(sock_path) as sock:
            sock.sendall(b"unix\n")
            assert read_line(sock) == b"UNIX\n"
    assert not os.path.exists(sock_path)


def test_a_unix_handler_failure_names_the_server_path(
    portal_backend: str, sock_path: str, caplog: pytest.LogCaptureFixture
) -> None:
    with duonet.serve_unix(upper, sock_path) as server, unix_client(server.address) as sock:
        sock.sendall(b"boom\n")
        assert sock.recv(1) == b""
    records = [r for r in caplog.records if r.name == "duonet" and r.levelno == logging.ERROR]
    assert len(records) == 1
    assert sock_path in records[0].getMessage()


def test_serve_unix_replaces_a_stale_socket_file(portal_backend: str, sock_path: str) -> None:
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(sock_path)
    stale.close()  # the file stays, as after a crash
    with duonet.serve_unix(upper, sock_path) as server, unix_client(server.address) as sock:
        sock.sendall(b"fresh\n")
        assert read_line(sock) == b"FRESH\n"
    assert not os.path.exists(sock_path)


def test_a_busy_port_raises_naming_the_address(portal_backend: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=f"127.0.0.1.*{port}"):
            duonet.serve(upper, port, "127.0.0.1")
    assert server_threads() == []


# -- argument checks, both faces -----------------------------------------------------------------

BAD_TCP_ARGS: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"port": True}, TypeError, "port"),
    ({"port": "80"}, TypeError, "port"),
    ({"port": 80.0}, TypeError, "port"),
    ({"port": 70000}, ValueError, "70000"),
    ({"port": -1}, ValueError, "port"),
    ({"address": b"127.0.0.1"}, TypeError, "address"),
    ({"address": 127}, TypeError, "address"),
    ({"address": "127.0.0.1\0evil"}, ValueError, "address"),
    ({"handler": "not callable"}, TypeError, "handler"),
    ({"max_clients": 0}, ValueError, "max_clients"),
    ({"max_clients": 1.5}, TypeError, "max_clients"),
    ({"handshake_timeout": math.nan}, ValueError, "handshake_timeout"),
    ({"handshake_timeout": "10"}, TypeError, "handshake_timeout"),
    ({"backlog": 1.5}, TypeError, "backlog"),
    ({"ssl_context": ssl.create_default_context()}, TypeError, "ssl_context"),
]


def _tcp_call(args: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    merged: dict[str, Any] = {"handler": upper, "port": 0, "address": "127.0.0.1", **args}
    positional = (merged.pop("handler"), merged.pop("port"), merged.pop("address"))
    return positional, merged


@pytest.mark.parametrize(("args", "error", "word"), BAD_TCP_ARGS)
def test_blocking_serve_checks_its_arguments(
    args: dict[str, Any], error: type[Exception], word: str
) -> None:
    positional, keywords = _tcp_call(args)
    with pytest.raises(error, match=word):
        duonet.serve(*positional, **keywords)
    assert server_threads() == []


@pytest.mark.parametrize(("args", "error", "word"), BAD_TCP_ARGS)
async def test_aio_serve_checks_its_arguments(
    args: dict[str, Any], error: type[Exception], word: str
) -> None:
    positional, keywords = _tcp_call(args)
    with pytest.raises(error, match=word):
        await aio.serve(*positional, **keywords)


@pytest.mark.parametrize("path", [123, None])
def test_serve_unix_checks_its_path(path: object) -> None:
    with pytest.raises(TypeError, match="path"):
        duonet.serve_unix(upper, path)  # type: ignore[arg-type]


def test_close_checks_its_timeout(portal_backend: str) -> None:
    with duonet.serve(upper, 0, "127.0.0.1") as server:
        with pytest.raises(ValueError, match="timeout"):
            server.close(math.nan)
        with pytest.raises(TypeError, match="timeout"):
            server.close("1")  # type: ignore[arg-type]


# -- async face ---------------------------------------------------------------------------------


async def aupper(client: aio.AsyncSocket) -> None:
    line = await client.recv_line(timeout=WAIT)
    if line == b"boom":
        raise RuntimeError("the handler blew up")
    await client.send(line.upper() + b"\n")


async def in_thread(func: Callable[..., Any], *args: Any) -> Any:
    return await anyio.to_thread.run_sync(func, *args)


async def test_aio_serve_gives_a_server_and_answers() -> None:
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            server = await tg.start(aio.serve, aupper, 0, "127.0.0.1")
            assert isinstance(server, aio.Server)
            assert server.port > 0
            assert server.address == "127.0.0.1"
            assert await in_thread(ask, server.port, b"hello") == b"HELLO\n"
            tg.cancel_scope.cancel()


async def test_aio_address_empty_and_ipaddress() -> None:
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            any_v4 = await tg.start(aio.serve, aupper, 0)
            loop_v4 = await tg.start(aio.serve, aupper, 0, duonet.ipv4_loopback())
            assert any_v4.address == "0.0.0.0"
            assert loop_v4.address == "127.0.0.1"
            assert await in_thread(ask, any_v4.port, b"a") == b"A\n"
            assert await in_thread(ask, loop_v4.port, b"b") == b"B\n"
            tg.cancel_scope.cancel()


@needs_ipv6
async def test_aio_ipv6_literal_gives_an_ipv6_listener() -> None:
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            server = await tg.start(aio.serve, aupper, 0, "::1")
            assert server.address == "::1"
            assert await in_thread(ask, server.port, b"six", "::1") == b"SIX\n"
            tg.cancel_scope.cancel()


async def test_aio_handlers_run_concurrently() -> None:
    count = 5
    arrived = 0
    all_in = anyio.Event()

    async def handler(client: aio.AsyncSocket) -> None:
        nonlocal arrived
        await client.recv_line(timeout=WAIT)
        arrived += 1
        if arrived == count:
            all_in.set()
        await all_in.wait()  # only passes if `count` handlers run at once
        await client.send(b"together\n")

    def clients(port: int) -> list[bytes]:
        socks = [tcp_client(port) for _ in range(count)]
        try:
            for sock in socks:
                sock.sendall(b"x\n")
            return [read_line(s) for s in socks]
        finally:
            for sock in socks:
                sock.close()

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            server = await tg.start(aio.serve, handler, 0, "127.0.0.1")
            assert await in_thread(clients, server.port) == [b"together\n"] * count
            tg.cancel_scope.cancel()


async def test_aio_max_clients_holds_further_clients_in_the_backlog() -> None:
    release = anyio.Event()
    running = 0
    peak = 0

    async def handler(client: aio.AsyncSocket) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        try:
            await client.send(b"in\n")
            await release.wait()
        finally:
            running -= 1

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            server = await tg.start(
                functools.partial(aio.serve, handler, 0, "127.0.0.1", max_clients=2)
            )
            socks = [await in_thread(tcp_client, server.port) for _ in range(3)]
            try:
                assert await in_thread(read_line, socks[0]) == b"in\n"
                assert await in_thread(read_line, socks[1]) == b"in\n"
                socks[2].settimeout(0.5)
                with pytest.raises(TimeoutError):
                    await in_thread(socks[2].recv, 1)
                assert server.clients == 2
                release.set()
                socks[2].settimeout(WAIT)
                assert await in_thread(read_line, socks[2]) == b"in\n"
            finally:
                for sock in socks:
                    sock.close()
            tg.cancel_scope.cancel()
    assert peak == 2


async def test_aio_handler_exception_is_logged_with_the_peer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def boom_then_ok(port: int) -> tuple[str, bytes, bytes]:
        with tcp_client(port) as sock:
            peer = f"127.0.0.1:{sock.getsockname()[1]}"
            sock.sendall(b"boom\n")
            closed = sock.recv(1)
        return peer, closed, ask(port, b"after")

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            server = await tg.start(aio.serve, aupper, 0, "127.0.0.1")
            peer, closed, after = await in_thread(boom_then_ok, server.port)
            tg.cancel_scope.cancel()
    assert closed == b""
    assert after == b"AFTER\n"
    records = [r for r in caplog.records if r.name == "duonet" and r.levelno == logging.ERROR]
    assert len(records) == 1
    assert peer in records[0].getMessage()
    assert records[0].peer == peer  # type: ignore[attr-defined]
    assert "the handler blew up" in caplog.text


async def test_aio_tls_a_stalled_client_delays_no_one(
    tls_server_ctx: SslContext, tls_files: TlsFiles
) -> None:
    def stalled_then_quick(port: int) -> bytes:
        with tcp_client(port):
            time.sleep(0.1)
            return ask_tls(port, b"quick", tls_client_ctx(tls_files))

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            server = await tg.start(
                lambda task_status: aio.serve(
                    aupper, 0, "127.0.0.1", ssl_context=tls_server_ctx, task_status=task_status
                )
            )
            assert await in_thread(stalled_then_quick, server.port) == b"QUICK\n"
            tg.cancel_scope.cancel()


async def test_aio_handshake_timeout_drops_the_client_and_logs_it(
    tls_server_ctx: SslContext, caplog: pytest.LogCaptureFixture
) -> None:
    def stall(port: int) -> tuple[str, bytes]:
        with tcp_client(port) as stalled:
            return f"127.0.0.1:{stalled.getsockname()[1]}", stalled.recv(1)

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            server = await tg.start(
                lambda task_status: aio.serve(
                    aupper,
                    0,
                    "127.0.0.1",
                    ssl_context=tls_server_ctx,
                    handshake_timeout=0.3,
                    task_status=task_status,
                )
            )
            peer, got = await in_thread(stall, server.port)
            tg.cancel_scope.cancel()
    assert got == b""
    warnings = [r for r in caplog.records if r.name == "duonet" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert peer in warnings[0].getMessage()
    assert "handshake_timeout" in warnings[0].getMessage()


async def test_aio_failed_handshake_is_logged_with_the_peer(
    tls_server_ctx: SslContext, caplog: pytest.LogCaptureFixture
) -> None:
    def plaintext(port: int) -> str:
        with tcp_client(port) as plain:
            plain.sendall(b"GET / HTTP/1.0\r\n\r\n")
            with contextlib.suppress(ConnectionResetError):
                while plain.recv(1024):
                    pass
            return f"127.0.0.1:{plain.getsockname()[1]}"

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            server = await tg.start(
                lambda task_status: aio.serve(
                    aupper, 0, "127.0.0.1", ssl_context=tls_server_ctx, task_status=task_status
                )
            )
            peer = await in_thread(plaintext, server.port)
            tg.cancel_scope.cancel()
    records = [r for r in caplog.records if r.name == "duonet"]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    assert peer in records[0].getMessage()


async def test_aio_cancelling_serve_closes_listener_handlers_and_clients() -> None:
    cancelled = 0
    entered = 0
    all_in = anyio.Event()

    async def handler(client: aio.AsyncSocket) -> None:
        nonlocal cancelled, entered
        entered += 1
        if entered == 2:
            all_in.set()
        try:
            await client.recv_line()  # until cancelled
        except anyio.get_cancelled_exc_class():
            cancelled += 1
            raise

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as outer:
            scope = anyio.CancelScope()

            async def run_server(task_status: anyio.abc.TaskStatus[aio.Server]) -> None:
                with scope:
                    await aio.serve(handler, 0, "127.0.0.1", task_status=task_status)

            server = await outer.start(run_server)
            socks = [await in_thread(tcp_client, server.port) for _ in range(2)]
            await all_in.wait()
            scope.cancel()
        try:
            assert cancelled == 2
            for sock in socks:
                assert await in_thread(sock.recv, 1) == b""  # closed by the server
            with pytest.raises(ConnectionRefusedError):
                await in_thread(lambda: tcp_client(server.port).close())
        finally:
            for sock in socks:
                sock.close()


async def test_aio_serve_unix_serves_and_removes_its_socket_file(sock_path: str) -> None:
    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            server = await tg.start(aio.serve_unix, aupper, sock_path)
            assert server.address == sock_path
            assert server.port == 0

            def talk() -> bytes:
                with unix_client(sock_path) as sock:
                    sock.sendall(b"unix\n")
                    return read_line(sock)

            assert await in_thread(talk) == b"UNIX\n"
            assert os.path.exists(sock_path)
            tg.cancel_scope.cancel()
    assert not os.path.exists(sock_path)


async def test_aio_serve_with_tls_hands_out_handshaken_clients(
    tls_server_ctx: SslContext, tls_files: TlsFiles
) -> None:
    seen: list[bool] = []

    async def handler(client: aio.AsyncSocket) -> None:
        seen.append(client.is_ssl() and client.got_handshake())
        await aupper(client)

    with anyio.fail_after(WAIT):
        async with anyio.create_task_group() as tg:
            server = await tg.start(
                lambda task_status: aio.serve(
                    handler, 0, "127.0.0.1", ssl_context=tls_server_ctx, task_status=task_status
                )
            )
            answer = await in_thread(ask_tls, server.port, b"secret", tls_client_ctx(tls_files))
            tg.cancel_scope.cancel()
    assert answer == b"SECRET\n"
    assert seen == [True]


# -- the public surface and the guide ------------------------------------------------------------


def test_servers_are_made_by_serve_only() -> None:
    with pytest.raises(TypeError, match=r"duonet\.serve"):
        duonet.Server()
    with pytest.raises(TypeError, match=r"duonet\.aio\.serve"):
        aio.Server()


GUIDE = Path(__file__).resolve().parents[1] / "docs" / "guides" / "servers.rst"


def _guide_samples() -> list[str]:
    text = GUIDE.read_text(encoding="utf-8")
    blocks = re.findall(r"\.\. code-block:: python\n\n((?:   .*\n|\n)+)", text)
    return [textwrap.dedent(block) for block in blocks]


@pytest.mark.parametrize("index", range(len(_guide_samples())))
def test_every_sample_of_the_servers_guide_runs(index: int, tmp_path: Path) -> None:
    code = _guide_samples()[index]
    script = tmp_path / f"sample{index}.py"
    script.write_text(code, encoding="utf-8")
    for backend in ["trio"] if "sys.argv" in code else []:
        result = subprocess.run(
            [sys.executable, str(script), backend], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout
