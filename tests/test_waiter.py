"""The core's waits (``_core/_io.py`` ``Waiter``): what a registration that outlives a wait must
never do.

On asyncio the waiter keeps the socket's reader registered with the loop from one wait to the
next. These tests hold it to the rules that make that safe: the fd leaves the loop's selector
when the socket is closed (its number is reused by the next socket at once), when a wait is
cancelled, and when nobody waits any more; ``close()`` from another task (or thread) wakes a
waiting task; ``timeout=0`` never waits. The selector's map is inspected on the stdlib loop only
(uvloop has none to show); the other checks run on every backend.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import anyio
import pytest

import duonet
from conftest import peer, sender
from duonet import SocketClosedError, aio
from duonet._core._io import Waiter

try:
    import uvloop  # noqa: F401

    _BACKENDS: list[object] = [
        "asyncio",
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
        "trio",
    ]
except ImportError:  # pragma: no cover - uvloop is a test dependency where it builds
    _BACKENDS = ["asyncio", "trio"]


@pytest.fixture(scope="module", params=_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> object:
    return request.param


def watched(fd: int) -> bool | None:
    """Whether the running stdlib asyncio loop's selector watches ``fd`` (None: cannot tell)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None  # trio
    selector = getattr(loop, "_selector", None)
    if selector is None:
        return None  # uvloop
    return fd in selector.get_map()


def assert_unwatched(fd: int) -> None:
    assert watched(fd) in (None, False), f"fd {fd} is still registered with the loop"


def echo_lines(conn: socket.socket) -> None:
    """Answer every line with the same line upper-cased, until the client closes."""
    reader = conn.makefile("rb")
    for line in reader:
        conn.sendall(line.upper())


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected loopback TCP pair: (non-blocking end for the waiter, blocking peer)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname(), timeout=5)
        server, _ = listener.accept()
    server.settimeout(5)
    client.setblocking(False)
    try:
        yield client, server
    finally:
        client.close()
        server.close()


async def test_many_waits_leave_one_registration_then_none() -> None:
    with peer(echo_lines) as p:
        with anyio.fail_after(20):
            sock = await aio.dial("127.0.0.1", p.port)
            fd = sock.get_fd()
            for i in range(300):  # every round trip waits for the answer
                await sock.send(b"ping-%d\n" % i)
                assert await sock.recv_line() == b"PING-%d" % i
            if watched(fd) is not None:
                loop = asyncio.get_running_loop()
                watching = [k.fd for k in loop._selector.get_map().values()]  # type: ignore[attr-defined]
                assert watching.count(fd) <= 1
            await sock.close()
            assert_unwatched(fd)


async def test_close_from_another_task_wakes_the_reader() -> None:
    with peer(sender(b"", then_close=False)) as p:  # connects, sends nothing, waits for us
        with anyio.fail_after(10):
            sock = await aio.dial("127.0.0.1", p.port)
            fd = sock.get_fd()
            errors: list[BaseException] = []

            async def read() -> None:
                try:
                    await sock.recv_line()
                except BaseException as exc:
                    errors.append(exc)

            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                await anyio.sleep(0.05)  # the reader is waiting
                await sock.close()
            assert len(errors) == 1, errors
            assert isinstance(errors[0], SocketClosedError), errors
            assert_unwatched(fd)
            p.listener.close()


async def test_close_from_another_task_wakes_the_writer() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        with anyio.fail_after(10):
            sock = await aio.dial("127.0.0.1", listener.getsockname()[1])
            conn, _ = listener.accept()
            with conn:
                fd = sock.get_fd()
                errors: list[BaseException] = []

                async def flood() -> None:
                    try:
                        while True:  # the peer never reads: the send buffer fills up
                            await sock.send(b"x" * 65536)
                    except BaseException as exc:
                        errors.append(exc)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(flood)
                    await anyio.sleep(0.2)
                    await sock.close()
                assert len(errors) == 1, errors
                assert isinstance(errors[0], SocketClosedError), errors
                assert_unwatched(fd)


async def test_cancelled_and_timed_out_waits_leave_no_registration() -> None:
    with peer(echo_lines) as p:
        with anyio.fail_after(20):
            sock = await aio.dial("127.0.0.1", p.port)
            fd = sock.get_fd()
            for _ in range(20):
                with anyio.move_on_after(0.01):
                    await sock.recv_line()
                assert_unwatched(fd)
                with pytest.raises(TimeoutError):
                    await sock.recv_line(timeout=0.01)
                assert_unwatched(fd)
                async with anyio.create_task_group() as tg:

                    async def read() -> None:
                        await sock.recv_line()

                    tg.start_soon(read)
                    await anyio.sleep(0.005)
                    tg.cancel_scope.cancel()
                assert_unwatched(fd)
            # still a working connection: nothing was lost, nothing is left registered
            await sock.send(b"after\n")
            assert await sock.recv_line() == b"AFTER"
            await sock.close()
            assert_unwatched(fd)


async def test_timeout_zero_never_waits_nor_registers() -> None:
    with peer(sender(b"", then_close=False)) as p:
        with anyio.fail_after(10):
            async with await aio.dial("127.0.0.1", p.port) as sock:
                fd = sock.get_fd()
                for _ in range(50):
                    started = time.monotonic()
                    with pytest.raises(TimeoutError):
                        await sock.recv_line(timeout=0)
                    assert time.monotonic() - started < 1.0
                    assert_unwatched(fd)
            p.listener.close()


