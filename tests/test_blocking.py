"""The blocking face: parity with ``duonet.aio``, threads, the portal's edge cases.

Each in-process test runs with the portal on asyncio and on trio (``portal_backend``). What could
hurt the test runner (signals, ``fork``, interpreter exit) runs in a subprocess with a timeout.
Every peer is a stdlib socket on 127.0.0.1, so no name resolution (and no resolver thread) is
involved.
"""

from __future__ import annotations

import contextlib
import inspect
import os
import select
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import duonet
import duonet.aio
from duonet import SocketClosedError
from scenarios import hanging_listener

LONG = 10.0

# SPEC "Pinned details": what duonet.aio awaits, and what never blocks.
AWAITED = [
    "connect",
    "connect_unix",
    "accept",
    "accept_addr",
    "send",
    "try_send",
    "recv",
    "recv_into",
    "recv_line",
    "read_line",
    "skip",
    "send_to",
    "recv_from",
    "close",
    "send_eof",
    "send_file",
]
#: anyio's ByteStream interface: on AsyncSocket only (it is the async face's stream protocol).
BYTESTREAM_ONLY = {"receive", "aclose", "extra"}
PLAIN = [
    "bind_addr",
    "bind_unix",
    "listen",
    "get_sock_opt",
    "set_sock_opt",
    "get_local_addr",
    "get_peer_addr",
    "get_fd",
    "fileno",
    "get_socket_error",
    "has_data_buffered",
    "read_line_nowait",
    "is_ssl",
    "got_handshake",
    "get_peer_certificates",
    "get_psk_identity",
    "lines",
]


# -- helpers ------------------------------------------------------------------------------------


