"""Scenario 6 — portal hop: the cost of one call from a plain thread into an event loop thread.

Two tables:

* **pure hop**: ``duonet._portal.call(noop)`` (duonet's private portal, called directly: the cost
  of the hop alone) against anyio's ``BlockingPortal.call(noop)`` on the same event loop;
* **1-byte ping-pong**: a blocking call that must really reach the core. An UNBUFFERED duonet
  socket sends 1 byte to a stdlib echo server process and ``recv(1)`` s the echo; the echo cannot
  be there yet when ``recv`` starts (the server only answers when asked), so each round trip is
  one hop (``send`` is served in the calling thread; hops/op shows the count). The anyio
  equivalent is a ``SocketStream`` driven through ``BlockingPortal.call`` (2 calls per round
  trip: ``send`` and ``receive``); the stdlib does it with no thread at all.
"""

from __future__ import annotations

import socket
from functools import partial
from typing import Any

import anyio
from anyio.from_thread import start_blocking_portal

import duonet
from duonet import _portal

from ._harness import (
    HOST,
    Config,
    Peer,
    Sample,
    ServerProcess,
    Stopwatch,
    Table,
    Target,
    check,
    run_rounds,
    use_portal,
)

LOOPS = ("asyncio", "uvloop", "trio")
WARMUP = 100


async def noop() -> None:
    pass


def _anyio_portal(loop: str) -> Any:
    if loop == "uvloop":
        return start_blocking_portal("asyncio", backend_options={"use_uvloop": True})
    return start_blocking_portal(loop)


def anyio_hop(loop: str, count: int) -> Sample:
    with _anyio_portal(loop) as portal:
        call = portal.call
        for _ in range(WARMUP):
            call(noop)
        with Stopwatch() as sw:
            for _ in range(count):
                call(noop)
    return sw.sample


def duonet_hop(loop: str, count: int) -> Sample:
    use_portal(loop)
    call = _portal.call
    for _ in range(WARMUP):
        call(noop)
    with Stopwatch(duonet=True) as sw:  # duonet=True: --profile sees the portal thread too
        for _ in range(count):
            call(noop)
    sw.sample.hops = count  # one per call, by construction
    return sw.sample


def stdlib_byte(port: int, count: int) -> Sample:
    with socket.create_connection((HOST, port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sendall, recv = sock.sendall, sock.recv
        for _ in range(WARMUP):
            sendall(b"x")
            recv(1)
        with Stopwatch() as sw:
            for _ in range(count):
                sendall(b"x")
                last = recv(1)
    check(last == b"x", f"wrong echo {last!r}")
    return sw.sample


def anyio_portal_byte(loop: str, port: int, count: int) -> Sample:
    with _anyio_portal(loop) as portal:
        stream = portal.call(anyio.connect_tcp, HOST, port)
        try:
            call, send, receive = portal.call, stream.send, stream.receive
            for _ in range(WARMUP):
                call(send, b"x")
                call(receive, 1)
            with Stopwatch() as sw:
                for _ in range(count):
                    call(send, b"x")
                    last = call(receive, 1)
        finally:
            portal.call(stream.aclose)
    check(last == b"x", f"wrong echo {last!r}")
    return sw.sample


def duonet_byte(loop: str, port: int, count: int) -> Sample:
    use_portal(loop)
    with duonet.dial(HOST, port, buffered=False) as sock:
        sock.set_sock_opt(duonet.SOBool.NO_DELAY, True)
        send, recv = sock.send, sock.recv
        for _ in range(WARMUP):
            send(b"x")
            recv(1)
        with Stopwatch(duonet=True) as sw:
            for _ in range(count):
                send(b"x")
                last = recv(1)
    check(last == b"x", f"wrong echo {last!r}")
    return sw.sample


def run(cfg: Config) -> list[Table]:
    count = cfg.size(full=5000, quick=1000)
    rounds = cfg.n_rounds(full=7, quick=5)
    budget = cfg.time_budget(full=240, quick=10)

    def anyio_name(loop: str) -> str:
        return f"anyio BlockingPortal.call ({loop})"

    hop_peers = [
        *(Peer(anyio_name(loop), partial(anyio_hop, loop, count)) for loop in LOOPS),
        *(
            Peer(
                f"duonet _portal.call ({loop})",
                partial(duonet_hop, loop, count),
                Target(1 / 0.3, "time ≤ 0.3x anyio (same loop)", anyio_name(loop)),
            )
            for loop in LOOPS
        ),
    ]
    hop_rows, hop_rounds = run_rounds(hop_peers, cfg, "portal", rounds=rounds, budget=budget)
    hops = Table(
        key="portal",
        title=f"6a. portal hop — {count} calls of an async no-op from a plain thread",
        description="duonet's private portal (`duonet._portal.call`, called directly: the "
        "pure hop, no socket) against anyio's `BlockingPortal.call` from "
        "`start_blocking_portal` on the same loop (op = 1 call). The speed column is against "
        "anyio on asyncio; the target compares each loop with anyio on the same loop.",
        ops=count,
        op="call",
        reference=anyio_name("asyncio"),
        rows=hop_rows,
        rounds=hop_rounds,
    )
    with ServerProcess("echo") as server:
        port = server.port
        byte_peers = [
            Peer("stdlib sendall + recv(1)", partial(stdlib_byte, port, count)),
            *(
                Peer(
                    f"anyio portal: call(send) + call(receive) ({loop})",
                    partial(anyio_portal_byte, loop, port, count),
                )
                for loop in LOOPS
            ),
            *(
                Peer(
                    f"duonet unbuffered send + recv(1) ({loop} portal)",
                    partial(duonet_byte, loop, port, count),
                    Target(
                        1 / 0.3,
                        "time ≤ 0.3x anyio portal (same loop)",
                        f"anyio portal: call(send) + call(receive) ({loop})",
                    ),
                )
                for loop in LOOPS
            ),
        ]
        byte_rows, byte_rounds = run_rounds(
            byte_peers, cfg, "portal-1B", rounds=rounds, budget=budget
        )
    pingpong = Table(
        key="portal-1B",
        title=f"6b. portal hop — {count} 1-byte round trips (each one a real hop)",
        description="1 byte to a stdlib echo server process, `recv(1)` of the echo: duonet's "
        "unbuffered blocking socket (send in the caller thread, one hop for recv) against an "
        "anyio `SocketStream` driven through `BlockingPortal.call` (two calls) and the plain "
        "stdlib socket (op = 1 round trip).",
        ops=count,
        op="round trip",
        reference="stdlib sendall + recv(1)",
        rows=byte_rows,
        rounds=byte_rounds,
    )
    return [hops, pingpong]
