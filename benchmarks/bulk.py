"""Scenario 2 — bulk: a stdlib server sends N MiB; the peer reads them in 64 KiB reads."""

from __future__ import annotations

import asyncio
import socket
from functools import partial

import anyio

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

CHUNK = 1 << 16


def _check_total(got: int, total: int) -> None:
    check(got == total, f"received {got} bytes, expected {total}")


def stdlib(port: int, total: int) -> Sample:
    view = memoryview(bytearray(CHUNK))
    with socket.create_connection((HOST, port)) as sock:
        recv_into = sock.recv_into
        got = 0
        with Stopwatch() as sw:
            while got < total:
                n = recv_into(view)
                if not n:
                    break
                got += n
    _check_total(got, total)
    return sw.sample


def asyncio_streams(port: int, total: int) -> Sample:
    async def main() -> Sample:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            read = reader.read
            got = 0
            with Stopwatch() as sw:
                while got < total:
                    data = await read(CHUNK)
                    if not data:
                        break
                    got += len(data)
        finally:
            writer.close()
            await writer.wait_closed()
        _check_total(got, total)
        return sw.sample

    return asyncio.run(main())


def anyio_stream(backend: str, port: int, total: int) -> Sample:
    async def main() -> Sample:
        async with await anyio.connect_tcp(HOST, port) as stream:
            receive = stream.receive
            got = 0
            with Stopwatch() as sw:
                try:
                    while got < total:
                        got += len(await receive(CHUNK))
                except anyio.EndOfStream:
                    pass
        _check_total(got, total)
        return sw.sample

    return anyio.run(main, backend=backend)


def duonet_blocking(port: int, total: int, buffered: bool, portal: str = "uvloop") -> Sample:
    use_portal(portal)
    view = memoryview(bytearray(CHUNK))
    with duonet.dial(HOST, port, buffered=buffered) as sock:
        recv_into = sock.recv_into
        got = 0
        with Stopwatch(duonet=True) as sw:
            while got < total:
                n = recv_into(view)
                if not n:
                    break
                got += n
    _check_total(got, total)
    return sw.sample


def duonet_aio(backend: str, port: int, total: int, buffered: bool) -> Sample:
    async def main() -> Sample:
        view = memoryview(bytearray(CHUNK))
        async with await aio.dial(HOST, port, buffered=buffered) as sock:
            recv_into = sock.recv_into
            got = 0
            with Stopwatch() as sw:
                while got < total:
                    n = await recv_into(view)
                    if not n:
                        break
                    got += n
        _check_total(got, total)
        return sw.sample

    return anyio.run(main, backend=backend)


def run(cfg: Config) -> Table:
    mib = cfg.size(full=256, quick=48)
    total = mib << 20
    with ServerProcess("bulk", total) as server:
        port = server.port
        peers = [
            Peer("stdlib recv_into", partial(stdlib, port, total)),
            Peer("asyncio StreamReader.read", partial(asyncio_streams, port, total)),
            *(
                Peer(f"anyio SocketStream.receive ({b})", partial(anyio_stream, b, port, total))
                for b in BACKENDS
            ),
            *(
                Peer(
                    f"duonet Socket.recv_into, {kind} (uvloop portal)",
                    partial(duonet_blocking, port, total, buffered),
                    Target(0.9, "≥ 0.9x stdlib"),
                )
                for kind, buffered in (("buffered", True), ("unbuffered", False))
            ),
            *(
                Peer(
                    f"duonet.aio recv_into, {kind} ({b})",
                    partial(duonet_aio, b, port, total, buffered),
                    Target(1.0, f"≥ anyio ({b})", f"anyio SocketStream.receive ({b})"),
                )
                for b in BACKENDS
                for kind, buffered in (("buffered", True), ("unbuffered", False))
            ),
        ]
        rows, rounds = run_rounds(
            peers,
            cfg,
            "bulk",
            rounds=cfg.n_rounds(full=5, quick=3),
            budget=cfg.time_budget(full=300, quick=15),
        )
    return Table(
        key="bulk",
        title=f"2. bulk — {mib} MiB received in 64 KiB reads",
        description="A stdlib server process sends as fast as it can; the peer reads with a "
        "64 KiB buffer (op = 64 KiB received; a buffered duonet socket fills all 64 KiB per "
        "call, the others return what one read gives).",
        ops=total // CHUNK,
        op="64 KiB",
        reference="stdlib recv_into",
        rows=rows,
        rounds=rounds,
    )