class Call(threading.Thread):
    """Run ``fn(*args)`` in a thread; keep its result or exception and when it ended."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        super().__init__(daemon=True)
        self.fn = fn
        self.args = args
        self.value: Any = None
        self.error: BaseException | None = None
        self.ended = 0.0

    def run(self) -> None:
        try:
            self.value = self.fn(*self.args)
        except BaseException as exc:
            self.error = exc
        finally:
            self.ended = time.monotonic()

    def finish(self, timeout: float = LONG) -> Call:
        self.join(timeout)
        assert not self.is_alive(), f"{self.fn} still blocked after {timeout} s"
        return self


@contextlib.contextmanager
def connected_pair() -> Iterator[tuple[duonet.Socket, socket.socket]]:
    """A blocking duonet client connected to a stdlib socket (driven by the test itself)."""
    with socket.create_server(("127.0.0.1", 0)) as srv:
        srv.settimeout(LONG)
        with duonet.new_socket() as client:
            client.connect("127.0.0.1", srv.getsockname()[1], timeout=LONG)
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(LONG)
                yield client, conn


class EchoServer:
    """A stdlib echo server on 127.0.0.1: one thread per client, ``clients`` clients in all."""

    def __init__(self, clients: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.listener.settimeout(LONG)
        self.port: int = self.listener.getsockname()[1]
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = []
        self._acceptor = threading.Thread(target=self._accept, args=(clients,))
        self._acceptor.start()

    def _accept(self, clients: int) -> None:
        try:
            for _ in range(clients):
                conn, _ = self.listener.accept()
                thread = threading.Thread(target=self._echo, args=(conn,))
                self.threads.append(thread)
                thread.start()
        except BaseException as exc:
            self.errors.append(exc)

    def _echo(self, conn: socket.socket) -> None:
        try:
            with conn:
                conn.settimeout(LONG)
                while data := conn.recv(65536):
                    conn.sendall(data)
        except BaseException as exc:
            self.errors.append(exc)

    def close(self) -> None:
        self._acceptor.join(2 * LONG)
        for thread in self.threads:
            thread.join(2 * LONG)
        self.listener.close()
        assert not self._acceptor.is_alive()
        assert not any(t.is_alive() for t in self.threads), "echo threads did not finish"
        assert not self.errors, self.errors


def run_script(
    script: str, backend: str, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, DUONET_BACKEND=backend)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


SUBPROCESS_BACKENDS = [
    "asyncio",
    "trio",
    pytest.param(
        "uvloop", marks=pytest.mark.skipif(not _has_uvloop(), reason="uvloop is not installed")
    ),
]


# -- facade parity ------------------------------------------------------------------------------


def _params(func: Callable[..., Any]) -> list[tuple[str, Any, Any]]:
    return [
        (p.name, p.kind, p.default)
        for p in inspect.signature(func).parameters.values()
        if p.name not in ("self", "cls")
    ]


def _public_methods(cls: type) -> set[str]:
    return {
        name
        for name in dir(cls)
        if not name.startswith("_")
        and not isinstance(inspect.getattr_static(cls, name), property)
        and callable(getattr(cls, name))
    }


def test_socket_methods_match_async_socket() -> None:
    aio_methods = _public_methods(duonet.aio.AsyncSocket) - BYTESTREAM_ONLY
    assert aio_methods >= set(AWAITED) | set(PLAIN)
    assert aio_methods == _public_methods(duonet.Socket)
    for name in sorted(aio_methods):
        blocking, awaited = getattr(duonet.Socket, name), getattr(duonet.aio.AsyncSocket, name)
        assert _params(blocking) == _params(awaited), name
        assert not inspect.iscoroutinefunction(blocking), name
        assert inspect.iscoroutinefunction(awaited) == (name in AWAITED), name
    for blocking, awaited in (
        ("__init__", "__init__"),
        ("__enter__", "__aenter__"),
        ("__exit__", "__aexit__"),
    ):
        assert _params(getattr(duonet.Socket, blocking)) == _params(
            getattr(duonet.aio.AsyncSocket, awaited)
        )
        assert inspect.iscoroutinefunction(getattr(duonet.aio.AsyncSocket, awaited)) == (
            awaited != "__init__"
        )


@pytest.mark.parametrize(
    ("blocking", "awaited", "is_awaited"),
    [
        ("new_socket", "new_async_socket", False),
        ("dial", "dial", True),
        ("wrap_connected_socket", "wrap_connected_socket", True),
    ],
)
def test_module_functions_match(blocking: str, awaited: str, is_awaited: bool) -> None:
    sync_func, async_func = getattr(duonet, blocking), getattr(duonet.aio, awaited)
    assert _params(sync_func) == _params(async_func)
    if blocking == "new_socket":
        assert _params(sync_func) == _params(duonet.Socket.__init__)
    assert not inspect.iscoroutinefunction(sync_func)
    assert inspect.iscoroutinefunction(async_func) == is_awaited


def test_module_all_match_and_share_objects() -> None:
    only_blocking = {"Socket", "new_socket", "configure"}
    only_async = {"AsyncSocket", "new_async_socket"}
    assert set(duonet.__all__) >= only_blocking
    assert set(duonet.aio.__all__) >= only_async
    common = set(duonet.__all__) - only_blocking
    assert common == set(duonet.aio.__all__) - only_async
    # blocking versus awaited
    differ = {"dial", "wrap_connected_socket", "serve", "serve_unix", "Server"}
    for name in sorted(common - differ):
        assert getattr(duonet, name) is getattr(duonet.aio, name), name
    for name in sorted(differ):
        assert getattr(duonet, name) is not getattr(duonet.aio, name), name
    assert duonet.IpAddress is duonet.aio.IpAddress
    assert duonet.SOBool is duonet.aio.SOBool
    assert duonet.SslError is duonet.aio.SslError
    assert duonet.TimeoutError is duonet.aio.TimeoutError is TimeoutError


# -- many threads -------------------------------------------------------------------------------


def test_many_threads_share_the_portal(portal_backend: str) -> None:
    threads_n, rounds = 50, 100
    baseline = threading.active_count()
    server = EchoServer(threads_n)
    results: dict[int, int] = {}
    errors: list[BaseException] = []

    def client(index: int) -> None:
        try:
            with duonet.new_socket() as s:
                s.connect("127.0.0.1", server.port, timeout=LONG)
                for i in range(rounds):
                    message = f"thread {index} round {i} " + "x" * (index % 7)
                    s.send(message + "\n", timeout=LONG)
                    line = s.recv_line(timeout=LONG)
                    assert line == message.encode(), (index, i, line)
                results[index] = rounds
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads_n)]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(60)
        assert not any(w.is_alive() for w in workers), "client threads hung"
    finally:
        server.close()
    assert not errors, errors[:3]
    assert results == dict.fromkeys(range(threads_n), rounds)
    # The portal is the only thread duonet may add (no resolver threads: IP literals only).
    deadline = time.monotonic() + 5
    while threading.active_count() > baseline + 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= baseline + 1, [t.name for t in threading.enumerate()]


# -- inside an event loop -----------------------------------------------------------------------


def _blocking_calls_in_loop(port: int, client: duonet.Socket) -> list[str]:
    """Each blocking call that would wait, made from inside a running loop: its error text."""
    messages: list[str] = []
    with duonet.new_socket() as other, duonet.new_socket() as listener:
        listener.bind_addr(0, "127.0.0.1")
        listener.listen()
        for call in (
            lambda: client.recv_line(timeout=2),
            lambda: client.recv(10, timeout=2),
            lambda: other.connect("127.0.0.1", port, timeout=2),
            lambda: listener.accept(timeout=2),
        ):
            start = time.monotonic()
            with pytest.raises(RuntimeError, match=r"duonet\.aio") as info:
                call()
            assert time.monotonic() - start < 1.0
            messages.append(str(info.value))
    return messages


def test_blocking_call_inside_asyncio_raises(portal_backend: str) -> None:
    import asyncio

    with connected_pair() as (client, conn):

        async def main() -> list[str]:
            return _blocking_calls_in_loop(conn.getsockname()[1], client)

        assert len(asyncio.run(main())) == 4
        conn.sendall(b"still works\n")  # the socket is intact afterwards
        assert client.recv_line(timeout=LONG) == b"still works"


def test_blocking_call_inside_trio_raises(portal_backend: str) -> None:
    import trio

    with connected_pair() as (client, conn):

        async def main() -> list[str]:
            return _blocking_calls_in_loop(conn.getsockname()[1], client)

        assert len(trio.run(main)) == 4
        conn.sendall(b"still works\n")
        assert client.recv_line(timeout=LONG) == b"still works"


def _answerable_calls_in_loop(client: duonet.Socket, listener: duonet.Socket) -> int:
    """Calls that could be answered at once (data and a client are waiting, the send buffer is
    empty) still raise inside a running loop: the rule does not depend on timing."""
    calls = (
        lambda: client.recv_line(timeout=2),
        lambda: client.recv(3, timeout=2),
        lambda: client.skip(1, timeout=2),
        lambda: client.send(b"x"),
        lambda: client.try_send(b"x"),
        lambda: listener.accept(timeout=2),
    )
    for call in calls:
        with pytest.raises(RuntimeError, match=r"duonet\.aio"):
            call()
    return len(calls)


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_answerable_blocking_call_inside_a_loop_raises(portal_backend: str, loop: str) -> None:
    import asyncio

    import trio

    with contextlib.ExitStack() as stack:
        client, conn = stack.enter_context(connected_pair())
        listener = stack.enter_context(duonet.new_socket())
        listener.bind_addr(0, "127.0.0.1")
        listener.listen()
        stack.enter_context(socket.create_connection(listener.get_local_addr(), timeout=LONG))
        conn.sendall(b"ready\n")
        until = time.monotonic() + LONG
        while not select.select([client.get_fd()], [], [], 0.05)[0] and time.monotonic() < until:
            pass

        async def main() -> int:
            return _answerable_calls_in_loop(client, listener)

        assert (asyncio.run(main()) if loop == "asyncio" else trio.run(main)) == 6
        with listener.accept(timeout=LONG):  # nothing was consumed or lost
            assert client.recv_line(timeout=LONG) == b"ready"
            assert select.select([conn], [], [], 0.1)[0] == []  # and nothing was sent


# -- close from another thread ------------------------------------------------------------------


@pytest.mark.parametrize("operation", ["recv_line", "accept", "connect"])
def test_close_from_another_thread_wakes_the_blocked_call(
    portal_backend: str, operation: str
) -> None:
    with contextlib.ExitStack() as stack:
        if operation == "recv_line":
            sock, conn = stack.enter_context(connected_pair())
            conn.sendall(b"partial")
            call = Call(sock.recv_line)
        elif operation == "accept":
            sock = stack.enter_context(duonet.new_socket())
            sock.bind_addr(0, "127.0.0.1")
            sock.listen()
            call = Call(sock.accept)
        else:
            port = stack.enter_context(hanging_listener())
            sock = stack.enter_context(duonet.new_socket())
            call = Call(sock.connect, "127.0.0.1", port)
        call.start()
        time.sleep(0.3)
        assert call.is_alive(), f"{operation} did not block: {call.error!r} {call.value!r}"
        closed_at = time.monotonic()
        sock.close()
        call.finish(5)
        assert isinstance(call.error, SocketClosedError), repr(call.error)
        assert call.ended - closed_at < 2.0
        sock.close()  # idempotent
        assert sock.get_fd() == -1


def test_connect_timeout_on_a_hanging_connect(portal_backend: str) -> None:
    with hanging_listener() as port, duonet.new_socket() as sock:
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            sock.connect("127.0.0.1", port, timeout=0.3)
        assert 0.2 < time.monotonic() - start < 3


# -- one direction, one thread ------------------------------------------------------------------


def test_two_readers_get_busy_error(portal_backend: str) -> None:
    with connected_pair() as (sock, conn):

        def reader() -> bytes:
            while True:  # the probes below may hold the lock for a moment: retry then
                try:
                    return sock.recv_line(timeout=LONG)
                except duonet.BusyError:
                    time.sleep(0.005)

        first = Call(reader)
        first.start()
        deadline = time.monotonic() + LONG
        busy: duonet.BusyError | None = None
        while busy is None:  # probe until the first reader is blocked inside recv_line
            assert time.monotonic() < deadline, "the first reader never blocked"
            try:
                sock.recv_line(timeout=0)
            except TimeoutError:
                time.sleep(0.01)
            except duonet.BusyError as exc:
                busy = exc
        assert "another thread is already reading" in str(busy)
        with pytest.raises(duonet.BusyError, match="another thread is already reading"):
            sock.recv(1, timeout=LONG)
        with pytest.raises(duonet.BusyError):
            sock.read_line_nowait()
        conn.sendall(b"one whole line\nnext\n")
        assert first.finish().value == b"one whole line"
        assert sock.recv_line(timeout=LONG) == b"next"  # nothing was taken by the probes


def test_two_writers_get_busy_error(portal_backend: str) -> None:
    with connected_pair() as (sock, _conn):
        writer = Call(sock.send, b"x" * (64 << 20), duonet.SocketFlag(0))  # peer never reads
        writer.start()
        deadline = time.monotonic() + LONG
        busy: duonet.BusyError | None = None
        while busy is None:  # probe until the writer is blocked inside send
            assert time.monotonic() < deadline, "the writer never blocked"
            assert writer.is_alive(), repr(writer.error)
            try:
                sock.send(b"")
            except duonet.BusyError as exc:
                busy = exc
            else:
                time.sleep(0.01)
        assert "another thread is already writing" in str(busy)
        try:
            try_send: object = sock.try_send(b"y")
        except duonet.BusyError as exc:
            try_send = exc
        sock.close()
        assert isinstance(writer.finish(5).error, SocketClosedError), repr(writer.error)
    # SPEC: try_send gives False instead of raising (AsyncSocket.try_send does, on BusyError too).
    assert try_send is False, f"try_send raised {try_send!r}"


# -- timeouts through the blocking face ---------------------------------------------------------


def test_timeout_is_builtin_and_loses_nothing(portal_backend: str) -> None:
    with connected_pair() as (sock, conn):
        conn.sendall(b"first ha")
        start = time.monotonic()
        with pytest.raises(TimeoutError) as info:
            sock.recv_line(timeout=0.2)
        assert type(info.value) is TimeoutError
        assert 0.15 < time.monotonic() - start < 3
        conn.sendall(b"lf\n0123")
        assert sock.recv_line(timeout=LONG) == b"first half"
        with pytest.raises(TimeoutError):
            sock.recv(10, timeout=0.2)
        conn.sendall(b"456789")
        assert sock.recv(10, timeout=LONG) == b"0123456789"
        with pytest.raises(TimeoutError):
            sock.recv_line(timeout=0)  # nothing has arrived: no wait at all
        conn.sendall(b"already here\n")
        time.sleep(0.1)
        assert sock.recv_line(timeout=0) == b"already here"  # in the kernel counts (SPEC)


def test_accept_timeout(portal_backend: str) -> None:
    with duonet.new_socket() as listener:
        listener.bind_addr(0, "127.0.0.1")
        listener.listen()
        with pytest.raises(TimeoutError):
            listener.accept(timeout=0.2)
        with socket.create_connection(listener.get_local_addr(), timeout=LONG) as client:
            accepted, address = listener.accept_addr(timeout=LONG)
            with accepted:
                assert address == "127.0.0.1"
                assert accepted.get_peer_addr() == client.getsockname()


@pytest.mark.parametrize("timeout", [-1, -0.5, None])
def test_negative_timeout_waits_forever(portal_backend: str, timeout: float | None) -> None:
    with connected_pair() as (sock, conn):
        timer = threading.Timer(0.3, conn.sendall, (b"late\n",))
        timer.start()
        try:
            start = time.monotonic()
            assert sock.recv_line(timeout=timeout) == b"late"
            assert time.monotonic() - start > 0.25
        finally:
            timer.join(LONG)


# -- configure ----------------------------------------------------------------------------------


def test_configure_after_start(portal_backend: str) -> None:
    other = "trio" if portal_backend == "asyncio" else "asyncio"
    with connected_pair():  # the portal is running now
        pass
    with pytest.raises(RuntimeError, match=portal_backend):
        duonet.configure(other)
    duonet.configure(portal_backend)  # the backend it runs on: fine
    with pytest.raises(ValueError, match="bogus"):
        duonet.configure("bogus")


def test_configure_unknown_backend() -> None:
    with pytest.raises(ValueError, match="bogus"):
        duonet.configure("bogus")


# -- KeyboardInterrupt, fork, interpreter exit (subprocesses) -----------------------------------

KEYBOARD_INTERRUPT = """
import os, signal, socket, threading, time
import duonet

