"""Scenario 9 — large values: a header line, then one exact read of 1 MiB.

The stdlib ``resp`` server process, in large-value mode, answers each ``GET <i>`` with
``$1048576\\r\\n`` and a 1 MiB value (the key's number in 8 digits, then a fixed pseudo-random
block). The client sends one request at a time and reads the header with a line read and the
value with one exact read: into a new ``bytes`` (``recv``) or into a preallocated buffer
(``recv_into``). Each value's length and key are checked; the last value's SHA-256 after the run.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
from functools import partial
from typing import Any

import anyio
from anyio.streams.buffered import BufferedByteReceiveStream

import duonet
from duonet import aio

from ._harness import (
    AIO_BACKENDS,
    HOST,
    PORTALS,
    Config,
    Peer,
    Sample,
    ServerProcess,
    Stopwatch,
    Table,
    Target,
    check,
    run_async,
    run_rounds,
    use_portal,
)
from ._server import value
from .kv import aio_peers, requests

SIZE = 1 << 20
WARMUP = 2


def verify(keys: list[bytes], last: bytes | bytearray, count: int) -> None:
    check(len(keys) == count, f"{len(keys)} values instead of {count}")
    check(keys == [b"%08d" % i for i in range(count)], "values out of order")
    want = hashlib.sha256(value(count - 1, SIZE)).digest()
    check(hashlib.sha256(last).digest() == want, "wrong value bytes")


def stdlib(port: int, count: int, into: bool, srv: ServerProcess) -> Sample:
    writes = requests(count, 1)
    target = bytearray(SIZE)
    view = memoryview(target)
    with socket.create_connection((HOST, port)) as sock, sock.makefile("rb") as file:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sendall, readline, read, readinto = sock.sendall, file.readline, file.read, file.readinto
        for data in requests(WARMUP, 1):
            sendall(data)
            read(int(readline()[1:]))
        keys: list[bytes] = []
        data = b""
        with Stopwatch(server=srv, faults_per=count) as sw:
            for request in writes:
                sendall(request)
                size = int(readline()[1:])
                if into:
                    check(readinto(view[:size]) == size, "short value")
                    keys.append(bytes(view[:8]))
                else:
                    data = read(size)
                    check(len(data) == size, "short value")
                    keys.append(data[:8])
    verify(keys, target if into else data, count)
    return sw.sample


def asyncio_streams(backend: str, port: int, count: int, srv: ServerProcess) -> Sample:
    writes = requests(count, 1)

    async def main() -> Sample:
        # The default 64 KiB limit only bounds lines; readexactly() reads any size.
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            write, drain = writer.write, writer.drain
            readline, readexactly = reader.readline, reader.readexactly
            for data in requests(WARMUP, 1):
                write(data)
                await drain()
                await readexactly(int((await readline())[1:]))
            keys: list[bytes] = []
            data = b""
            with Stopwatch(server=srv, faults_per=count) as sw:
                for request in writes:
                    write(request)
                    await drain()
                    data = await readexactly(int((await readline())[1:]))
                    keys.append(data[:8])
        finally:
            writer.close()
            await writer.wait_closed()
        verify(keys, data, count)
        return sw.sample

    result: Sample = run_async(main, backend)
    return result


def anyio_buffered(backend: str, port: int, count: int, srv: ServerProcess) -> Sample:
    writes = requests(count, 1)

    async def main() -> Sample:
        async with await anyio.connect_tcp(HOST, port) as stream:
            buffered = BufferedByteReceiveStream(stream)
            send = stream.send
            receive_until, receive_exactly = buffered.receive_until, buffered.receive_exactly
            for data in requests(WARMUP, 1):
                await send(data)
                await receive_exactly(int((await receive_until(b"\r\n", 65536))[1:]))
            keys: list[bytes] = []
            data = b""
            with Stopwatch(server=srv, faults_per=count) as sw:
                for request in writes:
                    await send(request)
                    data = await receive_exactly(int((await receive_until(b"\r\n", 65536))[1:]))
                    keys.append(data[:8])
        verify(keys, data, count)
        return sw.sample

    result: Sample = run_async(main, backend)
    return result


def duonet_blocking(port: int, count: int, into: bool, srv: ServerProcess, portal: str) -> Sample:
    writes = requests(count, 1)
    target = bytearray(SIZE)
    view = memoryview(target)
    use_portal(portal)
    with duonet.dial(HOST, port) as sock:
        sock.set_sock_opt(duonet.SOBool.NO_DELAY, True)
        send, recv_line, recv, recv_into = sock.send, sock.recv_line, sock.recv, sock.recv_into
        for data in requests(WARMUP, 1):
            send(data)
            recv(int(recv_line()[1:]))
        keys: list[bytes] = []
        data = b""
        with Stopwatch(duonet=True, server=srv, faults_per=count) as sw:
            for request in writes:
                send(request)
                size = int(recv_line()[1:])
                if into:
                    check(recv_into(target, size) == size, "short value")
                    keys.append(bytes(view[:8]))
                else:
                    data = recv(size)
                    check(len(data) == size, "short value")
                    keys.append(data[:8])
    verify(keys, target if into else data, count)
    return sw.sample


def duonet_aio(backend: str, port: int, count: int, into: bool, srv: ServerProcess) -> Sample:
    writes = requests(count, 1)
    target = bytearray(SIZE)
    view = memoryview(target)

    async def main() -> Sample:
        async with await aio.dial(HOST, port) as sock:
            sock.set_sock_opt(duonet.SOBool.NO_DELAY, True)
            send, recv_line, recv, recv_into = sock.send, sock.recv_line, sock.recv, sock.recv_into
            for data in requests(WARMUP, 1):
                await send(data)
                await recv(int((await recv_line())[1:]))
            keys: list[bytes] = []
            data = b""
            with Stopwatch(server=srv, faults_per=count) as sw:
                for request in writes:
                    await send(request)
                    size = int((await recv_line())[1:])
                    if into:
                        check(await recv_into(target, size) == size, "short value")
                        keys.append(bytes(view[:8]))
                    else:
                        data = await recv(size)
                        check(len(data) == size, "short value")
                        keys.append(data[:8])
        verify(keys, target if into else data, count)
        return sw.sample

    result: Sample = run_async(main, backend)
    return result


def run(cfg: Config) -> Table:
    count = cfg.size(full=300, quick=100)
    with ServerProcess("resp", SIZE) as server:
        args: tuple[Any, ...] = (server.port, count)
        std_recv = "stdlib makefile(): readline + read"
        std_into = "stdlib makefile(): readline + readinto"
        peers = [
            Peer(std_recv, partial(stdlib, *args, False, server)),
            Peer(std_into, partial(stdlib, *args, True, server)),
            *aio_peers(
                lambda b: partial(asyncio_streams, b, *args, server),
                lambda b: partial(anyio_buffered, b, *args, server),
                lambda b: partial(duonet_aio, b, *args, False, server),
                streams_name="asyncio readline + readexactly",
                anyio_name="anyio receive_until + receive_exactly",
                duonet_name="duonet.aio recv_line + recv",
            ),
            *(
                Peer(
                    f"duonet.aio recv_line + recv_into ({b})",
                    partial(duonet_aio, b, *args, True, server),
                )
                for b in AIO_BACKENDS
            ),
            Peer(
                f"duonet Socket recv_line + recv ({PORTALS[0]} portal)",
                partial(duonet_blocking, *args, False, server, PORTALS[0]),
                Target(0.9, "≥ 0.9x stdlib read", std_recv),
            ),
            Peer(
                f"duonet Socket recv_line + recv_into ({PORTALS[0]} portal)",
                partial(duonet_blocking, *args, True, server, PORTALS[0]),
                Target(0.9, "≥ 0.9x stdlib readinto", std_into),
            ),
        ]
        rows, rounds = run_rounds(
            peers,
            cfg,
            "values",
            rounds=cfg.n_rounds(full=7, quick=3),
            budget=cfg.time_budget(full=240, quick=25),
        )
    return Table(
        key="values",
        title=f"9. 1 MiB values — {count} requests, header line + exact 1 MiB read",
        description="One `GET <i>` request at a time; the reply is a `$1048576` header line and "
        "a 1 MiB value, read with one line read and one exact read (op = 1 value). Keys and "
        "lengths checked per value, the last value by SHA-256.",
        ops=count,
        op="value",
        reference=std_recv,
        rows=rows,
        rounds=rounds,
    )
