"""The blocking face's fast path (``duonet._core._fastpath``) mirrors the awaited methods.

Each fast-path function stands for the ``AsyncSocket`` method of the same name in the caller's
thread, so it must take exactly that method's parameters (after the socket), with the same names,
kinds and defaults: the blocking ``Socket`` passes one argument list to both.
"""

from __future__ import annotations

import array
import inspect
import socket
import threading
import time
from collections.abc import Iterator

import pytest

import duonet
from duonet import _blocking
from duonet._buffer import ReadBuffer
from duonet._core import _fastpath
from duonet.aio import AsyncSocket

LONG = 10.0


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