# A shell that starts us in the background may have set SIGINT to "ignore", and then Python
# installs no KeyboardInterrupt handler: install it explicitly.
signal.signal(signal.SIGINT, signal.default_int_handler)

srv = socket.create_server(("127.0.0.1", 0))
srv.settimeout(10)
port = srv.getsockname()[1]

def pair():
    s = duonet.new_socket()
    s.connect("127.0.0.1", port, timeout=10)
    conn, _ = srv.accept()
    return s, conn

def interrupted(call, payload):
    timer = threading.Timer(0.4, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    start = time.monotonic()
    try:
        result = call()
    except KeyboardInterrupt:
        result = "KeyboardInterrupt"
    timer.join()
    print(payload, result, round(time.monotonic() - start, 1), flush=True)

s, conn = pair()
conn.sendall(b"hello wo")
interrupted(lambda: s.recv_line(timeout=10), "recv_line")
conn.sendall(b"rld\\n")
print("line", s.recv_line(timeout=10), flush=True)
conn.sendall(b"12345")
interrupted(lambda: s.recv(10, timeout=10), "recv")
conn.sendall(b"67890")
print("bytes", s.recv(10, timeout=10), flush=True)
s2, conn2 = pair()
conn2.sendall(b"other socket\\n")
print("other", s2.recv_line(timeout=10), flush=True)
for sock in (s, s2, conn, conn2, srv):
    sock.close()
"""


@pytest.mark.parametrize("backend", SUBPROCESS_BACKENDS)
def test_keyboard_interrupt_loses_nothing(backend: str) -> None:
    result = run_script(KEYBOARD_INTERRUPT, backend)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 5, result.stdout + result.stderr
    for line, payload in zip(lines[:4:2], ("recv_line", "recv"), strict=True):
        name, outcome, elapsed = line.split()
        assert (name, outcome) == (payload, "KeyboardInterrupt"), line
        assert float(elapsed) < 3, line  # the interrupt was prompt
    assert lines[1] == "line b'hello world'"
    assert lines[3] == "bytes b'1234567890'"
    assert lines[4] == "other b'other socket'"


FORK = """
import os, socket, sys, threading, time, warnings
import duonet

srv = socket.create_server(("127.0.0.1", 0))
srv.settimeout(10)
port = srv.getsockname()[1]

def echo(clients):
    for _ in range(clients):
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(10)
            data = b""
            while not data.endswith(b"\\n"):
                chunk = conn.recv(100)
                if not chunk:
                    break
                data += chunk
            conn.sendall(b"echo " + data)

server = threading.Thread(target=echo, args=(3,), daemon=True)
server.start()

def roundtrip(tag):
    with duonet.new_socket() as s:
        s.connect("127.0.0.1", port, timeout=5)
        s.send(tag + "\\n")
        return s.recv_line(timeout=5)

print("parent", roundtrip("before"), flush=True)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    pid = os.fork()
if pid == 0:
    code = 1
    try:
        code = 0 if roundtrip("child") == b"echo child" else 2
    finally:
        os._exit(code)
deadline = time.monotonic() + 15
while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    if time.monotonic() > deadline:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        print("child hung", flush=True)
        sys.exit(3)
    time.sleep(0.02)
print("child", os.waitstatus_to_exitcode(status), flush=True)
print("parent", roundtrip("after"), flush=True)
server.join(10)
srv.close()
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork on this platform")
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_fork_child_gets_a_working_portal(backend: str) -> None:
    result = run_script(FORK, backend)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "parent b'echo before'",
        "child 0",
        "parent b'echo after'",
    ], result.stderr


