"""The blocking face's fast path (``duonet._core._fastpath``) mirrors the awaited methods.

Each fast-path function stands for the ``AsyncSocket`` method of the same name in the caller's
thread, so it must take exactly that method's parameters (after the socket), with the same names,
kinds and defaults: the blocking ``Socket`` passes one argument list to both.
"""

from __future__ import annotations

import array
import inspect
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

import duonet
import duonet.aio
from duonet import _blocking, _portal
from duonet._buffer import ReadBuffer
from duonet._core import _fastpath
from duonet.aio import AsyncSocket

LONG = 10.0
SAFE = duonet.SocketFlag.SAFE_DISCONN


@pytest.mark.parametrize("name", _fastpath.__all__)
def test_fast_path_takes_the_awaited_methods_parameters(name: str) -> None:
    fast = list(inspect.signature(getattr(_fastpath, name)).parameters.values())
    awaited = list(inspect.signature(getattr(AsyncSocket, name)).parameters.values())
    assert fast[0].name == "sock"
    assert awaited[0].name == "self"
    shape = [(p.name, p.kind, p.default) for p in fast[1:]]
    assert shape == [(p.name, p.kind, p.default) for p in awaited[1:]]


def test_every_fast_path_function_stands_for_an_awaited_method() -> None:
    for name in _fastpath.__all__:
        assert inspect.iscoroutinefunction(getattr(AsyncSocket, name)), name
        assert not inspect.iscoroutinefunction(getattr(_fastpath, name)), name


def test_the_module_states_the_thread_rule() -> None:
    doc = _fastpath.__doc__ or ""
    assert "thread rule" in doc
    assert "never wait" in doc
    assert "TLS" in doc


# -- answering from the buffer: the first step of the blocking face's reads ----------------------

BUFFER_STEPS = ("line_from_buffer", "bytes_from_buffer")


def test_the_buffer_step_is_documented() -> None:
    doc = _fastpath.__doc__ or ""
    assert "Answering from the buffer" in doc
    for name in BUFFER_STEPS:
        assert name in doc
        assert name not in _fastpath.__all__  # (not a twin of an awaited method)


def test_the_blocking_face_holds_no_copy_of_the_buffer_step() -> None:
    # The facade answers from the buffer only through the fast path's step: no buffer call or
    # ready-lane pop of its own (the fast path lives in one place).
    source = inspect.getsource(_blocking)
    for name in ("take_line", "take_exact", "take(", ".ready", "EMPTY_LINE", "_lines_max"):
        assert name not in source, name
    assert "_fastpath.line_from_buffer" in source
    assert "_fastpath.bytes_from_buffer" in source


def test_line_from_buffer() -> None:
    buf = ReadBuffer()
    assert _fastpath.line_from_buffer(buf, 100) is None
    buf.feed(b"one\n\nthree-long\nfour\r\nfive")
    assert _fastpath.line_from_buffer(buf, 100) == b"one"
    assert _fastpath.line_from_buffer(buf, 100) == b"\r\n"  # an empty line
    assert _fastpath.line_from_buffer(buf, 5) == b"three"  # a max_length piece of a split line
    buf.unread_line(b"three")  # puts back exactly what it took (no terminator)
    assert _fastpath.line_from_buffer(buf, 100) == b"three-long"
    assert _fastpath.line_from_buffer(buf, 100) == b"four"
    assert _fastpath.line_from_buffer(buf, 100) is None  # "five" is not a line yet
    assert buf.peek() == b"five"


def test_bytes_from_buffer() -> None:
    buf = ReadBuffer()
    buf.feed(b"$5\r\nhello")
    assert _fastpath.line_from_buffer(buf, 100) == b"$5"
    for size in (0, -1, 6):  # below 1 is not a read; more than buffered takes nothing
        assert _fastpath.bytes_from_buffer(buf, size) is None
    assert _fastpath.bytes_from_buffer(buf, 5) == b"hello"
    assert not buf


@pytest.fixture
def pair(portal_backend: str) -> Iterator[tuple[duonet.Socket, socket.socket]]:
    with socket.create_server(("127.0.0.1", 0)) as srv:
        srv.settimeout(LONG)
        with duonet.new_socket() as client:
            client.connect("127.0.0.1", srv.getsockname()[1], timeout=LONG)
            conn, _ = srv.accept()
            with conn:
                conn.settimeout(LONG)
                yield client, conn


