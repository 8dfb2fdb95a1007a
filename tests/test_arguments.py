"""Arguments are checked at the call (SPEC), on all four faces.

* a table of wrong calls: each raises ``TypeError`` (wrong type) or ``ValueError`` (wrong value)
  naming the parameter, before any I/O, so the peer receives nothing and the bytes waiting to be
  read are all still there for the next correct call;
* the boundary values that must still work (port 0 and 65535, ``timeout=0``, negative and ``inf``
  timeouts, ``SocketFlag(0)``, ints with ``__index__``);
* never-connected stream sockets refuse reads and writes with ``ENOTCONN`` whatever the flags;
* hypothesis: arbitrary values for every argument of every read and write of a connected pair;
  each call works or raises ``TypeError``/``ValueError``/``TimeoutError``, and every byte the peer
  sent is read exactly once, in order.
"""

from __future__ import annotations

import errno
import math
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import duonet
import duonet.aio
from duonet import SocketFlag
from reliability.test_harness import (  # noqa: F401 (fixtures)
    anyio_backend_fixture,
    face_fixture,
    face_name_fixture,
    in_thread,
)
from scenarios import LONG, BlockingAdapter, Face, closed_port, stream_pair

NAN = float("nan")
NO_FLAGS = SocketFlag(0)
SAFE = SocketFlag.SAFE_DISCONN
WAITING = b"first line\r\nsecond"  # what the peer sent before each refused call


