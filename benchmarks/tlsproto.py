"""Scenarios 11 and 12 — TLS protocol sessions, client side, against stdlib ``ssl`` servers.

* **11 TLS connections** — TCP connect + TLS 1.3 handshake (chain and IP verified) + one line
  each way + close, N times (the server process's ``tlsline`` mode).
* **12 STARTTLS sessions** — connect, read the greeting line, ``STARTTLS``, read the go-ahead,
  upgrade the same connection to TLS 1.3 (verified), 5 line exchanges, close (``starttls``
  mode, SMTP-like).

Every reply line is checked. The server's CPU per session is reported beside the client's.
TCP_NODELAY is set on every client (asyncio and anyio set it by default; without it the stdlib
and duonet clients' first write after the handshake can wait for a delayed ACK) and the server.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import trustme
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.tls import TLSStream

import duonet
from duonet import aio

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
from .kv import aio_peers

WARMUP = 3
HELLO = b"HELLO bench\r\n"
EXCHANGES = 5
COMMANDS = [b"NOOP %d\r\n" % i for i in range(EXCHANGES)]


def _ok(reply: bytes, sent: bytes, prefix: bytes = b"OK ") -> None:
    check(reply.rstrip(b"\r\n") == prefix + sent.rstrip(b"\r\n"), f"wrong reply {reply[:60]!r}")


def _greeting(line: bytes) -> None:
    check(line.startswith(b"220 "), f"wrong greeting {line[:60]!r}")


@contextmanager
def certificates() -> Iterator[tuple[str, str]]:
    """(CA file, server key + chain file) of a throwaway trustme CA, for 127.0.0.1."""
    ca = trustme.CA()
    with tempfile.TemporaryDirectory(prefix="duonet-bench-") as tmp:
        ca_file, server_pem = Path(tmp, "ca.pem"), Path(tmp, "server.pem")
        ca.cert_pem.write_to_path(str(ca_file))
        ca.issue_cert(HOST, "localhost").private_key_and_cert_chain_pem.write_to_path(
            str(server_pem)
        )
        yield str(ca_file), str(server_pem)


def _timed(once: Any, count: int, srv: ServerProcess, duonet: bool = False) -> Sample:
    for _ in range(WARMUP):
        once()
    with Stopwatch(duonet=duonet, server=srv) as sw:
        for _ in range(count):
            once()
    return sw.sample


async def _atimed(once: Any, count: int, srv: ServerProcess) -> Sample:
    for _ in range(WARMUP):
        await once()
    with Stopwatch(server=srv) as sw:
        for _ in range(count):
            await once()
    return sw.sample


# -- 11: TLS connection + one line each way ----------------------------------------------------


def conn_stdlib(port: int, count: int, ctx: ssl.SSLContext, srv: ServerProcess) -> Sample:
    def once() -> None:
        with socket.create_connection((HOST, port)) as raw:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with ctx.wrap_socket(raw, server_hostname=HOST) as tls, tls.makefile("rb") as file:
                tls.sendall(HELLO)
                _ok(file.readline(), HELLO)

    return _timed(once, count, srv)


def conn_asyncio(
    backend: str, port: int, count: int, ctx: ssl.SSLContext, srv: ServerProcess
) -> Sample:
    async def once() -> None:
        reader, writer = await asyncio.open_connection(HOST, port, ssl=ctx, server_hostname=HOST)
        try:
            writer.write(HELLO)
            await writer.drain()
            _ok(await reader.readline(), HELLO)
        finally:
            writer.close()
            await writer.wait_closed()

    result: Sample = run_async(partial(_atimed, once, count, srv), backend)
    return result


def conn_anyio(
    backend: str, port: int, count: int, ctx: ssl.SSLContext, srv: ServerProcess
) -> Sample:
    async def once() -> None:
        # standard_compatible=False: aclose() would otherwise wait for the server's close_notify.
        async with await anyio.connect_tcp(
            HOST, port, ssl_context=ctx, tls_hostname=HOST, tls_standard_compatible=False
        ) as stream:
            await stream.send(HELLO)
            _ok(await BufferedByteReceiveStream(stream).receive_until(b"\n", 65536), HELLO)

    result: Sample = run_async(partial(_atimed, once, count, srv), backend)
    return result


def conn_duonet(
    port: int, count: int, ctx: duonet.SslContext, srv: ServerProcess, portal: str
) -> Sample:
    use_portal(portal)

    def once() -> None:
        with duonet.new_socket() as sock:
            sock.set_sock_opt(duonet.SOBool.NO_DELAY, True)
            duonet.wrap_socket(ctx, sock)
            sock.connect(HOST, port)  # TCP connect + handshake
            sock.send(HELLO)
            _ok(sock.recv_line(), HELLO)

    return _timed(once, count, srv, duonet=True)


def conn_duonet_aio(
    backend: str, port: int, count: int, ctx: duonet.SslContext, srv: ServerProcess
) -> Sample:
    async def once() -> None:
        async with aio.new_async_socket() as sock:
            sock.set_sock_opt(duonet.SOBool.NO_DELAY, True)
            aio.wrap_socket(ctx, sock)
            await sock.connect(HOST, port)
            await sock.send(HELLO)
            _ok(await sock.recv_line(), HELLO)

    result: Sample = run_async(partial(_atimed, once, count, srv), backend)
    return result


# -- 12: STARTTLS session ----------------------------------------------------------------------


def starttls_stdlib(port: int, count: int, ctx: ssl.SSLContext, srv: ServerProcess) -> Sample:
    def once() -> None:
        with socket.create_connection((HOST, port)) as raw:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with raw.makefile("rb") as file:  # nothing follows the go-ahead: no over-read
                _greeting(file.readline())
                raw.sendall(b"STARTTLS\r\n")
                _greeting(file.readline())
            with ctx.wrap_socket(raw, server_hostname=HOST) as tls, tls.makefile("rb") as file:
                for command in COMMANDS:
                    tls.sendall(command)
                    _ok(file.readline(), command, b"250 ")

    return _timed(once, count, srv)


def starttls_asyncio(
    backend: str, port: int, count: int, ctx: ssl.SSLContext, srv: ServerProcess
) -> Sample:
    async def once() -> None:
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            _greeting(await reader.readline())
            writer.write(b"STARTTLS\r\n")
            await writer.drain()
            _greeting(await reader.readline())
            await writer.start_tls(ctx, server_hostname=HOST)  # type: ignore[attr-defined,unused-ignore]
            for command in COMMANDS:
                writer.write(command)
                await writer.drain()
                _ok(await reader.readline(), command, b"250 ")
        finally:
            writer.close()
            await writer.wait_closed()

    result: Sample = run_async(partial(_atimed, once, count, srv), backend)
    return result


def starttls_anyio(
    backend: str, port: int, count: int, ctx: ssl.SSLContext, srv: ServerProcess
) -> Sample:
    async def once() -> None:
        async with await anyio.connect_tcp(HOST, port) as plain:
            buffered = BufferedByteReceiveStream(plain)
            _greeting(await buffered.receive_until(b"\n", 65536))
            await plain.send(b"STARTTLS\r\n")
            _greeting(await buffered.receive_until(b"\n", 65536))
            tls = await TLSStream.wrap(
                plain, hostname=HOST, ssl_context=ctx, standard_compatible=False
            )
            buffered = BufferedByteReceiveStream(tls)
            for command in COMMANDS:
                await tls.send(command)
                _ok(await buffered.receive_until(b"\n", 65536), command, b"250 ")
            await tls.aclose()

    result: Sample = run_async(partial(_atimed, once, count, srv), backend)
    return result


def starttls_duonet(
    port: int, count: int, ctx: duonet.SslContext, srv: ServerProcess, portal: str
) -> Sample:
    use_portal(portal)
    client = duonet.SslHandshakeType.CLIENT

    def once() -> None:
        with duonet.dial(HOST, port) as sock:
            sock.set_sock_opt(duonet.SOBool.NO_DELAY, True)
            _greeting(sock.recv_line())
            sock.send(b"STARTTLS\r\n")
            _greeting(sock.recv_line())
            duonet.wrap_connected_socket(ctx, sock, client, HOST)
            for command in COMMANDS:
                sock.send(command)
                _ok(sock.recv_line(), command, b"250 ")

    return _timed(once, count, srv, duonet=True)


def starttls_duonet_aio(
    backend: str, port: int, count: int, ctx: duonet.SslContext, srv: ServerProcess
) -> Sample:
    client = duonet.SslHandshakeType.CLIENT

    async def once() -> None:
        async with await aio.dial(HOST, port) as sock:
            sock.set_sock_opt(duonet.SOBool.NO_DELAY, True)
            _greeting(await sock.recv_line())
            await sock.send(b"STARTTLS\r\n")
            _greeting(await sock.recv_line())
            await aio.wrap_connected_socket(ctx, sock, client, HOST)
            for command in COMMANDS:
                await sock.send(command)
                _ok(await sock.recv_line(), command, b"250 ")

    result: Sample = run_async(partial(_atimed, once, count, srv), backend)
    return result


# -- scenarios ---------------------------------------------------------------------------------


def _run(
    cfg: Config, key: str, mode: str, count: int, funcs: dict[str, Any]
) -> tuple[list[Any], int]:
    with certificates() as (ca_file, server_pem), ServerProcess(mode, server_pem) as server:
        std_ctx = ssl.create_default_context(cafile=ca_file)
        duo_ctx = duonet.new_context(ca_file=ca_file)
        args: tuple[Any, ...] = (server.port, count)
        streams = funcs["asyncio"]
        if key == "starttls" and sys.version_info < (3, 11):
            streams = None  # StreamWriter.start_tls() is new in 3.11
        peers = [
            Peer("stdlib ssl", partial(funcs["stdlib"], *args, std_ctx, server)),
            *aio_peers(
                None
                if streams is None
                else (lambda b: partial(streams, b, *args, std_ctx, server)),
                lambda b: partial(funcs["anyio"], b, *args, std_ctx, server),
                lambda b: partial(funcs["duonet_aio"], b, *args, duo_ctx, server),
            ),
            *(
                Peer(
                    f"duonet Socket ({p} portal)",
                    partial(funcs["duonet"], *args, duo_ctx, server, p),
                    Target(0.9, "≥ 0.9x stdlib"),
                )
                for p in PORTALS
            ),
        ]
        return run_rounds(
            peers,
            cfg,
            key,
            rounds=cfg.n_rounds(full=5, quick=3),
            budget=cfg.time_budget(full=240, quick=25),
        )


def run_connections(cfg: Config) -> Table:
    count = cfg.size(full=300, quick=50)
    funcs = {
        "stdlib": conn_stdlib,
        "asyncio": conn_asyncio,
        "anyio": conn_anyio,
        "duonet": conn_duonet,
        "duonet_aio": conn_duonet_aio,
    }
    rows, rounds = _run(cfg, "tlsconn", "tlsline", count, funcs)
    return Table(
        key="tlsconn",
        title=f"11. TLS connections — {count} x (connect + TLS 1.3 handshake + one line each way "
        "+ close)",
        description="Client side against a stdlib ssl server process (TLS 1.3, trustme ECDSA "
        "certificate for 127.0.0.1; chain and IP verified): connect, handshake, send a line, read "
        "the server's line, close (op = 1 connection).",
        ops=count,
        op="connection",
        reference="stdlib ssl",
        rows=rows,
        rounds=rounds,
    )


def run_starttls(cfg: Config) -> Table:
    count = cfg.size(full=300, quick=50)
    funcs = {
        "stdlib": starttls_stdlib,
        "asyncio": starttls_asyncio,
        "anyio": starttls_anyio,
        "duonet": starttls_duonet,
        "duonet_aio": starttls_duonet_aio,
    }
    rows, rounds = _run(cfg, "starttls", "starttls", count, funcs)
    return Table(
        key="starttls",
        title=f"12. STARTTLS sessions — {count} x (greeting, STARTTLS, TLS 1.3 upgrade, "
        f"{EXCHANGES} line exchanges, close)",
        description="An SMTP-like session against a stdlib server process: read the greeting "
        "line, send STARTTLS, read the go-ahead, upgrade the same connection (verified), then "
        f"{EXCHANGES} request/reply line exchanges over TLS, close (op = 1 session).",
        ops=count,
        op="session",
        reference="stdlib ssl",
        rows=rows,
        rounds=rounds,
    )