def wait_in_kernel(sock: duonet.Socket, size: int) -> None:
    """Wait until ``size`` bytes wait in the kernel for ``sock`` (so one read takes them all)."""
    import fcntl
    import termios

    deadline = time.monotonic() + LONG
    count = array.array("i", [0])
    while True:
        fcntl.ioctl(sock.fileno(), termios.FIONREAD, count)
        if count[0] >= size:
            return
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_recv_of_zero_or_negative_does_not_touch_the_buffer(
    pair: tuple[duonet.Socket, socket.socket],
) -> None:
    client, conn = pair
    conn.sendall(b"header\nbody")
    assert client.recv_line(timeout=LONG) == b"header"
    assert client.recv(0) == b""
    with pytest.raises(ValueError, match="size"):
        client.recv(-1)
    assert client.recv(4, timeout=LONG) == b"body"


def test_blocking_lines_and_pieces_from_the_buffer(
    pair: tuple[duonet.Socket, socket.socket],
) -> None:
    # Lines split in one batch, read by iteration, recv_line and pieces of max_length: every
    # byte once, in order, whichever read takes it.
    client, conn = pair
    data = b"first\nsecond-line\n\nthird\r\nfourth\n" + b"x" * 10 + b"\nend"
    conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)
    wait_in_kernel(client, len(data))
    assert client.recv_line(timeout=LONG) == b"first"
    assert len(client.aio._buf) == len(data) - 6  # the rest is buffered: no more I/O below
    lines = client.lines(max_length=6)
    assert next(lines) == b"second"
    assert client.recv_line(timeout=LONG, max_length=100) == b"-line"
    assert next(lines) == b"\r\n"
    assert next(lines) == b"third"
    assert client.recv(3, timeout=LONG) == b"fou"
    assert list(lines) == [b"rth", b"xxxxxx", b"xxxx", b"end"]
    assert client.recv_line(timeout=LONG) == b""


def test_the_buffer_step_keeps_the_busy_rule(pair: tuple[duonet.Socket, socket.socket]) -> None:
    # A line already in the buffer is not handed to a second reader while a read is in flight:
    # BusyError, and the bytes stay in order for the read in flight.
    client, conn = pair
    got: list[bytes] = []
    conn.sendall(b"a\nb\n")
    wait_in_kernel(client, 4)
    assert client.recv(1, timeout=LONG) == b"a"  # the rest (\nb\n) is now buffered
    thread = threading.Thread(target=lambda: got.append(client.recv(9, timeout=LONG)))
    thread.start()
    try:
        deadline = time.monotonic() + LONG
        while client._rtoken:  # until the reader holds the read token (it waits: 3 of 9 bytes)
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(duonet.BusyError):
            client.recv_line()
        with pytest.raises(duonet.BusyError):
            next(iter(client))
        with pytest.raises(duonet.BusyError):
            client.recv(1)
    finally:
        conn.sendall(b"cdefgh")
        thread.join(LONG)
    assert got == [b"\nb\ncdefgh"]


# -- recv_into: the loop goes on from what the fast path already wrote ---------------------------


def partial_recv_into(client: duonet.Socket, conn: socket.socket) -> bytearray:
    """Five bytes wait in the kernel: the fast path writes them, the loop must read the rest."""
    conn.sendall(b"12345")
    wait_in_kernel(client, 5)
    return bytearray(b"\xee" * 12)


def test_recv_into_goes_on_in_the_loop(pair: tuple[duonet.Socket, socket.socket]) -> None:
    client, conn = pair
    target = partial_recv_into(client, conn)
    timer = threading.Timer(0.2, conn.sendall, (b"67890xy",))
    timer.start()
    try:
        assert client.recv_into(target, 10, timeout=LONG) == 10
    finally:
        timer.join()
    assert target == b"1234567890\xee\xee"
    assert client.recv(2, timeout=LONG) == b"xy"


