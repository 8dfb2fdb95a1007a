"""Scenario 1 — lines: N lines of 40 bytes from a stdlib server, read one at a time."""

from __future__ import annotations

import asyncio
import socket
from functools import partial

import anyio
from anyio.streams.buffered import BufferedByteReceiveStream

import duonet
from duonet import aio

from ._harness import BACKENDS as B
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
from ._server import line


def _check_last(last: bytes, count: int) -> None:
    check(last.rstrip(b"\r\n") == line(count - 1)[:-1], f"wrong last line {last[:50]!r}")


def stdlib(port: int, count: int) -> Sample:
    with socket.create_connection((HOST, port)) as sock, sock.makefile("rb") as file:
        readline = file.readline
        with Stopwatch() as sw:
            for _ in range(count):
                last = readline()
    _check_last(last, count)
    return sw.sample


def asyncio_streams(port: int, count: int) -> Sample:
    async def main() -> Sample:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            readline = reader.readline
            with Stopwatch() as sw:
                for _ in range(count):
                    last = await readline()
        finally:
            writer.close()
            await writer.wait_closed()
        _check_last(last, count)
        return sw.sample

    return asyncio.run(main())


def anyio_buffered(backend: str, port: int, count: int) -> Sample:
    async def main() -> Sample:
        async with await anyio.connect_tcp(HOST, port) as stream:
            receive_until = BufferedByteReceiveStream(stream).receive_until
            with Stopwatch() as sw:
                for _ in range(count):
                    last = await receive_until(b"\n", 65536)
        _check_last(last, count)
        return sw.sample

    return anyio.run(main, backend=backend)


def duonet_blocking(port: int, count: int, portal: str = "uvloop") -> Sample:
    use_portal(portal)
    with duonet.dial(HOST, port) as sock:
        recv_line = sock.recv_line
        with Stopwatch(duonet=True) as sw:
            for _ in range(count):
                last = recv_line()
    _check_last(last, count)
    return sw.sample


def duonet_blocking_iter(port: int, count: int, portal: str = "uvloop") -> Sample:
    use_portal(portal)
    got = 0
    with duonet.dial(HOST, port) as sock, Stopwatch(duonet=True) as sw:
        for last in sock:  # noqa: B007 (the last line is checked after the loop)
            got += 1
            if got == count:
                break
    _check_last(last, count)
    return sw.sample


def duonet_aio_iter(backend: str, port: int, count: int) -> Sample:
    async def main() -> Sample:
        got = 0
        async with await aio.dial(HOST, port) as sock:
            with Stopwatch() as sw:
                async for last in sock:  # noqa: B007 (checked after the loop)
                    got += 1
                    if got == count:
                        break
        _check_last(last, count)
        return sw.sample

    return anyio.run(main, backend=backend)


def duonet_aio(backend: str, port: int, count: int) -> Sample:
    async def main() -> Sample:
        async with await aio.dial(HOST, port) as sock:
            recv_line = sock.recv_line
            with Stopwatch() as sw:
                for _ in range(count):
                    last = await recv_line()
        _check_last(last, count)
        return sw.sample

    return anyio.run(main, backend=backend)


def run(cfg: Config) -> Table:
    count = cfg.size(full=200_000, quick=40_000)
    with ServerProcess("lines", count) as server:
        port = server.port
        vs_anyio = {b: Target(1.0, f"≥ anyio ({b})", f"anyio receive_until ({b})") for b in B}
        peers = [
            Peer("stdlib makefile().readline", partial(stdlib, port, count)),
            Peer("asyncio StreamReader.readline", partial(asyncio_streams, port, count)),
            *(
                Peer(f"anyio receive_until ({b})", partial(anyio_buffered, b, port, count))
                for b in B
            ),
            Peer(
                "duonet Socket.recv_line (uvloop portal)",
                partial(duonet_blocking, port, count),
                Target(0.8, "≥ 0.8x stdlib"),  # (issue 20; the first release aimed at 0.5x)
            ),
            *(
                Peer(f"duonet.aio recv_line ({b})", partial(duonet_aio, b, port, count), t)
                for b, t in vs_anyio.items()
            ),
            # Iterating must cost no more than the recv_line loop it replaces (issue 18).
            Peer(
                "duonet for line in Socket (uvloop portal)",
                partial(duonet_blocking_iter, port, count),
                Target(0.95, "≥ recv_line loop", versus="duonet Socket.recv_line (uvloop portal)"),
            ),
            *(
                Peer(
                    f"duonet.aio async for line ({b})",
                    partial(duonet_aio_iter, b, port, count),
                    Target(0.95, "≥ recv_line loop", versus=f"duonet.aio recv_line ({b})"),
                )
                for b in B
            ),
        ]
        rows, rounds = run_rounds(
            peers,
            cfg,
            "lines",
            rounds=cfg.n_rounds(full=5, quick=3),
            budget=cfg.time_budget(full=240, quick=15),
        )
    return Table(
        key="lines",
        title=f"1. lines — {count} lines of 40 bytes, one read call per line",
        description="A stdlib server process sends the lines at once; the peer reads them one "
        "by one (op = 1 line).",
        ops=count,
        op="line",
        reference="stdlib makefile().readline",
        rows=rows,
        rounds=rounds,
    )