async def test_reader_unregistered_when_nobody_waits_any_more(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = tcp_pair
    waiter = Waiter(client)
    with anyio.fail_after(10):
        server.sendall(b"x")
        await waiter.readable()  # woken; the byte stays unread and nobody waits again
        for _ in range(50):
            await anyio.sleep(0.001)
            if not watched(client.fileno()):
                break
        assert_unwatched(client.fileno())  # not spinning on a readable fd nobody reads
        await waiter.readable()  # and it registers again when asked
        assert client.recv(10) == b"x"
        waiter.close()
        assert_unwatched(client.fileno())


async def test_one_reader_and_one_writer_at_once(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    client, server = tcp_pair
    waiter = Waiter(client)
    with anyio.fail_after(10):
        while True:  # fill the send buffer (the peer does not read yet)
            try:
                client.send(b"y" * 65536)
            except BlockingIOError:
                break
        woken: list[str] = []

        async def wait(what: str) -> None:
            await (waiter.readable() if what == "read" else waiter.writable())
            woken.append(what)

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait, "read")
            tg.start_soon(wait, "write")
            await anyio.sleep(0.05)
            with pytest.raises(anyio.BusyResourceError):
                await waiter.readable()  # a second reader
            with pytest.raises(anyio.BusyResourceError):
                await waiter.writable()  # a second writer
            assert woken == []
            server.sendall(b"z")
            await anyio.sleep(0.05)
            assert woken == ["read"]
            server.setblocking(False)
            try:
                while server.recv(1 << 20):
                    pass
            except BlockingIOError:
                pass
        assert sorted(woken) == ["read", "write"]
        waiter.close()
        assert_unwatched(client.fileno())


async def test_fd_number_reused_after_close() -> None:
    """A closed socket's fd number goes to the next socket: it must be watched afresh."""
    with peer(echo_lines, clients=30) as p:
        with anyio.fail_after(30):
            fds = set()
            for i in range(30):
                sock = await aio.dial("127.0.0.1", p.port)
                fds.add(sock.get_fd())
                await sock.send(b"line-%d\n" % i)
                assert await sock.recv_line(timeout=5) == b"LINE-%d" % i
                await sock.send(b"again\n")
                assert await sock.recv_line(timeout=5) == b"AGAIN"
                if i % 2:
                    sock._close_now()  # the synchronous close path (no task to wake)
                else:
                    await sock.close()
            assert len(fds) < 30  # the kernel did hand the same numbers out again


def test_blocking_close_after_a_portal_wait_then_fd_reuse(portal_backend: str) -> None:
    """The blocking face closes in the caller's thread: the portal loop must let go first."""
    with peer(echo_lines, clients=30) as p:
        fds = set()
        for i in range(30):
            sock = duonet.dial("127.0.0.1", p.port)
            fds.add(sock.get_fd())
            sock.send(b"line-%d\n" % i)
            assert sock.recv_line(timeout=5) == b"LINE-%d" % i  # the answer is awaited
            sock.close()
        assert len(fds) < 30


def test_close_from_a_foreign_thread_wakes_and_unregisters(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    client, _server = tcp_pair
    waiter = Waiter(client)
    fd = client.fileno()
    with anyio.from_thread.start_blocking_portal("asyncio") as portal:
        future = portal.start_task_soon(waiter.readable)

        async def is_watched() -> bool | None:
            return watched(fd)

        deadline = time.monotonic() + 5
        while not portal.call(is_watched):
            assert time.monotonic() < deadline, "the wait never registered"
            time.sleep(0.01)
        closer = threading.Thread(target=waiter.close)
        closer.start()
        closer.join(5)
        assert not closer.is_alive()
        with pytest.raises(anyio.ClosedResourceError):
            future.result(5)
        assert portal.call(is_watched) is False


async def test_a_stale_selector_key_for_the_fd_number_is_replaced() -> None:
    """Other code that closed a watched socket leaves the selector a key for its number; the
    next socket with that number must still be watched for real (stdlib loop only)."""
    if watched(0) is None:
        pytest.skip("only asyncio's selector loops keep keys by fd number")
    loop = asyncio.get_running_loop()

    def slow_echo(conn: socket.socket) -> None:
        for line in conn.makefile("rb"):
            time.sleep(0.1)  # the reader has to wait for the answer
            conn.sendall(line.upper())

    with peer(slow_echo) as p:
        junk = socket.socket()
        fd = junk.fileno()
        loop.add_reader(fd, lambda: None)
        junk.close()  # closed while watched: the selector keeps its key for the number
        raw = socket.create_connection(("127.0.0.1", p.port), timeout=5)
        if raw.fileno() != fd:  # pragma: no cover - another thread took the number
            raw.close()
            loop.remove_reader(fd)
            pytest.skip("the fd number went elsewhere")
        with anyio.fail_after(10):
            async with aio.AsyncSocket.from_socket(raw) as sock:
                await sock.send(b"hello\n")
                assert await sock.recv_line(timeout=5) == b"HELLO"
            assert_unwatched(fd)


async def test_a_writability_report_racing_a_cancel_is_ignored() -> None:
    # The writer's wait is cancelled (its future is done) and the socket turns writable before
    # the cancelled task resumes: the loop's writer callback must not complete the future
    # again (asyncio's InvalidStateError, seen at interpreter exit), and nothing stays watched.
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        pytest.skip("asyncio's own registration only")
    a, b = socket.socketpair()
    with a, b:
        a.setblocking(False)
        try:
            while True:
                a.send(b"x" * 65536)
        except BlockingIOError:
            pass  # the send buffer is full: writable() waits
        waiter = Waiter(a)
        task = loop.create_task(waiter.writable())
        await asyncio.sleep(0)  # the task registers its writer and waits on its future
        fut = waiter._wfut
        assert fut is not None
        task.cancel()  # cancels the future at once; the task resumes later
        assert fut.done()
        waiter._on_writable(fut)  # what the loop runs when the socket turns writable
        with pytest.raises(asyncio.CancelledError):
            await task
        assert_unwatched(a.fileno())