def test_recv_into_timeout_mid_way_loses_nothing(
    pair: tuple[duonet.Socket, socket.socket],
) -> None:
    client, conn = pair
    target = partial_recv_into(client, conn)
    with pytest.raises(TimeoutError):
        client.recv_into(target, 10, timeout=0.2)
    conn.sendall(b"678")
    with pytest.raises(TimeoutError):  # 8 bytes of 10, this time read by the loop alone
        client.recv_into(target, 10, timeout=0.2)
    conn.sendall(b"90")
    assert client.recv(10, timeout=LONG) == b"1234567890"


def test_recv_into_closed_mid_way(pair: tuple[duonet.Socket, socket.socket]) -> None:
    client, conn = pair
    target = partial_recv_into(client, conn)
    timer = threading.Timer(0.2, client.close)
    timer.start()
    try:
        with pytest.raises(duonet.SocketClosedError):
            client.recv_into(target, 10, timeout=LONG)
    finally:
        timer.join()


def test_recv_into_reset_mid_way_keeps_the_bytes(
    pair: tuple[duonet.Socket, socket.socket],
) -> None:
    # The peer closes before the rest: a buffered recv_into returns what there was.
    client, conn = pair
    target = partial_recv_into(client, conn)
    timer = threading.Timer(0.2, conn.shutdown, (socket.SHUT_WR,))
    timer.start()
    try:
        assert client.recv_into(target, 10, timeout=LONG) == 5
    finally:
        timer.join()
    assert target[:5] == b"12345"


KEYBOARD_INTERRUPT_INTO = """
import fcntl, os, signal, socket, termios, threading, time, array
import duonet

signal.signal(signal.SIGINT, signal.default_int_handler)
srv = socket.create_server(("127.0.0.1", 0))
srv.settimeout(10)
s = duonet.new_socket()
s.connect("127.0.0.1", srv.getsockname()[1], timeout=10)
conn, _ = srv.accept()
conn.sendall(b"12345")
count = array.array("i", [0])
while count[0] < 5:
    fcntl.ioctl(s.fileno(), termios.FIONREAD, count)
    time.sleep(0.01)
timer = threading.Timer(0.4, os.kill, (os.getpid(), signal.SIGINT))
timer.start()
start = time.monotonic()
try:
    result = s.recv_into(bytearray(10), timeout=10)
except KeyboardInterrupt:
    result = "KeyboardInterrupt"
timer.join()
print(result, round(time.monotonic() - start, 1), flush=True)
conn.sendall(b"67890")
print(s.recv(10, timeout=10), flush=True)
for sock in (s, conn, srv):
    sock.close()
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_keyboard_interrupt_mid_recv_into_loses_nothing(backend: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", KEYBOARD_INTERRUPT_INTO],
        capture_output=True,
        text=True,
        timeout=30,
        env=dict(os.environ, DUONET_BACKEND=backend),
    )
    assert result.returncode == 0, result.stderr
    outcome, elapsed = result.stdout.splitlines()[0].split()
    assert outcome == "KeyboardInterrupt"
    assert float(elapsed) < 3  # prompt
    assert result.stdout.splitlines()[1] == "b'1234567890'"


def test_recv_into_interrupted_before_the_loop_ran_loses_nothing(
    pair: tuple[duonet.Socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Ctrl-C can stop the hop before the loop runs the rest of the read (the job never
    # starts): then the caller gives back the bytes the fast path already wrote, exactly once.
    client, conn = pair
    target = partial_recv_into(client, conn)

    def interrupted(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(_portal, "call", interrupted)
    with pytest.raises(KeyboardInterrupt):
        client.recv_into(target, 10, timeout=LONG)
    monkeypatch.undo()
    conn.sendall(b"67890")
    assert client.recv(10, timeout=LONG) == b"1234567890"


async def test_finish_recv_into_after_the_caller_gave_up_touches_nothing() -> None:
    # The other order: the caller claimed the bytes back first; the job, if it still runs,
    # reads nothing and gives nothing back.
    a, b = socket.socketpair()
    with b:
        sock = duonet.aio.AsyncSocket.from_socket(a)
        async with sock:
            b.sendall(b"xyz")
            view = memoryview(bytearray(10))
            assert await _fastpath.finish_recv_into(sock, view, 5, None, SAFE, []) == 0
            assert not sock._buf
            assert await sock.recv(3, timeout=LONG) == b"xyz"