INTERPRETER_EXIT = """
import socket, threading, time
import duonet

srv = socket.create_server(("127.0.0.1", 0))
port = srv.getsockname()[1]
a = duonet.new_socket()
a.connect("127.0.0.1", port, timeout=5)
b = duonet.new_socket()
b.connect("127.0.0.1", port, timeout=5)
listener = duonet.new_socket()
listener.bind_addr(0, "127.0.0.1")
listener.listen()
conns = [srv.accept()[0] for _ in range(2)]
conns[0].sendall(b"partial")
# A daemon thread: the interpreter never waits for it (a non-daemon thread blocked in any read
# keeps every Python program alive, duonet or not).
threading.Thread(target=a.recv_line, daemon=True).start()
time.sleep(0.3)
print("main done", flush=True)
"""


@pytest.mark.parametrize("backend", SUBPROCESS_BACKENDS)
def test_interpreter_exit_with_open_sockets_and_a_blocked_thread(backend: str) -> None:
    start = time.monotonic()
    result = run_script(INTERPRETER_EXIT, backend, timeout=15)
    assert time.monotonic() - start < 5
    assert result.returncode == 0, result.stderr
    assert result.stdout == "main done\n"


def test_subprocess_backends_are_valid() -> None:
    # The subprocess tests pick the backend through DUONET_BACKEND: a typo must not pass quietly.
    result = run_script("import duonet._portal as p; print(p.current_backend())", "trio")
    assert result.stdout.strip() == "trio", result.stderr


@pytest.mark.parametrize("max_length", [0, -1])
def test_invalid_max_length_is_rejected_with_lines_ready(
    portal_backend: str, max_length: int
) -> None:
    """The buffer's fast path checks ``max_length`` too (SPEC: at least 1), losing no line."""
    with connected_pair() as (client, conn):
        conn.sendall(b"x\n\n\n")
        assert client.recv_line(timeout=LONG) == b"x"  # the empty lines are now split out
        with pytest.raises(ValueError, match="max_length"):
            client.recv_line(timeout=LONG, max_length=max_length)
        assert client.recv_line(timeout=LONG) == b"\r\n"
        assert client.recv_line(timeout=LONG) == b"\r\n"
