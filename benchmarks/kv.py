"""Scenarios 8 and 10 — a RESP-like key-value protocol: a header line, then an exact-size body.

The stdlib ``resp`` server process (``_server.py``) answers every request line ``GET <i>`` with
``$<n>\\r\\n`` and n body bytes (8-192 bytes, 100 on average). The client reads each reply the
way protocol clients do: one line read for the header, then one exact-size read for the body.

* **8 pipelined** — 1 000 requests per write, then the 1 000 replies (one server write): the
  per-reply cost of the read path, with almost no waiting.
* **10 request/response** — one request, its reply, the next request, on one connection: the
  per-round-trip cost, mostly waiting.

Every run checks the number of replies and the SHA-256 of all the bodies, in order.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio
from anyio.streams.buffered import BufferedByteReceiveStream

import duonet
from duonet import aio

from ._harness import AIO_BACKENDS as AB
from ._harness import (
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
from ._server import body

WARMUP = 20


def requests(count: int, per_write: int, first: int = 0) -> list[bytes]:
    """The writes of one run: ``count`` requests for keys first, first+1, ..., per_write a write."""
    keys = range(first, first + count)
    return [
        b"".join(b"GET %d\r\n" % k for k in keys[i : i + per_write])
        for i in range(0, count, per_write)
    ]


def expected_digest(count: int) -> bytes:
    return hashlib.sha256(b"".join(body(i) for i in range(count))).digest()


def verify(bodies: list[bytes], count: int, digest: bytes) -> None:
    check(len(bodies) == count, f"{len(bodies)} replies instead of {count}")
    check(hashlib.sha256(b"".join(bodies)).digest() == digest, "wrong reply bodies")


class PyReader:
    """A plain pure-Python buffered reader over ``socket.recv``: bytearray, find, slice.

    What a protocol library written in pure Python does without ``io.BufferedReader``; the
    reference of the pipelined target.
    """

    __slots__ = ("_buf", "_pos", "_recv")

    def __init__(self, sock: socket.socket) -> None:
        self._recv = sock.recv
        self._buf = bytearray()
        self._pos = 0

    def _fill(self) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        data = self._recv(65536)
        if not data:
            raise EOFError("the server closed")
        self._buf += data

    def readline(self) -> bytes:
        while (end := self._buf.find(b"\n", self._pos)) < 0:
            self._fill()
        line = bytes(self._buf[self._pos : end + 1])
        self._pos = end + 1
        return line

    def read(self, size: int) -> bytes:
        while len(self._buf) - self._pos < size:
            self._fill()
        data = bytes(self._buf[self._pos : self._pos + size])
        self._pos += size
        return data


# -- peers: each sends the writes, reads per_write replies after each, keeps every body ---------


def stdlib_file(port: int, count: int, per_write: int, digest: bytes, srv: ServerProcess) -> Sample:
    writes = requests(count, per_write)
    with socket.create_connection((HOST, port)) as sock, sock.makefile("rb") as file:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sendall, readline, read = sock.sendall, file.readline, file.read
        for data in requests(WARMUP, 1):
            sendall(data)
            read(int(readline()[1:]))
        bodies: list[bytes] = []
        append = bodies.append
        with Stopwatch(server=srv) as sw:
            for data in writes:
                sendall(data)
                for _ in range(per_write):
                    append(read(int(readline()[1:])))
    verify(bodies, count, digest)
    return sw.sample


def stdlib_pure(port: int, count: int, per_write: int, digest: bytes, srv: ServerProcess) -> Sample:
    writes = requests(count, per_write)
    with socket.create_connection((HOST, port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        reader = PyReader(sock)
        sendall, readline, read = sock.sendall, reader.readline, reader.read
        for data in requests(WARMUP, 1):
            sendall(data)
            read(int(readline()[1:]))
        bodies: list[bytes] = []
        append = bodies.append
        with Stopwatch(server=srv) as sw:
            for data in writes:
                sendall(data)
                for _ in range(per_write):
                    append(read(int(readline()[1:])))
    verify(bodies, count, digest)
    return sw.sample


def asyncio_streams(
    backend: str, port: int, count: int, per_write: int, digest: bytes, srv: ServerProcess
) -> Sample:
    writes = requests(count, per_write)

    async def main() -> Sample:
        reader, writer = await asyncio.open_connection(HOST, port)  # TCP_NODELAY by default
        try:
            write, drain = writer.write, writer.drain
            readline, readexactly = reader.readline, reader.readexactly
            for data in requests(WARMUP, 1):
                write(data)
                await drain()
                await readexactly(int((await readline())[1:]))
            bodies: list[bytes] = []
            append = bodies.append
            with Stopwatch(server=srv) as sw:
                for data in writes:
                    write(data)
                    await drain()
                    for _ in range(per_write):
                        append(await readexactly(int((await readline())[1:])))
        finally:
            writer.close()
            await writer.wait_closed()
        verify(bodies, count, digest)
        return sw.sample

    result: Sample = run_async(main, backend)
    return result


def anyio_buffered(
    backend: str, port: int, count: int, per_write: int, digest: bytes, srv: ServerProcess
) -> Sample:
    writes = requests(count, per_write)

    async def main() -> Sample:
        async with await anyio.connect_tcp(HOST, port) as stream:  # TCP_NODELAY set by anyio
            buffered = BufferedByteReceiveStream(stream)
            send = stream.send
            receive_until, receive_exactly = buffered.receive_until, buffered.receive_exactly
            for data in requests(WARMUP, 1):
                await send(data)
                await receive_exactly(int((await receive_until(b"\r\n", 65536))[1:]))
            bodies: list[bytes] = []
            append = bodies.append
            with Stopwatch(server=srv) as sw:
                for data in writes:
                    await send(data)
                    for _ in range(per_write):
                        header = await receive_until(b"\r\n", 65536)
                        append(await receive_exactly(int(header[1:])))
        verify(bodies, count, digest)
        return sw.sample

    result: Sample = run_async(main, backend)
    return result


def duonet_blocking(
    port: int, count: int, per_write: int, digest: bytes, srv: ServerProcess, portal: str
) -> Sample:
    writes = requests(count, per_write)
    use_portal(portal)
    with duonet.dial(HOST, port) as sock:
        sock.set_sock_opt(duonet.SOBool.NO_DELAY, True)
        send, recv_line, recv = sock.send, sock.recv_line, sock.recv
        for data in requests(WARMUP, 1):
            send(data)
            recv(int(recv_line()[1:]))
        bodies: list[bytes] = []
        append = bodies.append
        with Stopwatch(duonet=True, server=srv) as sw:
            for data in writes:
                send(data)
                for _ in range(per_write):
                    append(recv(int(recv_line()[1:])))
    verify(bodies, count, digest)
    return sw.sample


def duonet_aio(
    backend: str, port: int, count: int, per_write: int, digest: bytes, srv: ServerProcess
) -> Sample:
    writes = requests(count, per_write)

    async def main() -> Sample:
        async with await aio.dial(HOST, port) as sock:
            sock.set_sock_opt(duonet.SOBool.NO_DELAY, True)
            send, recv_line, recv = sock.send, sock.recv_line, sock.recv
            for data in requests(WARMUP, 1):
                await send(data)
                await recv(int((await recv_line())[1:]))
            bodies: list[bytes] = []
            append = bodies.append
            with Stopwatch(server=srv) as sw:
                for data in writes:
                    await send(data)
                    for _ in range(per_write):
                        append(await recv(int((await recv_line())[1:])))
        verify(bodies, count, digest)
        return sw.sample

    result: Sample = run_async(main, backend)
    return result


# -- the peers of a protocol scenario ------------------------------------------------------------


def aio_peers(
    streams: Callable[[str], Callable[[], Sample]] | None,
    anyio_peer: Callable[[str], Callable[[], Sample]],
    duonet_peer: Callable[[str], Callable[[], Sample]],
    streams_name: str = "asyncio streams",
    anyio_name: str = "anyio BufferedByteReceiveStream",
    duonet_name: str = "duonet.aio",
) -> list[Peer]:
    """The async peers on every loop (asyncio, uvloop when installed, trio).

    duonet.aio's target on each loop: at least as fast as the fastest of asyncio streams and
    anyio on the same loop (trio has no asyncio streams).
    """
    peers = []
    for b in AB:
        if b != "trio" and streams is not None:
            peers.append(Peer(f"{streams_name} ({b})", streams(b)))
        peers.append(Peer(f"{anyio_name} ({b})", anyio_peer(b)))
    for b in AB:
        rivals = tuple(
            f"{name} ({b})"
            for name in (streams_name, anyio_name)
            if not (name == streams_name and (b == "trio" or streams is None))
        )
        text = f"≥ best of {' / '.join(r.split(' (')[0].split()[0] for r in rivals)} ({b})"
        peers.append(Peer(f"{duonet_name} ({b})", duonet_peer(b), Target(1.0, text, rivals)))
    return peers


def _peers(port: int, count: int, per_write: int, srv: ServerProcess, target: float) -> list[Peer]:
    digest = expected_digest(count)
    args: tuple[Any, ...] = (port, count, per_write, digest, srv)
    pure = "stdlib recv + bytearray reader (pure Python)"
    return [
        Peer("stdlib makefile(): readline + read (C)", partial(stdlib_file, *args)),
        Peer(pure, partial(stdlib_pure, *args)),
        *aio_peers(
            lambda b: partial(asyncio_streams, b, *args),
            lambda b: partial(anyio_buffered, b, *args),
            lambda b: partial(duonet_aio, b, *args),
            streams_name="asyncio readline + readexactly",
            anyio_name="anyio receive_until + receive_exactly",
            duonet_name="duonet.aio recv_line + recv",
        ),
        *(
            Peer(
                f"duonet Socket recv_line + recv ({p} portal)",
                partial(duonet_blocking, *args, portal=p),
                Target(
                    target,
                    f"≥ {target}x {'pure Python' if per_write > 1 else 'stdlib'}",
                    pure if per_write > 1 else None,
                ),
            )
            for p in PORTALS
        ),
    ]


def run_pipelined(cfg: Config) -> Table:
    per_write = 1000
    count = per_write * cfg.size(full=100, quick=20)
    with ServerProcess("resp") as server:
        rows, rounds = run_rounds(
            _peers(server.port, count, per_write, server, 0.5),
            cfg,
            "pipelined",
            rounds=cfg.n_rounds(full=7, quick=3),
            budget=cfg.time_budget(full=240, quick=20),
        )
    return Table(
        key="pipelined",
        title=f"8. pipelined replies — {count} replies, header line + exact-size body, "
        f"{per_write} requests per write",
        description=f"The client writes {per_write} `GET <i>` requests at once, then reads the "
        "replies, each a `$<n>` header line and an n-byte body (8-192 bytes), with one line read "
        "and one exact read (op = 1 reply). Bodies checked by SHA-256.",
        ops=count,
        op="reply",
        reference="stdlib makefile(): readline + read (C)",
        rows=rows,
        rounds=rounds,
    )


def run_reqresp(cfg: Config) -> Table:
    count = cfg.size(full=5000, quick=1000)
    with ServerProcess("resp") as server:
        rows, rounds = run_rounds(
            _peers(server.port, count, 1, server, 0.9),
            cfg,
            "reqresp",
            rounds=cfg.n_rounds(full=7, quick=3),
            budget=cfg.time_budget(full=240, quick=20),
        )
    return Table(
        key="reqresp",
        title=f"10. request/response — {count} sequential requests on one connection",
        description="One `GET <i>` request, then its reply (a `$<n>` header line and an n-byte "
        "body, 8-192 bytes) read with one line read and one exact read, then the next request "
        "(op = 1 round trip; TCP_NODELAY everywhere). Bodies checked by SHA-256.",
        ops=count,
        op="round trip",
        reference="stdlib makefile(): readline + read (C)",
        rows=rows,
        rounds=rounds,
    )