class Index:
    """An integer that is not an ``int`` (``numpy.int64`` and friends)."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __index__(self) -> int:
        return self.value


class IntPort(int):
    """An ``int`` subclass (an ``IntEnum`` member, say): still an int."""


# -- the table of wrong calls ---------------------------------------------------------------------

# (id, method, args, kwargs, exception, words the message must contain)
STREAM_ROWS: list[tuple[str, str, tuple[Any, ...], dict[str, Any], type[Exception], str]] = [
    ("recv-size-str", "recv", ("10",), {}, TypeError, "size"),
    ("recv-size-float", "recv", (1.5,), {}, TypeError, "size"),
    ("recv-size-negative", "recv", (-1,), {}, ValueError, "size"),
    ("recv-timeout-str", "recv", (4,), {"timeout": "5"}, TypeError, "timeout"),
    ("recv-timeout-bool", "recv", (4,), {"timeout": True}, TypeError, "timeout"),
    ("recv-timeout-nan", "recv", (4,), {"timeout": NAN}, ValueError, "timeout"),
    ("recv-flags-int", "recv", (4, None, 1), {}, TypeError, "flags"),
    ("recv-into-size-negative", "recv_into", (bytearray(8), -1), {}, ValueError, "size"),
    ("recv-into-size-float", "recv_into", (bytearray(8), 2.0), {}, TypeError, "size"),
    ("recv-into-readonly", "recv_into", (b"12345678",), {}, TypeError, "buffer"),
    ("recv-into-not-buffer", "recv_into", ("12345678",), {}, TypeError, "buffer"),
    ("recv-into-too-large", "recv_into", (bytearray(8), 9), {}, ValueError, "size"),
    (
        "recv-into-nan",
        "recv_into",
        (bytearray(8),),
        {"timeout": NAN},
        ValueError,
        "timeout",
    ),
    ("recv-line-timeout-str", "recv_line", (), {"timeout": "5"}, TypeError, "timeout"),
    ("recv-line-timeout-nan", "recv_line", (), {"timeout": NAN}, ValueError, "timeout"),
    ("recv-line-timeout-bool", "recv_line", (), {"timeout": True}, TypeError, "timeout"),
    ("recv-line-flags-int", "recv_line", (None, 1), {}, TypeError, "flags"),
    ("recv-line-max-float", "recv_line", (), {"max_length": 1.5}, TypeError, "max_length"),
    ("recv-line-max-zero", "recv_line", (), {"max_length": 0}, ValueError, "max_length"),
    ("recv-line-max-str", "recv_line", (), {"max_length": "9"}, TypeError, "max_length"),
    ("read-line-timeout-nan", "read_line", (), {"timeout": NAN}, ValueError, "timeout"),
    ("read-line-max-negative", "read_line", (), {"max_length": -3}, ValueError, "max_length"),
    ("skip-negative", "skip", (-1,), {}, ValueError, "size"),
    ("skip-float", "skip", (1.0,), {}, TypeError, "size"),
    ("skip-timeout-nan", "skip", (1,), {"timeout": NAN}, ValueError, "timeout"),
    ("send-int", "send", (12345,), {}, TypeError, "send"),
    ("send-none", "send", (None,), {}, TypeError, "send"),
    ("send-timeout-positional", "send", (b"x", 5), {}, TypeError, "timeout="),
    ("send-flags-float", "send", (b"x", 2.5), {}, TypeError, "flags"),
    ("send-timeout-nan", "send", (b"x",), {"timeout": NAN}, ValueError, "timeout"),
    ("send-timeout-str", "send", (b"x",), {"timeout": "1"}, TypeError, "timeout"),
    ("try-send-int", "try_send", (12345,), {}, TypeError, "try_send"),
]

#: On the blocking face these run through the facade's fast path (a line already buffered).
LINE_ROWS = [row for row in STREAM_ROWS if row[1] in ("recv_line", "read_line")]


@pytest.mark.parametrize(
    ("method", "args", "kwargs", "error", "words"),
    [pytest.param(*row[1:], id=row[0]) for row in STREAM_ROWS],
)
async def test_wrong_argument_is_refused_and_loses_nothing(
    face: Face,
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: type[Exception],
    words: str,
) -> None:
    async with stream_pair(face) as (s, conn):
        conn.sendall(WAITING)
        assert await s.recv(3, timeout=LONG) == b"fir"  # the rest is buffered or in the kernel
        with pytest.raises(error, match=words) as caught:
            await getattr(s, method)(*args, **kwargs)
        assert type(caught.value) is error
        # nothing was sent ...
        conn.setblocking(False)
        with pytest.raises(BlockingIOError):
            conn.recv(1)
        conn.setblocking(True)
        # ... and nothing was taken
        assert await s.recv_line(timeout=LONG) == b"st line"
        conn.sendall(b"\n")
        assert await s.recv_line(timeout=LONG) == b"second"


@pytest.mark.parametrize(
    ("method", "args", "kwargs", "error", "words"),
    [pytest.param(*row[1:], id=row[0]) for row in LINE_ROWS],
)
async def test_wrong_argument_with_a_line_buffered(
    face: Face,
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: type[Exception],
    words: str,
) -> None:
    """The blocking face answers a buffered line without a hop: the checks hold there too."""
    async with stream_pair(face) as (s, conn):
        conn.sendall(b"one\ntwo\nthree\n")
        assert await s.recv_line(timeout=LONG) == b"one"  # two and three are buffered now
        with pytest.raises(error, match=words):
            await getattr(s, method)(*args, **kwargs)
        assert await s.recv_line(timeout=LONG) == b"two"
        assert await s.recv_line(timeout=LONG) == b"three"


def test_flags_message_says_to_pass_timeout_by_keyword() -> None:
    with duonet.new_socket() as s, pytest.raises(TypeError) as caught:
        s.send(b"x", 5)  # type: ignore[arg-type]
    assert "timeout=5" in str(caught.value)
    assert "SocketFlag" in str(caught.value)


ADDRESS_ROWS: list[tuple[str, Any, Any, type[Exception], str]] = [
    ("port-over", "127.0.0.1", 65536, ValueError, "port"),
    ("port-wrapping", "127.0.0.1", 65536 + 80, ValueError, "port"),
    ("port-negative", "127.0.0.1", -1, ValueError, "port"),
    ("port-str", "127.0.0.1", "80", TypeError, "port"),
    ("port-float", "127.0.0.1", 80.0, TypeError, "port"),
    ("port-bool", "127.0.0.1", True, TypeError, "port"),
    ("port-none", "127.0.0.1", None, TypeError, "port"),
    ("address-bytes", b"127.0.0.1", 80, TypeError, "address"),
    ("address-none", None, 80, TypeError, "address"),
    ("address-int", 2130706433, 80, TypeError, "address"),
    ("address-nul", "127.0.0.1\0evil.example", 80, ValueError, "address"),
]


@pytest.mark.parametrize(
    ("address", "port", "error", "words"),
    [pytest.param(*row[1:], id=row[0]) for row in ADDRESS_ROWS],
)
async def test_connect_dial_and_bind_check_address_and_port(
    face: Face, address: Any, port: Any, error: type[Exception], words: str
) -> None:
    s = face.new_socket()
    try:
        with pytest.raises(error, match=words):
            await s.connect(address, port, timeout=LONG)
        with pytest.raises(error, match=words):
            await face.dial(address, port, timeout=LONG)
        bind_address = "" if address == "127.0.0.1" else address
        with pytest.raises(error, match=words):
            s.bind_addr(port, bind_address)
        assert s.get_local_addr() == ("0.0.0.0", 0)  # nothing was bound
    finally:
        await s.close()


async def test_tls_connect_refuses_a_cut_host_name(face: Face) -> None:
    ctx = duonet.new_context()
    s = face.new_socket()
    try:
        duonet.wrap_socket(ctx, s.sock if hasattr(s, "sock") else s)
        with pytest.raises(ValueError, match="address"):
            await s.connect("127.0.0.1\0evil.example", 443, timeout=LONG)
    finally:
        await s.close()


@pytest.mark.parametrize("timeout", [NAN, "5", True], ids=["nan", "str", "bool"])
async def test_dial_connect_accept_check_timeout(face: Face, timeout: Any) -> None:
    error = ValueError if timeout is NAN else TypeError
    with pytest.raises(error, match="timeout"):
        await face.dial("127.0.0.1", closed_port(), timeout=timeout)
    s = face.new_socket()
    try:
        with pytest.raises(error, match="timeout"):
            await s.connect("127.0.0.1", closed_port(), timeout=timeout)
        s.bind_addr(0, "127.0.0.1")
        s.listen()
        with pytest.raises(error, match="timeout"):
            await s.accept(timeout=timeout)
        with pytest.raises(TypeError, match="flags"):
            await s.accept(1)
    finally:
        await s.close()


@pytest.mark.parametrize("backlog", ["5", 1.5, None], ids=["str", "float", "none"])
def test_listen_backlog_must_be_an_integer(backlog: Any) -> None:
    with duonet.new_socket() as s:
        s.bind_addr(0, "127.0.0.1")
        with pytest.raises(TypeError, match="backlog"):
            s.listen(backlog)
        s.listen(Index(3))  # type: ignore[arg-type]


def test_options_check_their_arguments() -> None:
    with duonet.new_socket() as s:
        with pytest.raises(TypeError, match="opt"):
            s.get_sock_opt(1)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="opt"):
            s.set_sock_opt("REUSE_ADDR", True)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="level"):
            s.get_sock_opt(duonet.SOBool.REUSE_ADDR, 1.5)  # type: ignore[arg-type]


# -- datagrams ------------------------------------------------------------------------------------


@pytest.fixture
async def udp_pair(face: Face) -> AsyncIterator[tuple[Any, socket.socket]]:
    s = face.new_socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind_addr(0, "127.0.0.1")
        peer.bind(("127.0.0.1", 0))
        peer.settimeout(LONG)
        yield s, peer
    finally:
        peer.close()
        await s.close()


async def call(s: Any, method: str, *args: Any) -> Any:
    """``s.method(*args)``: awaited on the async face, in a worker thread on the blocking one
    (the scenario adapter does not wrap the datagram methods)."""
    if isinstance(s, BlockingAdapter):
        return await in_thread(getattr(s.sock, method), *args)
    return await getattr(s, method)(*args)


UDP_ROWS: list[tuple[str, tuple[Any, ...], dict[str, Any], type[Exception], str]] = [
    ("port-over", ("127.0.0.1", 70000, b"x"), {}, ValueError, "port"),
    ("port-str", ("127.0.0.1", "9", b"x"), {}, TypeError, "port"),
    ("address-bytes", (b"127.0.0.1", 9, b"x"), {}, TypeError, "address"),
    ("address-nul", ("127.0.0.1\0x", 9, b"x"), {}, ValueError, "address"),
    ("data-int", ("127.0.0.1", 9, 12), {}, TypeError, "send_to"),
    ("flags-float", ("127.0.0.1", 9, b"x", 2.5), {}, TypeError, "flags"),
    ("flags-socketflag-bool", ("127.0.0.1", 9, b"x", True), {}, TypeError, "flags"),
]


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "words"), [pytest.param(*row[1:], id=row[0]) for row in UDP_ROWS]
)
async def test_send_to_checks_its_arguments(
    face: Face,
    udp_pair: tuple[Any, socket.socket],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    error: type[Exception],
    words: str,
) -> None:
    s, _peer = udp_pair
    with pytest.raises(error, match=words):
        await call(s, "send_to", *args, **kwargs)


async def test_recv_from_length(face: Face, udp_pair: tuple[Any, socket.socket]) -> None:
    s, peer = udp_pair
    for length in (-1, -(2**40)):
        with pytest.raises(ValueError, match="length"):
            await call(s, "recv_from", length, LONG)
    with pytest.raises(TypeError, match="length"):
        await call(s, "recv_from", "10", LONG)
    with pytest.raises(ValueError, match="timeout"):
        await call(s, "recv_from", 10, NAN)
    # a huge length allocates no more than the largest datagram: no MemoryError
    peer.sendto(b"datagram", s.get_local_addr())
    data, host, port = await call(s, "recv_from", 2**40, LONG)
    assert (data, host, port) == (b"datagram", "127.0.0.1", peer.getsockname()[1])
    peer.sendto(b"index", s.get_local_addr())
    data, _host, _port = await call(s, "recv_from", Index(3), LONG)
    assert data == b"ind"


def test_recv_from_negative_length_same_message_on_both_faces() -> None:
    async def aio_message() -> str:
        s = duonet.aio.new_async_socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        try:
            with pytest.raises(ValueError, match="length") as caught:
                await s.recv_from(-1, 0)
            return str(caught.value)
        finally:
            await s.close()

    with duonet.new_socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP) as s:
        with pytest.raises(ValueError, match="length") as caught:
            s.recv_from(-1, 0)
        blocking = str(caught.value)
    assert blocking == anyio.run(aio_message)
    assert "-1" in blocking


# -- boundary values that must work --------------------------------------------------------------


async def test_boundary_values_work(face: Face) -> None:
    async with stream_pair(face) as (s, conn):
        conn.sendall(b"alpha\nbravo\ncharlie\ndelta\necho\nfoxtrot\ngolf\n")
        assert await s.recv_line(timeout=LONG) == b"alpha"
        assert await s.recv_line(timeout=0) == b"bravo"  # buffered: no wait needed
        assert await s.recv_line(timeout=-1) == b"charlie"
        assert await s.recv_line(timeout=math.inf) == b"delta"
        assert await s.recv_line(None, NO_FLAGS, Index(2)) == b"ec"
        assert await s.recv_line(max_length=IntPort(10)) == b"ho"
        assert await s.recv(Index(4), timeout=LONG, flags=NO_FLAGS) == b"foxt"
        assert await s.skip(Index(2), timeout=5) == 2
        buf = bytearray(8)
        assert await s.recv_into(buf, Index(3), timeout=LONG) == 3
        assert bytes(buf[:3]) == b"t\ng"
        assert await s.recv(0) == b""
        assert await s.skip(0) == 0
        await s.send(b"x", NO_FLAGS, 5)
        await s.send(memoryview(b"yz"), SAFE | SocketFlag.PEEK, timeout=math.inf)
        await s.send(bytearray(b"!"), timeout=-1)
        await s.send("\u00e9")
        assert await s.try_send(b".")
        assert conn.recv(16) == b"xyz!\xc3\xa9."


async def test_port_boundaries(face: Face) -> None:
    s = face.new_socket()
    try:
        s.bind_addr(IntPort(0), duonet.parse_ip_address("127.0.0.1"))
        port = s.get_local_addr()[1]
        assert port > 0
        s.listen(Index(1))
        c = face.new_socket()
        try:
            await c.connect("127.0.0.1", IntPort(port), timeout=LONG)
        finally:
            await c.close()
        # 65535 is a valid port: refused (nothing listens there), not a ValueError
        c2 = face.new_socket()
        try:
            with pytest.raises(ConnectionRefusedError):
                await c2.connect("127.0.0.1", 65535, timeout=LONG)
        finally:
            await c2.close()
    finally:
        await s.close()


# -- never connected ------------------------------------------------------------------------------

UNCONNECTED_CALLS: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("send", (b"x",), {}),
    ("send", ("x",), {"flags": SAFE}),
    ("send", (b"x",), {"flags": NO_FLAGS}),
    ("try_send", (b"x",), {}),
    ("recv", (1,), {}),
    ("recv", (1,), {"flags": NO_FLAGS}),
    ("recv_into", (bytearray(4),), {}),
    ("recv_line", (), {}),
    ("recv_line", (), {"timeout": 0}),
    ("read_line", (), {}),
    ("skip", (1,), {}),
]


@pytest.mark.parametrize(
    ("method", "args", "kwargs"),
    [pytest.param(*call, id=f"{call[0]}-{i}") for i, call in enumerate(UNCONNECTED_CALLS)],
)
async def test_never_connected_socket_refuses_io(
    face: Face, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    s = face.new_socket()
    try:
        with pytest.raises(OSError, match=r"call connect\(\) first") as caught:
            await getattr(s, method)(*args, **kwargs)
        assert caught.value.errno == errno.ENOTCONN
    finally:
        await s.close()


async def test_listener_refuses_io_but_its_clients_do_not(face: Face) -> None:
    lst = face.new_socket()
    try:
        lst.bind_addr(0, "127.0.0.1")
        lst.listen()
        with pytest.raises(OSError, match="not connected") as caught:
            await lst.recv(1)
        assert caught.value.errno == errno.ENOTCONN
        with socket.create_connection(("127.0.0.1", lst.get_local_addr()[1]), LONG) as conn:
            client = await lst.accept(timeout=LONG)
            try:
                conn.sendall(b"hi\n")
                assert await client.recv_line(timeout=LONG) == b"hi"
                await client.send(b"ok")
                assert conn.recv(2) == b"ok"
            finally:
                await client.close()
    finally:
        await lst.close()


def test_adopted_connected_socket_is_connected() -> None:
    a, b = socket.socketpair()
    with duonet.Socket.from_socket(a) as s, b:
        s.send(b"x")
        assert b.recv(1) == b"x"
    unconnected = socket.socket()
    with (
        duonet.Socket.from_socket(unconnected) as s,
        pytest.raises(OSError, match="not connected") as caught,
    ):
        s.send(b"x")
    assert caught.value.errno == errno.ENOTCONN


# -- hypothesis: any value for any argument loses nothing ----------------------------------------

PAYLOAD = bytes(range(33, 127)) * 3  # no line terminator: recv_line gives pieces back verbatim

ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-2, max_value=300),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 0.0, -1, 0.01, math.inf, -math.inf, NAN]),
    st.text(max_size=5),
    st.binary(max_size=50),
    st.sampled_from([SAFE, NO_FLAGS, Index(3), Index(-1), IntPort(2), [], object()]),
)
SIZE = st.one_of(st.integers(min_value=0, max_value=400), ANY_VALUE)
TIMEOUT = st.one_of(st.sampled_from([None, 0, -1, 0.01, math.inf]), ANY_VALUE)
FLAGS = st.one_of(st.sampled_from([SAFE, NO_FLAGS]), ANY_VALUE)


@st.composite
def calls(draw: st.DrawFn) -> tuple[str, tuple[Any, ...]]:
    method = draw(
        st.sampled_from(
            [
                *("recv", "recv_into", "recv_line", "read_line", "skip", "send", "try_send"),
                *("read_line_nowait", "has_data_buffered"),
            ]
        )
    )
    if method == "recv":
        return method, (draw(SIZE), draw(TIMEOUT), draw(FLAGS))
    if method == "recv_into":
        target = draw(st.one_of(st.builds(bytearray, st.integers(0, 300)), ANY_VALUE))
        size = draw(st.one_of(st.none(), SIZE))
        return method, (target, size, draw(TIMEOUT), draw(FLAGS))
    if method in ("recv_line", "read_line"):
        max_length = draw(st.one_of(st.integers(1, 200), ANY_VALUE))
        return method, (draw(TIMEOUT), draw(FLAGS), max_length)
    if method == "skip":
        return method, (draw(SIZE), draw(TIMEOUT))
    if method == "send":
        data = draw(st.one_of(st.binary(max_size=200), st.text(max_size=50), ANY_VALUE))
        return method, (data, draw(FLAGS), draw(TIMEOUT))
    if method == "try_send":
        return method, (draw(st.one_of(st.binary(max_size=200), ANY_VALUE)),)
    return method, ()


def _consumed(method: str, args: tuple[Any, ...], result: Any) -> tuple[bytes, bytes]:
    """(bytes read, bytes sent) by a call that returned ``result``."""
    if method in ("recv", "recv_line", "read_line"):
        return bytes(result), b""
    if method == "recv_into":
        return bytes(memoryview(args[0]).cast("B")[:result]), b""
    if method == "skip":
        return b"\0" * result, b""  # placeholder bytes: checked by position below
    if method == "read_line_nowait":
        return bytes(result[1]), b""
    if method == "send":
        data = args[0]
        return b"", data.encode() if isinstance(data, str) else bytes(data)
    if method == "try_send":
        data = args[0]
        if not result:
            return b"", b""
        return b"", data.encode() if isinstance(data, str) else bytes(data)
    return b"", b""


class Ledger:
    """What the duonet side read (``None`` marks skipped bytes) and sent."""

    def __init__(self) -> None:
        self.read: list[tuple[str, bytes]] = []
        self.sent = b""

    def check(self, rest: bytes, peer_got: bytes) -> None:
        position = 0
        for method, chunk in self.read:
            if method != "skip":
                assert chunk == PAYLOAD[position : position + len(chunk)]
            position += len(chunk)
        assert rest == PAYLOAD[position:]
        assert peer_got == self.sent


BLOCKING_TIMEOUT = 20.0


def _pair_blocking() -> tuple[duonet.Socket, socket.socket, socket.socket]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(LONG)
    s = duonet.dial("127.0.0.1", listener.getsockname()[1], timeout=LONG)
    conn, _ = listener.accept()
    conn.settimeout(LONG)
    conn.sendall(PAYLOAD)
    conn.shutdown(socket.SHUT_WR)  # every read ends: nothing can wait forever
    return s, conn, listener


def _peer_received(conn: socket.socket) -> bytes:
    got = b""
    while chunk := conn.recv(65536):
        got += chunk
    return got


def _run_calls_blocking(sequence: list[tuple[str, tuple[Any, ...]]]) -> None:
    s, conn, listener = _pair_blocking()
    ledger = Ledger()
    with s, conn, listener:
        for method, args in sequence:
            started = time.monotonic()
            try:
                result = getattr(s, method)(*args)
            except (TypeError, ValueError, TimeoutError):
                continue
            finally:
                assert time.monotonic() - started < BLOCKING_TIMEOUT
            got, sent = _consumed(method, args, result)
            ledger.read.append((method, got))
            ledger.sent += sent
        rest = b""
        while chunk := s.recv(4096, timeout=LONG):
            rest += chunk
        s.close()
        ledger.check(rest, _peer_received(conn))


async def _run_calls_async(sequence: list[tuple[str, tuple[Any, ...]]]) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(LONG)
    s = await duonet.aio.dial("127.0.0.1", listener.getsockname()[1], timeout=LONG)
    conn, _ = listener.accept()
    conn.settimeout(LONG)
    conn.sendall(PAYLOAD)
    conn.shutdown(socket.SHUT_WR)
    ledger = Ledger()
    with conn, listener:
        async with s:
            for method, args in sequence:
                with anyio.fail_after(BLOCKING_TIMEOUT):
                    try:
                        result = getattr(s, method)(*args)
                        if hasattr(result, "__await__"):
                            result = await result
                    except (TypeError, ValueError, TimeoutError):
                        continue
                got, sent = _consumed(method, args, result)
                ledger.read.append((method, got))
                ledger.sent += sent
            rest = b""
            while chunk := await s.recv(4096, timeout=LONG):
                rest += chunk
        ledger.check(rest, _peer_received(conn))


HYPOTHESIS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


@HYPOTHESIS
@given(st.lists(calls(), min_size=1, max_size=5))
def test_any_arguments_lose_nothing_blocking(
    portal_backend: str, sequence: list[tuple[str, tuple[Any, ...]]]
) -> None:
    _run_calls_blocking(sequence)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@HYPOTHESIS
@given(sequence=st.lists(calls(), min_size=1, max_size=5))
def test_any_arguments_lose_nothing_async(
    backend: str, sequence: list[tuple[str, tuple[Any, ...]]]
) -> None:
    anyio.run(_run_calls_async, sequence, backend=backend)
