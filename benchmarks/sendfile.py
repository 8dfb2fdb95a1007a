"""Scenario — send_file: a file of N MiB sent to a stdlib sink process, zero copy where possible.

The sink counts the bytes and their adler32 and answers both once it sees the end of the stream,
so every run is verified. The file is written once, before the rounds, and stays in the page
cache: what is measured is the sending, not the disk.
"""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import zlib
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


def _verify(answer: bytes, total: int, checksum: int) -> None:
    got, check_value = (int(x) for x in answer.split())
    check(got == total, f"the sink received {got} bytes, expected {total}")
    check(check_value == checksum, "the sink's adler32 differs: bytes were changed or reordered")


def _answer(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(64)
        if not chunk:
            break
        data += chunk
    return data


def stdlib(port: int, path: str, total: int, checksum: int) -> Sample:
    with socket.create_connection((HOST, port)) as sock, open(path, "rb") as f, Stopwatch() as sw:
        sent = sock.sendfile(f)
        sock.shutdown(socket.SHUT_WR)
        answer = _answer(sock)
    check(sent == total, f"sendfile sent {sent} bytes, expected {total}")
    _verify(answer, total, checksum)
    return sw.sample


def asyncio_loop(port: int, path: str, total: int, checksum: int) -> Sample:
    async def main() -> Sample:
        reader, writer = await asyncio.open_connection(HOST, port)
        loop = asyncio.get_running_loop()
        try:
            with open(path, "rb") as f, Stopwatch() as sw:
                sent = await loop.sendfile(writer.transport, f)
                writer.write_eof()
                answer = await reader.readline()
        finally:
            writer.close()
            await writer.wait_closed()
        check(sent == total, f"loop.sendfile sent {sent} bytes, expected {total}")
        _verify(answer, total, checksum)
        return sw.sample

    return asyncio.run(main())


def duonet_blocking(port: int, path: str, total: int, checksum: int, portal: str) -> Sample:
    use_portal(portal)
    with duonet.dial(HOST, port) as sock, open(path, "rb") as f, Stopwatch(duonet=True) as sw:
        sent = sock.send_file(f)
        sock.send_eof()
        answer = sock.recv_line()
    check(sent == total, f"send_file sent {sent} bytes, expected {total}")
    _verify(answer, total, checksum)
    return sw.sample


def duonet_aio(backend: str, port: int, path: str, total: int, checksum: int) -> Sample:
    async def main() -> Sample:
        async with await aio.dial(HOST, port) as sock:
            with open(path, "rb") as f, Stopwatch() as sw:
                sent = await sock.send_file(f)
                await sock.send_eof()
                answer = await sock.recv_line()
        check(sent == total, f"send_file sent {sent} bytes, expected {total}")
        _verify(answer, total, checksum)
        return sw.sample

    return anyio.run(main, backend=backend)


def _make_file(size: int) -> tuple[str, int]:
    fd, path = tempfile.mkstemp(prefix="duonet-bench-", suffix=".bin")
    checksum = 1
    block = os.urandom(1 << 20)
    with os.fdopen(fd, "wb") as f:
        for _ in range(size >> 20):
            f.write(block)
            checksum = zlib.adler32(block, checksum)
    return path, checksum


def run(cfg: Config) -> Table:
    mib = cfg.size(full=256, quick=32)
    total = mib << 20
    path, checksum = _make_file(total)
    args = (path, total, checksum)
    try:
        with ServerProcess("sink") as server:
            port = server.port
            peers = [
                Peer("stdlib socket.sendfile", partial(stdlib, port, *args)),
                Peer("asyncio loop.sendfile", partial(asyncio_loop, port, *args)),
                *(
                    Peer(
                        f"duonet Socket.send_file ({portal} portal)",
                        partial(duonet_blocking, port, *args, portal),
                        Target(0.95, "≥ 0.95x stdlib") if portal == "uvloop" else None,
                    )
                    for portal in ("uvloop", "asyncio")
                ),
                *(
                    Peer(
                        f"duonet.aio send_file ({b})",
                        partial(duonet_aio, b, port, *args),
                        Target(0.95, "≥ 0.95x stdlib"),
                    )
                    for b in BACKENDS
                ),
            ]
            rows, rounds = run_rounds(
                peers,
                cfg,
                "sendfile",
                rounds=cfg.n_rounds(full=5, quick=3),
                budget=cfg.time_budget(full=300, quick=20),
            )
    finally:
        os.unlink(path)
    return Table(
        key="sendfile",
        title=f"send_file — a {mib} MiB file to a stdlib sink",
        description="The peer sends the whole file (zero copy with os.sendfile where the peer "
        "can), half-closes, and reads the sink's count and adler32 (op = 1 MiB sent).",
        ops=mib,
        op="MiB",
        reference="stdlib socket.sendfile",
        rows=rows,
        rounds=rounds,
    )
