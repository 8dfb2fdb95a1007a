"""``connect`` tries every resolved address, each on a socket that can still connect.

A socket whose ``connect`` failed cannot simply try the next address (Linux answers with
``ECONNABORTED``, BSDs with ``EINVAL``), so the core renews it: same descriptor number, same
options, same bound address. The host name ``multi.test`` is made to resolve, in order, to
loopback addresses where nothing listens (127.0.0.2, 127.0.0.3) and then to the live listener on
127.0.0.1, always on the listener's port: every connection is real, only the resolver's answer
is chosen by the test.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import duonet
from duonet import SOBool, aio
from scenarios import closed_port

HOST = "multi.test"
TIMEOUT = 10.0


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        yield srv


@pytest.fixture
def resolves_to(monkeypatch: pytest.MonkeyPatch) -> Callable[[list[str]], None]:
    """Make ``multi.test`` resolve to these IPv4 addresses, in this order."""
    real = socket.getaddrinfo

    def install(hosts: list[str]) -> None:
        def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
            if host != HOST:
                return real(host, port, *args, **kwargs)
            return [
                (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, int(port)))
                for ip in hosts
            ]

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    return install


def _accepted_from(srv: socket.socket) -> tuple[str, int]:
    srv.settimeout(TIMEOUT)
    conn, address = srv.accept()
    conn.close()
    return address  # type: ignore[no-any-return]


DEAD = ["127.0.0.2", "127.0.0.3"]


@pytest.mark.parametrize("dead", [1, 2], ids=["one-dead", "two-dead"])
async def test_aio_connect_tries_the_next_address(
    listener: socket.socket, resolves_to: Callable[[list[str]], None], dead: int
) -> None:
    resolves_to([*DEAD[:dead], "127.0.0.1"])
    port = listener.getsockname()[1]
    async with aio.new_async_socket() as s:
        fd = s.get_fd()
        s.set_sock_opt(SOBool.NO_DELAY, True)
        s.set_sock_opt(SOBool.KEEP_ALIVE, True)
        s.set_sock_opt(SOBool.REUSE_ADDR, True)
        await s.connect(HOST, port, timeout=TIMEOUT)
        assert s.get_peer_addr() == ("127.0.0.1", port)
        assert s.get_fd() == fd  # a descriptor the caller already holds stays valid
        assert s.get_sock_opt(SOBool.NO_DELAY)
        assert s.get_sock_opt(SOBool.KEEP_ALIVE)
        assert s.get_sock_opt(SOBool.REUSE_ADDR)
        assert not os.get_inheritable(fd)
        assert _accepted_from(listener)[1] == s.get_local_addr()[1]
        await s.send(b"works\n", timeout=TIMEOUT)


async def test_aio_connect_keeps_the_bound_address(
    listener: socket.socket, resolves_to: Callable[[list[str]], None]
) -> None:
    resolves_to(["127.0.0.2", "127.0.0.1"])
    port = listener.getsockname()[1]
    local = closed_port()
    async with aio.new_async_socket() as s:
        s.set_sock_opt(SOBool.REUSE_ADDR, True)
        s.bind_addr(local, "127.0.0.1")
        await s.connect(HOST, port, timeout=TIMEOUT)
        assert s.get_local_addr() == ("127.0.0.1", local)
        assert _accepted_from(listener) == ("127.0.0.1", local)


async def test_aio_connect_every_address_refused(
    resolves_to: Callable[[list[str]], None],
) -> None:
    resolves_to(DEAD)
    async with aio.new_async_socket() as s:
        with pytest.raises(ConnectionRefusedError, match=rf"{HOST}:\d+"):
            await s.connect(HOST, closed_port(), timeout=TIMEOUT)


def test_blocking_connect_tries_the_next_address(
    portal_backend: str, listener: socket.socket, resolves_to: Callable[[list[str]], None]
) -> None:
    resolves_to(["127.0.0.2", "127.0.0.1"])
    port = listener.getsockname()[1]
    with duonet.new_socket(inheritable=True) as s:
        fd = s.get_fd()
        s.set_sock_opt(SOBool.NO_DELAY, True)
        s.connect(HOST, port, timeout=TIMEOUT)
        assert s.get_peer_addr() == ("127.0.0.1", port)
        assert s.get_fd() == fd
        assert s.get_sock_opt(SOBool.NO_DELAY)
        assert os.get_inheritable(fd)
        assert _accepted_from(listener)[1] == s.get_local_addr()[1]


def test_resolving_a_name_leaves_no_thread(portal_backend: str, listener: socket.socket) -> None:
    """SPEC: a blocking program gains at most one thread from duonet (the portal)."""
    port = listener.getsockname()[1]
    with duonet.dial("localhost", port, timeout=TIMEOUT):
        pass
    with duonet.new_socket() as s:
        s.connect("localhost", port, timeout=TIMEOUT)
    deadline = time.monotonic() + TIMEOUT
    while True:
        extra = [t.name for t in threading.enumerate() if t.name.startswith(("duonet", "AnyIO"))]
        if extra == ["duonet-portal"] or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert extra == ["duonet-portal"]


# -- a connect that reaches the connecting socket itself ----------------------------------------


async def test_aio_connect_to_its_own_port_is_refused(anyio_backend: str) -> None:
    """Connecting to a local port where nothing listens can "succeed" on Linux when the socket's
    own port is that port (TCP simultaneous open): duonet reports the refusal it is."""
    async with aio.new_async_socket() as s:
        s.bind_addr(0, "127.0.0.1")
        port = s.get_local_addr()[1]
        with pytest.raises(ConnectionRefusedError, match="connecting socket itself"):
            await s.connect("127.0.0.1", port, timeout=TIMEOUT)


def test_blocking_connect_to_its_own_port_is_refused(portal_backend: str) -> None:
    with duonet.new_socket() as s:
        s.bind_addr(0, "127.0.0.1")
        port = s.get_local_addr()[1]
        with pytest.raises(ConnectionRefusedError, match="connecting socket itself"):
            s.connect("127.0.0.1", port, timeout=TIMEOUT)
        with pytest.raises(OSError, match="not connected"):
            s.send(b"x")  # refused: the socket is not a connected one
