"""Scenario — load: many connections at once, each making line round trips (plain and TLS).

The peer under test is the *server*, in the benchmark process; the load comes from a separate
stdlib process (``_load_client.py``, one ``selectors`` loop) that opens every connection at once
and, on each, sends ``ping-<n>`` and waits for ``PING-<n>`` before the next round trip. Every
answer is checked. The servers are written the way a user would: a thread per client for the
blocking ones (``socketserver.ThreadingTCPServer``, ``duonet.serve``), a task per client for the
async ones (``asyncio.start_server``, ``duonet.aio.serve``).

Besides wall time and the server's CPU per round trip, each row shows the server process's
context switches per round trip (``getrusage``: voluntary + involuntary, every thread), which is
where a thread-per-client server built on an event loop pays for its hand-offs.
"""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import socketserver
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import anyio
import trustme

import duonet
from duonet import aio

from ._harness import (
    HOST,
    Config,
    HelperProcess,
    Peer,
    Sample,
    Stopwatch,
    Table,
    Target,
    check,
    run_rounds,
    use_portal,
)

CLIENT_SCRIPT = str(Path(__file__).with_name("_load_client.py"))


class LoadClient(HelperProcess):
    """``_load_client.py`` in its own process; it exits when its stdin closes."""

    def __init__(self, cafile: str) -> None:
        super().__init__(CLIENT_SCRIPT, cafile)

    def run(self, port: int, connections: int, rounds: int, tls: bool) -> None:
        answer = self.command(f"RUN {port} {connections} {rounds} {int(tls)}", "DONE")
        bad = int(answer.split()[1])
        check(bad == 0, f"{bad} of {connections} connections failed or got a wrong answer")


class Workload:
    """One table's load: how many connections, round trips each, TLS or not."""

    def __init__(
        self,
        client: LoadClient,
        connections: int,
        rounds: int,
        server_ctx: ssl.SSLContext | None,
        duonet_ctx: duonet.SslContext | None,
    ) -> None:
        self.client = client
        self.connections = connections
        self.rounds = rounds
        self.server_ctx = server_ctx
        self.duonet_ctx = duonet_ctx

    @property
    def ops(self) -> int:
        return self.connections * self.rounds

    def drive(self, port: int) -> None:
        self.client.run(port, self.connections, self.rounds, self.server_ctx is not None)


def _switches() -> int:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_nvcsw + usage.ru_nivcsw


@contextmanager
def _timed(load: Workload, *, duonet_face: bool = False) -> Iterator[Stopwatch]:
    """A stopwatch that also counts the server process's context switches per round trip."""
    before = _switches()
    with Stopwatch(duonet=duonet_face) as sw:
        yield sw
        sw.extra["ctx sw/op"] = round((_switches() - before) / load.ops, 2)


# -- blocking servers -----------------------------------------------------------------------------


class _Upper(socketserver.StreamRequestHandler):
    server: _Threaded

    def setup(self) -> None:
        ctx = self.server.tls
        if ctx is not None:
            self.request = ctx.wrap_socket(self.request, server_side=True)
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().setup()

    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line.upper())
            self.wfile.flush()


