"""Scenario 5 — TLS handshakes, client side, against a stdlib ``ssl`` server process.

The server (TLS 1.3 only, a trustme certificate for 127.0.0.1) runs each handshake in its own
thread and then waits for the client to close. The peer under test times connect + handshake +
close, N times in a row. The clients verify the chain and the IP address.
"""

from __future__ import annotations

import socket
import ssl
import tempfile
from functools import partial
from pathlib import Path

import anyio
import trustme

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

WARMUP = 3


def stdlib(port: int, count: int, ctx: ssl.SSLContext) -> Sample:
    def once() -> None:
        with (
            socket.create_connection((HOST, port)) as raw,
            ctx.wrap_socket(raw, server_hostname=HOST) as tls,  # handshakes here
        ):
            check(tls.version() == "TLSv1.3", "not TLS 1.3")

    for _ in range(WARMUP):
        once()
    with Stopwatch() as sw:
        for _ in range(count):
            once()
    return sw.sample


def anyio_tls(backend: str, port: int, count: int, ctx: ssl.SSLContext) -> Sample:
    async def once() -> None:
        # standard_compatible=False: aclose() would otherwise wait for the server's close_notify.
        stream = await anyio.connect_tcp(
            HOST, port, ssl_context=ctx, tls_hostname=HOST, tls_standard_compatible=False
        )
        await stream.aclose()

    async def main() -> Sample:
        for _ in range(WARMUP):
            await once()
        with Stopwatch() as sw:
            for _ in range(count):
                await once()
        return sw.sample

    return anyio.run(main, backend=backend)


def duonet_blocking(
    port: int, count: int, ctx: duonet.SslContext, portal: str = "uvloop"
) -> Sample:
    use_portal(portal)

    def once() -> None:
        with duonet.new_socket() as sock:
            duonet.wrap_socket(ctx, sock)
            sock.connect(HOST, port)  # TCP connect + handshake

    for _ in range(WARMUP):
        once()
    with Stopwatch(duonet=True) as sw:
        for _ in range(count):
            once()
    return sw.sample


def duonet_aio(backend: str, port: int, count: int, ctx: duonet.SslContext) -> Sample:
    async def once() -> None:
        async with aio.new_async_socket() as sock:
            aio.wrap_socket(ctx, sock)
            await sock.connect(HOST, port)

    async def main() -> Sample:
        for _ in range(WARMUP):
            await once()
        with Stopwatch() as sw:
            for _ in range(count):
                await once()
        return sw.sample

    return anyio.run(main, backend=backend)


def run(cfg: Config) -> Table:
    count = cfg.size(full=300, quick=60)
    ca = trustme.CA()
    with tempfile.TemporaryDirectory(prefix="duonet-bench-") as tmp:
        ca_file, server_pem = Path(tmp, "ca.pem"), Path(tmp, "server.pem")
        ca.cert_pem.write_to_path(str(ca_file))
        ca.issue_cert(HOST, "localhost").private_key_and_cert_chain_pem.write_to_path(
            str(server_pem)
        )
        std_ctx = ssl.create_default_context(cafile=str(ca_file))
        duo_ctx = duonet.new_context(ca_file=str(ca_file))
        with ServerProcess("tls", server_pem) as server:
            port = server.port
            peers = [
                Peer("stdlib ssl wrap_socket", partial(stdlib, port, count, std_ctx)),
                *(
                    Peer(
                        f"anyio connect_tcp(tls) ({b})",
                        partial(anyio_tls, b, port, count, std_ctx),
                    )
                    for b in BACKENDS
                ),
                Peer(
                    "duonet Socket.connect (uvloop portal)",
                    partial(duonet_blocking, port, count, duo_ctx),
                    Target(0.9, "≥ 0.9x stdlib"),
                ),
                *(
                    Peer(
                        f"duonet.aio connect ({b})",
                        partial(duonet_aio, b, port, count, duo_ctx),
                    )
                    for b in BACKENDS
                ),
            ]
            rows, rounds = run_rounds(
                peers,
                cfg,
                "tls",
                rounds=cfg.n_rounds(full=5, quick=3),
                budget=cfg.time_budget(full=240, quick=10),
            )
    return Table(
        key="tls",
        title=f"5. TLS handshakes — {count} client handshakes (TLS 1.3, ECDSA P-256 certificate)",
        description="Client side: TCP connect + TLS 1.3 handshake (chain and IP verified) + "
        "close, against a stdlib ssl server process (op = 1 connection).",
        ops=count,
        op="handshake",
        reference="stdlib ssl wrap_socket",
        rows=rows,
        rounds=rounds,
    )
