"""Scenario 3 — ping-pong: send a 32-byte line to a stdlib echo server, read it back; N times."""

from __future__ import annotations

import asyncio
import socket
from functools import partial

import anyio
from anyio.streams.buffered import BufferedByteReceiveStream

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

MESSAGE = b"x" * 31 + b"\n"
WARMUP = 50
PORTALS = ("uvloop", "asyncio", "trio")


def _check_echo(last: bytes) -> None:
    check(last.rstrip(b"\n") == MESSAGE[:-1], f"wrong echo {last!r}")


def stdlib(port: int, count: int) -> Sample:
    with socket.create_connection((HOST, port)) as sock, sock.makefile("rb") as file:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sendall, readline = sock.sendall, file.readline
        for _ in range(WARMUP):
            sendall(MESSAGE)
            readline()
        with Stopwatch() as sw:
            for _ in range(count):
                sendall(MESSAGE)
                last = readline()
    _check_echo(last)
    return sw.sample


def asyncio_streams(port: int, count: int) -> Sample:
    async def main() -> Sample:
        reader, writer = await asyncio.open_connection(HOST, port)  # TCP_NODELAY by default
        try:
            write, drain, readline = writer.write, writer.drain, reader.readline
            for _ in range(WARMUP):
                write(MESSAGE)
                await drain()
                await readline()
            with Stopwatch() as sw:
                for _ in range(count):
                    write(MESSAGE)
                    await drain()
                    last = await readline()
        finally:
            writer.close()
            await writer.wait_closed()
        _check_echo(last)
        return sw.sample

    return asyncio.run(main())


def anyio_buffered(backend: str, port: int, count: int) -> Sample:
    async def main() -> Sample:
        async with await anyio.connect_tcp(HOST, port) as stream:  # TCP_NODELAY set by anyio
            send = stream.send
            receive_until = BufferedByteReceiveStream(stream).receive_until
            for _ in range(WARMUP):
                await send(MESSAGE)
                await receive_until(b"\n", 1024)
            with Stopwatch() as sw:
                for _ in range(count):
                    await send(MESSAGE)
                    last = await receive_until(b"\n", 1024)
        _check_echo(last)
        return sw.sample

    return anyio.run(main, backend=backend)


def duonet_blocking(port: int, count: int, portal: str) -> Sample:
    use_portal(portal)
    with duonet.dial(HOST, port) as sock:
        sock.set_sock_opt(duonet.SOBool.NO_DELAY, True)
        send, recv_line = sock.send, sock.recv_line
        for _ in range(WARMUP):
            send(MESSAGE)
            recv_line()
        with Stopwatch(duonet=True) as sw:
            for _ in range(count):
                send(MESSAGE)
                last = recv_line()
    _check_echo(last)
    return sw.sample


def duonet_aio(backend: str, port: int, count: int) -> Sample:
    async def main() -> Sample:
        async with await aio.dial(HOST, port) as sock:
            sock.set_sock_opt(aio.SOBool.NO_DELAY, True)
            send, recv_line = sock.send, sock.recv_line
            for _ in range(WARMUP):
                await send(MESSAGE)
                await recv_line()
            with Stopwatch() as sw:
                for _ in range(count):
                    await send(MESSAGE)
                    last = await recv_line()
        _check_echo(last)
        return sw.sample

    return anyio.run(main, backend=backend)


def run(cfg: Config) -> Table:
    count = cfg.size(full=5000, quick=800)
    with ServerProcess("echo") as server:
        port = server.port
        peers = [
            Peer("stdlib sendall + makefile().readline", partial(stdlib, port, count)),
            Peer("asyncio write/drain + readline", partial(asyncio_streams, port, count)),
            *(
                Peer(f"anyio send + receive_until ({b})", partial(anyio_buffered, b, port, count))
                for b in BACKENDS
            ),
            *(
                Peer(
                    f"duonet send + recv_line ({p} portal)",
                    partial(duonet_blocking, port, count, p),
                    Target(0.5, "≥ 0.5x stdlib (within 2x)"),
                )
                for p in PORTALS
            ),
            *(
                Peer(
                    f"duonet.aio send + recv_line ({b})",
                    partial(duonet_aio, b, port, count),
                    Target(1.0, f"≥ anyio ({b})", f"anyio send + receive_until ({b})"),
                )
                for b in BACKENDS
            ),
        ]
        rows, rounds = run_rounds(
            peers,
            cfg,
            "pingpong",
            rounds=cfg.n_rounds(full=7, quick=5),
            budget=cfg.time_budget(full=300, quick=15),
        )
    return Table(
        key="pingpong",
        title=f"3. ping-pong — {count} round trips of a 32-byte line",
        description="Send one line to a stdlib echo server process, read the echoed line "
        "(op = 1 round trip; TCP_NODELAY everywhere).",
        ops=count,
        op="round trip",
        reference="stdlib sendall + makefile().readline",
        rows=rows,
        rounds=rounds,
    )
