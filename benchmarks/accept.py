"""Scenario 4 — accept: the peer under test accepts (and closes) N waiting connections.

A separate stdlib *connector* process first opens N connections to a fresh listening socket and
keeps them open; they wait, fully established, in the listener's backlog. Then the timer starts,
the peer wraps the listener in its own API and accepts and closes all N. So the figure is the cost
of accepting, not the speed of the connecting process.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from functools import partial

import anyio
import anyio.abc

import duonet
from duonet import aio

from ._harness import (
    BACKENDS,
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


def _filled_listener(connector: ServerProcess, count: int) -> socket.socket:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((HOST, 0))
    listener.listen(count + 64)
    try:
        connector.command(f"CONNECT {listener.getsockname()[1]} {count}", "READY")
    except BaseException:
        listener.close()
        raise
    return listener


#: A peer: accept and close ``count`` connections waiting on the listening socket.
Serve = Callable[[socket.socket, int], Sample]


def _measure(connector: ServerProcess, count: int, serve: Serve) -> Sample:
    listener = _filled_listener(connector, count)
    try:
        return serve(listener, count)
    finally:
        listener.close()
        connector.command("CLOSE", "CLOSED")


def stdlib(listener: socket.socket, count: int) -> Sample:
    accept = listener.accept
    with Stopwatch() as sw:
        for _ in range(count):
            conn, _ = accept()
            conn.close()
    return sw.sample


def asyncio_server(listener: socket.socket, count: int) -> Sample:
    async def main() -> Sample:
        done = asyncio.Event()
        accepted = 0

        def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal accepted
            writer.close()
            accepted += 1
            if accepted == count:
                done.set()

        with Stopwatch() as sw:
            server = await asyncio.start_server(on_client, sock=listener)
            await done.wait()
        server.close()
        await server.wait_closed()
        return sw.sample

    return asyncio.run(main())


def anyio_listener(backend: str, listener: socket.socket, count: int) -> Sample:
    async def main() -> Sample:
        with Stopwatch() as sw:
            wrapped = await anyio.abc.SocketListener.from_socket(listener)
            accept = wrapped.accept
            for _ in range(count):
                stream = await accept()
                await stream.aclose()
        await wrapped.aclose()
        return sw.sample

    return anyio.run(main, backend=backend)


def duonet_blocking(portal: str, listener: socket.socket, count: int) -> Sample:
    use_portal(portal)
    with Stopwatch(duonet=True) as sw:
        server = duonet.Socket.from_socket(listener)
        accept = server.accept
        for _ in range(count):
            accept().close()
    server.close()
    return sw.sample


def duonet_aio(backend: str, listener: socket.socket, count: int) -> Sample:
    async def main() -> Sample:
        with Stopwatch() as sw:
            server = aio.AsyncSocket.from_socket(listener)
            accept = server.accept
            for _ in range(count):
                client = await accept()
                await client.close()
        await server.close()
        return sw.sample

    return anyio.run(main, backend=backend)


def run(cfg: Config) -> Table:
    count = cfg.size(full=2000, quick=500)
    with ServerProcess("connector") as connector:
        check(connector.port == 0, "the connector is no server")

        def peer(name: str, serve: Serve, target: Target | None = None) -> Peer:
            return Peer(name, partial(_measure, connector, count, serve), target)

        peers = [
            peer("stdlib accept", stdlib),
            peer("asyncio start_server", asyncio_server),
            *(
                peer(f"anyio SocketListener.accept ({b})", partial(anyio_listener, b))
                for b in BACKENDS
            ),
            peer(
                "duonet Socket.accept (uvloop portal)",
                partial(duonet_blocking, "uvloop"),
                Target(0.9, "≥ 0.9x stdlib"),  # (issue 20; the first release aimed at 0.8x)
            ),
            *(peer(f"duonet.aio accept ({b})", partial(duonet_aio, b)) for b in BACKENDS),
        ]
        rows, rounds = run_rounds(
            peers,
            cfg,
            "accept",
            rounds=cfg.n_rounds(full=5, quick=3),
            budget=cfg.time_budget(full=240, quick=10),
        )
    return Table(
        key="accept",
        title=f"4. accept — {count} connections accepted and closed",
        description="A stdlib connector process has opened the connections beforehand; the peer "
        "wraps the listening socket and accepts and closes them all (op = 1 connection).",
        ops=count,
        op="connection",
        reference="stdlib accept",
        rows=rows,
        rounds=rounds,
    )
