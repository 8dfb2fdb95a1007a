"""UDP: ``send_to`` / ``recv_from``, connected datagram sockets, IPv6 and IPv4-mapped senders.

Each scenario is written once, as a generator that ``yield``s every call which ``duonet.aio``
awaits; the driver awaits it (async face, on asyncio and trio) or hands the value straight back
(blocking face, with the portal on asyncio and trio). Errors reach the scenario at its ``yield``
either way, so ``pytest.raises`` works around a ``yield``.
"""

from __future__ import annotations

import inspect
import socket
import threading
import time
from collections.abc import Callable, Generator
from typing import Any

import anyio
import pytest

import duonet
import duonet.aio
from conftest import HAS_IPV6
from duonet import SOBool, parse_ip_address

LONG = 10.0
Scenario = Callable[["Face"], Generator[Any, Any, None]]
SCENARIOS: list[Scenario] = []


def scenario(func: Scenario) -> Scenario:
    SCENARIOS.append(func)
    return func


class Face:
    """One face of the API and the sockets a scenario opened (closed by the driver)."""

    def __init__(self, blocking: bool) -> None:
        self.blocking = blocking
        self.mod: Any = duonet if blocking else duonet.aio
        self.opened: list[Any] = []

    def new_socket(self, domain: int = socket.AF_INET) -> Any:
        new = duonet.new_socket if self.blocking else duonet.aio.new_async_socket
        sock = new(domain, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        self.opened.append(sock)
        return sock

    def udp(self, host: str = "127.0.0.1", domain: int = socket.AF_INET) -> tuple[Any, int]:
        """A datagram socket bound to ``host`` on a free port, and that port."""
        sock = self.new_socket(domain)
        sock.bind_addr(0, host)
        return sock, sock.get_local_addr()[1]


def run_blocking(func: Scenario) -> None:
    face = Face(blocking=True)
    steps = func(face)
    try:
        value = None
        while True:
            try:
                value = steps.send(value)
            except StopIteration:
                return
    finally:
        steps.close()
        for sock in face.opened:
            sock.close()


async def run_async(func: Scenario) -> None:
    face = Face(blocking=False)
    steps = func(face)
    try:
        value: Any = None
        error: Exception | None = None
        while True:
            try:
                step = steps.throw(error) if error is not None else steps.send(value)
            except StopIteration:
                return
            value = error = None
            if inspect.isawaitable(step):
                try:
                    with anyio.fail_after(2 * LONG):
                        value = await step
                except Exception as exc:
                    error = exc
            else:
                value = step
    finally:
        steps.close()
        for sock in face.opened:
            await sock.close()


# -- scenarios ----------------------------------------------------------------------------------


@scenario
def send_to_every_address_form(face: Face) -> Generator[Any, Any, None]:
    a, a_port = face.udp()
    b, b_port = face.udp()
    for address in (
        "127.0.0.1",
        "localhost",
        parse_ip_address("127.0.0.1"),
        duonet.ipv4_loopback(),
    ):
        assert (yield a.send_to(address, b_port, b"hello")) == 5
        assert (yield b.recv_from(100, timeout=LONG)) == (b"hello", "127.0.0.1", a_port)
    # str is sent UTF-8 encoded; any buffer is accepted; the count is in bytes
    for data, raw in (
        ("h\u00e9", b"h\xc3\xa9"),
        (bytearray(b"ba"), b"ba"),
        (memoryview(b"mv"), b"mv"),
    ):
        assert (yield a.send_to("127.0.0.1", b_port, data)) == len(raw)
        assert (yield b.recv_from(100, timeout=LONG)) == (raw, "127.0.0.1", a_port)
    # and back the other way
    assert (yield b.send_to("127.0.0.1", a_port, b"reply")) == 5
    assert (yield a.recv_from(100, timeout=LONG)) == (b"reply", "127.0.0.1", b_port)


@scenario
def long_datagram_is_truncated(face: Face) -> Generator[Any, Any, None]:
    a, a_port = face.udp()
    b, b_port = face.udp()
    payload = bytes(range(100))
    assert (yield a.send_to("127.0.0.1", b_port, payload)) == 100
    assert (yield a.send_to("127.0.0.1", b_port, b"next")) == 4
    assert (yield b.recv_from(10, timeout=LONG)) == (payload[:10], "127.0.0.1", a_port)
    # the rest of the long datagram is gone, the next datagram is intact
    assert (yield b.recv_from(100, timeout=LONG)) == (b"next", "127.0.0.1", a_port)


@scenario
def zero_length_datagrams(face: Face) -> Generator[Any, Any, None]:
    a, a_port = face.udp()
    b, b_port = face.udp()
    assert (yield a.send_to("127.0.0.1", b_port, b"")) == 0
    assert (yield a.send_to("127.0.0.1", b_port, b"")) == 0
    assert (yield a.send_to("127.0.0.1", b_port, b"x")) == 1
    assert (yield b.recv_from(10, timeout=LONG)) == (b"", "127.0.0.1", a_port)
    assert (yield b.recv_from(10, timeout=LONG)) == (b"", "127.0.0.1", a_port)
    assert (yield b.recv_from(10, timeout=LONG)) == (b"x", "127.0.0.1", a_port)


@scenario
def burst_of_200_in_order(face: Face) -> Generator[Any, Any, None]:
    a, a_port = face.udp()
    b, b_port = face.udp()
    for i in range(200):
        assert (yield a.send_to("127.0.0.1", b_port, b"%05d" % i)) == 5
    received = []
    for _ in range(200):
        data, host, port = yield b.recv_from(100, timeout=LONG)
        assert (host, port) == ("127.0.0.1", a_port)
        received.append(data)
    assert received == [b"%05d" % i for i in range(200)]


@scenario
def recv_from_timeout_loses_nothing(face: Face) -> Generator[Any, Any, None]:
    a, a_port = face.udp()
    b, b_port = face.udp()
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        yield b.recv_from(100, timeout=0.2)
    assert 0.15 < time.monotonic() - start < 3
    with pytest.raises(TimeoutError):
        yield b.recv_from(100, timeout=0)
    assert (yield a.send_to("127.0.0.1", b_port, b"after")) == 5
    assert (yield b.recv_from(100, timeout=LONG)) == (b"after", "127.0.0.1", a_port)
    # timeout=0 takes a datagram that is already there
    assert (yield a.send_to("127.0.0.1", b_port, b"there")) == 5
    time.sleep(0.05)
    assert (yield b.recv_from(100, timeout=0)) == (b"there", "127.0.0.1", a_port)
    # a negative timeout waits forever: here for a datagram that a stdlib peer sends after 0.3 s
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as late:
        late.bind(("127.0.0.1", 0))
        timer = threading.Timer(0.3, late.sendto, (b"late", ("127.0.0.1", b_port)))
        timer.start()
        try:
            start = time.monotonic()
            received = yield b.recv_from(100, timeout=-1)
            assert time.monotonic() - start > 0.25
        finally:
            timer.join(LONG)
        assert received == (b"late", "127.0.0.1", late.getsockname()[1])


@scenario
def connected_udp(face: Face) -> Generator[Any, Any, None]:
    a, a_port = face.udp()
    b, b_port = face.udp()
    yield a.connect("127.0.0.1", b_port, timeout=LONG)
    yield b.connect("127.0.0.1", a_port, timeout=LONG)
    assert a.get_peer_addr() == ("127.0.0.1", b_port)
    yield a.send(b"abcdef")
    yield a.send("xyz")
    assert (yield b.recv(3, timeout=LONG)) == b"abc"  # one datagram, truncated to size
    assert (yield b.recv(10, timeout=LONG)) == b"xyz"  # the rest of "abcdef" is gone
    with pytest.raises(TimeoutError):
        yield b.recv(10, timeout=0.1)
    yield b.send(b"pong")
    assert (yield a.recv_from(10, timeout=LONG)) == (b"pong", "127.0.0.1", b_port)


@scenario
def connected_send_of_nothing_is_an_empty_datagram(face: Face) -> Generator[Any, Any, None]:
    # send(b"") on a datagram socket sends an empty datagram (Nim calls send(2) with length 0),
    # as send_to(..., b"") does; both faces alike.
    a, a_port = face.udp()
    b, b_port = face.udp()
    yield a.connect("127.0.0.1", b_port, timeout=LONG)
    yield a.send(b"")
    yield a.send(b"end")
    assert (yield b.recv_from(10, timeout=LONG)) == (b"", "127.0.0.1", a_port)
    assert (yield b.recv_from(10, timeout=LONG)) == (b"end", "127.0.0.1", a_port)


@scenario
def dial_udp(face: Face) -> Generator[Any, Any, None]:
    b, b_port = face.udp()
    a = yield face.mod.dial("127.0.0.1", b_port, socket.IPPROTO_UDP, timeout=LONG)
    face.opened.append(a)
    assert a.get_peer_addr() == ("127.0.0.1", b_port)
    yield a.send(b"dialled")
    assert (yield b.recv_from(100, timeout=LONG)) == (b"dialled", *a.get_local_addr())


@scenario
def broadcast_option(face: Face) -> Generator[Any, Any, None]:
    a, _ = face.udp()
    assert a.get_sock_opt(SOBool.BROADCAST) is False
    a.set_sock_opt(SOBool.BROADCAST, True)
    assert a.get_sock_opt(SOBool.BROADCAST) is True
    a.set_sock_opt(SOBool.BROADCAST, False)
    assert a.get_sock_opt(SOBool.BROADCAST) is False
    unbound = face.new_socket()
    unbound.set_sock_opt(SOBool.BROADCAST, True)  # before bind too
    assert unbound.get_sock_opt(SOBool.BROADCAST) is True
    yield None


@scenario
def ipv6_loopback(face: Face) -> Generator[Any, Any, None]:
    if not HAS_IPV6:
        pytest.skip("IPv6 loopback is not available")
    a, a_port = face.udp("::1", socket.AF_INET6)
    b, b_port = face.udp("::1", socket.AF_INET6)
    assert a.get_local_addr()[0] == "::1"
    for address in ("::1", duonet.ipv6_loopback(), parse_ip_address("0:0:0:0:0:0:0:1")):
        assert (yield a.send_to(address, b_port, b"six")) == 3
        assert (yield b.recv_from(100, timeout=LONG)) == (b"six", "::1", a_port)


@scenario
def ipv4_mapped_sender(face: Face) -> Generator[Any, Any, None]:
    if not HAS_IPV6:
        pytest.skip("IPv6 is not available")
    four, four_port = face.udp()
    dual = face.new_socket(socket.AF_INET6)
    try:
        dual.bind_addr(0, "::ffff:127.0.0.1")  # dual-stack (not IPV6_V6ONLY), loopback only
    except OSError as exc:
        pytest.skip(f"no dual-stack IPv6 socket here: {exc}")
    dual_port = dual.get_local_addr()[1]
    # an IPv4 sender shows as "127.0.0.1" on the IPv6 socket, not "::ffff:127.0.0.1"
    assert (yield four.send_to("127.0.0.1", dual_port, b"mapped")) == 6
    assert (yield dual.recv_from(100, timeout=LONG)) == (b"mapped", "127.0.0.1", four_port)
    # and the IPv6 socket can send to an IPv4 address
    assert (yield dual.send_to("127.0.0.1", four_port, b"back")) == 4
    assert (yield four.recv_from(100, timeout=LONG)) == (b"back", "127.0.0.1", dual_port)
    # and to a name with IPv4 addresses only (through the mapped form, as Nim resolves)
    infos = socket.getaddrinfo("localhost", four_port, type=socket.SOCK_DGRAM)
    if {info[0] for info in infos} == {socket.AF_INET}:
        assert (yield dual.send_to("localhost", four_port, b"name")) == 4
        assert (yield four.recv_from(100, timeout=LONG)) == (b"name", "127.0.0.1", dual_port)


@scenario
def datagram_read_as_a_line(face: Face) -> Generator[Any, Any, None]:
    # Nim's tsocketstreams: a datagram "NIM\n" read with recvLine gives "NIM".
    a, _ = face.udp()
    b, b_port = face.udp()
    assert (yield a.send_to("127.0.0.1", b_port, b"NIM\n")) == 4
    assert (yield b.recv_line(timeout=LONG)) == b"NIM"


@scenario
def closed_socket(face: Face) -> Generator[Any, Any, None]:
    a, _ = face.udp()
    yield a.close()
    with pytest.raises(duonet.SocketClosedError):
        yield a.recv_from(10, timeout=LONG)
    with pytest.raises(duonet.SocketClosedError):
        yield a.send_to("127.0.0.1", 9, b"x")


# -- the tests ----------------------------------------------------------------------------------

IDS = [func.__name__ for func in SCENARIOS]


# (not "func": anyio 4.10's test runner takes a keyword of that name itself)
@pytest.mark.parametrize("steps", SCENARIOS, ids=IDS)
async def test_udp_async(anyio_backend: str, steps: Scenario) -> None:
    await run_async(steps)


@pytest.mark.parametrize("func", SCENARIOS, ids=IDS)
def test_udp_blocking(portal_backend: str, func: Scenario) -> None:
    run_blocking(func)


@pytest.mark.parametrize("mod", [duonet, duonet.aio], ids=["duonet", "duonet.aio"])
def test_get_primary_ip_addr_of_loopback(mod: Any) -> None:
    assert mod.get_primary_ip_addr(mod.parse_ip_address("127.0.0.1")) == mod.ipv4_loopback()