class _Threaded(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = socket.SOMAXCONN
    tls: ssl.SSLContext | None = None


def stdlib_threading(load: Workload) -> Sample:
    server = _Threaded((HOST, 0), _Upper)
    server.tls = load.server_ctx
    thread = threading.Thread(target=server.serve_forever, args=(0.05,))
    thread.start()
    try:
        with _timed(load) as sw:
            load.drive(server.server_address[1])
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
    return sw.sample


def _upper_lines(sock: duonet.Socket) -> None:
    sock.set_sock_opt(duonet.SOBool.NO_DELAY, True)
    for line in sock:
        sock.send(line.upper() + b"\n")


def duonet_serve(portal: str, load: Workload) -> Sample:
    use_portal(portal)
    with (
        duonet.serve(_upper_lines, 0, HOST, ssl_context=load.duonet_ctx) as server,
        _timed(load, duonet_face=True) as sw,
    ):
        load.drive(server.port)
    return sw.sample


# -- async servers --------------------------------------------------------------------------------


def asyncio_start_server(load: Workload) -> Sample:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while line := await reader.readline():
            writer.write(line.upper())
            await writer.drain()
        writer.close()

    async def main() -> Sample:
        server = await asyncio.start_server(
            handle, HOST, 0, ssl=load.server_ctx, backlog=socket.SOMAXCONN
        )
        port = server.sockets[0].getsockname()[1]
        try:
            with _timed(load) as sw:
                await asyncio.to_thread(load.drive, port)
        finally:
            server.close()
            await server.wait_closed()
        return sw.sample

    return asyncio.run(main())


async def _aupper_lines(sock: aio.AsyncSocket) -> None:
    sock.set_sock_opt(duonet.SOBool.NO_DELAY, True)
    async for line in sock:
        await sock.send(line.upper() + b"\n")


def duonet_aio_serve(backend: str, load: Workload) -> Sample:
    async def main() -> Sample:
        async with anyio.create_task_group() as tg:
            server = await tg.start(
                partial(aio.serve, ssl_context=load.duonet_ctx), _aupper_lines, 0, HOST
            )
            with _timed(load) as sw:
                await anyio.to_thread.run_sync(load.drive, server.port)
            tg.cancel_scope.cancel()
        return sw.sample

    return anyio.run(main, backend=backend)


# -- the scenario ---------------------------------------------------------------------------------

Serve = Callable[[Workload], Sample]


def _peers(load: Workload, tls: bool) -> tuple[list[Peer], list[Peer]]:
    def peer(name: str, serve: Serve, target: Target | None = None) -> Peer:
        return Peer(name, partial(serve, load), target)

    floor = 0.6 if tls else 0.7
    blocking = [
        peer("socketserver ThreadingTCPServer", stdlib_threading),
        peer(
            "duonet.serve (uvloop portal)",
            partial(duonet_serve, "uvloop"),
            Target(floor, f"≥ {floor}x socketserver"),
        ),
        peer("duonet.serve (asyncio portal)", partial(duonet_serve, "asyncio")),
    ]
    concurrent = [
        peer("asyncio start_server", asyncio_start_server),
        *(
            peer(
                f"duonet.aio.serve ({b})",
                partial(duonet_aio_serve, b),
                Target(1.0, "≥ 1.0x asyncio start_server"),
            )
            for b in ("asyncio", "trio")
        ),
    ]
    return blocking, concurrent


def run(cfg: Config) -> list[Table]:
    ca = trustme.CA()
    cert = ca.issue_cert(HOST)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    cert.configure_cert(server_ctx)
    tables = []
    with tempfile.TemporaryDirectory(prefix="duonet-load-") as tmp:
        cafile = os.path.join(tmp, "ca.pem")
        ca.cert_pem.write_to_path(cafile)
        keyfile = os.path.join(tmp, "server.pem")
        cert.private_key_and_cert_chain_pem.write_to_path(keyfile)
        duonet_ctx = duonet.new_context(cert_file=keyfile, key_file=keyfile)
        client = LoadClient(cafile)
        try:
            for tls, (connections, rounds) in (
                (False, (cfg.size(full=1000, quick=200), cfg.size(full=50, quick=20))),
                (True, (cfg.size(full=300, quick=100), cfg.size(full=20, quick=10))),
            ):
                load = Workload(
                    client,
                    connections,
                    rounds,
                    server_ctx if tls else None,
                    duonet_ctx if tls else None,
                )
                kind = "TLS 1.3" if tls else "plain TCP"
                key = "load-tls" if tls else "load"
                blocking, concurrent = _peers(load, tls)
                for face, peers, reference in (
                    ("blocking", blocking, "socketserver ThreadingTCPServer"),
                    ("async", concurrent, "asyncio start_server"),
                ):
                    rows, rounds_done = run_rounds(
                        peers,
                        cfg,
                        f"{key} ({face})",
                        rounds=cfg.n_rounds(full=3, quick=2),
                        budget=cfg.time_budget(full=240, quick=20),
                    )
                    tables.append(
                        Table(
                            key=key,
                            title=f"load ({face}, {kind}) — {connections} connections x "
                            f"{rounds} line round trips",
                            description="A separate stdlib process opens every connection at "
                            "once and makes line round trips on each (op = 1 round trip); the "
                            "server answers each line upper-cased. 'ctx sw/op' is the server "
                            "process's context switches per round trip.",
                            ops=load.ops,
                            op="round trip",
                            reference=reference,
                            rows=rows,
                            rounds=rounds_done,
                        )
                    )
        finally:
            client.close()
    return tables
