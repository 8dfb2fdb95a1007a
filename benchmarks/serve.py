"""Scenario 8 — serve: a server accepts N connections and answers one line on each.

The peer under test is the *server*, in the benchmark process: it listens on 127.0.0.1, and for
every connection reads one line (``ping``) and answers it upper-cased, then the connection is
closed. A separate stdlib client process (``_serve_client.py``, one ``selectors`` loop) keeps
``CONCURRENCY`` connections in flight until N are done and checks every answer. The timer covers
the client's whole run; starting and stopping the server are not timed.

Two tables: the blocking servers (reference: ``socketserver.ThreadingTCPServer`` with a
``StreamRequestHandler``, a thread per client, as ``duonet.serve``) and the async ones
(reference: ``asyncio.start_server``; also anyio's ``Listener.serve`` on asyncio and trio).
"""

from __future__ import annotations

import asyncio
import socket
import socketserver
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path

import anyio
import anyio.abc
from anyio.streams.buffered import BufferedByteReceiveStream

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

CONCURRENCY = 8
CLIENT_SCRIPT = str(Path(__file__).with_name("_serve_client.py"))


class ClientProcess(HelperProcess):
    """``_serve_client.py`` in its own process; it exits when its stdin closes."""

    def __init__(self) -> None:
        super().__init__(CLIENT_SCRIPT)

    def run(self, port: int, count: int) -> None:
        """Make ``count`` connections to ``port``; every answer must be right."""
        bad = int(self.command(f"RUN {port} {count} {CONCURRENCY}", "DONE").split()[1])
        check(bad == 0, f"{bad} of {count} connections failed or got a wrong answer")


#: A peer: serve ``count`` connections of the client process, timed.
Serve = Callable[[ClientProcess, int], Sample]


# -- blocking servers -----------------------------------------------------------------------------


class _Upper(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        self.wfile.write(self.rfile.readline().upper())


class _Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    # The default backlog is 5: with 8 clients connecting at once, SYNs overflow it and wait
    # for a retransmission (1 s). duonet.serve listens with SOMAXCONN; so does this reference.
    request_queue_size = socket.SOMAXCONN


def stdlib_threading(client: ClientProcess, count: int) -> Sample:
    server = _Server((HOST, 0), _Upper)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,))
    thread.start()
    try:
        with Stopwatch() as sw:
            client.run(server.server_address[1], count)
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
    return sw.sample


def _upper(sock: duonet.Socket) -> None:
    sock.send(sock.recv_line().upper() + b"\n")


def duonet_serve(portal: str, client: ClientProcess, count: int) -> Sample:
    use_portal(portal)
    with duonet.serve(_upper, 0, HOST) as server, Stopwatch(duonet=True) as sw:
        client.run(server.port, count)
    return sw.sample


# -- async servers --------------------------------------------------------------------------------


def asyncio_start_server(client: ClientProcess, count: int) -> Sample:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write((await reader.readline()).upper())
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main() -> Sample:
        server = await asyncio.start_server(handle, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        try:
            with Stopwatch() as sw:
                await asyncio.to_thread(client.run, port, count)
        finally:
            server.close()
            await server.wait_closed()
        return sw.sample

    return asyncio.run(main())


def anyio_listener_serve(backend: str, client: ClientProcess, count: int) -> Sample:
    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            line = await BufferedByteReceiveStream(stream).receive_until(b"\n", 65536)
            await stream.send(line.upper() + b"\n")

    async def main() -> Sample:
        listener = await anyio.create_tcp_listener(local_host=HOST, local_port=0)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, handle)
            with Stopwatch() as sw:
                await anyio.to_thread.run_sync(client.run, port, count)
            tg.cancel_scope.cancel()
        return sw.sample

    return anyio.run(main, backend=backend)


async def _aupper(sock: aio.AsyncSocket) -> None:
    await sock.send((await sock.recv_line()).upper() + b"\n")


def duonet_aio_serve(backend: str, client: ClientProcess, count: int) -> Sample:
    async def main() -> Sample:
        async with anyio.create_task_group() as tg:
            server = await tg.start(aio.serve, _aupper, 0, HOST)
            with Stopwatch() as sw:
                await anyio.to_thread.run_sync(client.run, server.port, count)
            tg.cancel_scope.cancel()
        return sw.sample

    return anyio.run(main, backend=backend)


# -- the scenario ---------------------------------------------------------------------------------


def run(cfg: Config) -> list[Table]:
    count = cfg.size(full=2000, quick=400)
    client = ClientProcess()
    try:

        def peer(name: str, serve: Serve, target: Target | None = None) -> Peer:
            return Peer(name, partial(serve, client, count), target)

        blocking = [
            peer("socketserver ThreadingTCPServer", stdlib_threading),
            peer(
                "duonet.serve (uvloop portal)",
                partial(duonet_serve, "uvloop"),
                Target(0.9, "≥ 0.9x socketserver"),
            ),
            peer("duonet.serve (asyncio portal)", partial(duonet_serve, "asyncio")),
            peer("duonet.serve (trio portal)", partial(duonet_serve, "trio")),
        ]
        rows_b, rounds_b = run_rounds(
            blocking,
            cfg,
            "serve (blocking)",
            rounds=cfg.n_rounds(full=5, quick=3),
            budget=cfg.time_budget(full=180, quick=10),
        )
        concurrent = [
            peer("asyncio start_server", asyncio_start_server),
            peer("anyio Listener.serve (asyncio)", partial(anyio_listener_serve, "asyncio")),
            peer("anyio Listener.serve (trio)", partial(anyio_listener_serve, "trio")),
            peer(
                "duonet.aio.serve (asyncio)",
                partial(duonet_aio_serve, "asyncio"),
                Target(1.0, "≥ 1.0x asyncio start_server"),
            ),
            peer(
                "duonet.aio.serve (trio)",
                partial(duonet_aio_serve, "trio"),
                Target(1.0, "≥ anyio (trio)", versus="anyio Listener.serve (trio)"),
            ),
        ]
        rows_a, rounds_a = run_rounds(
            concurrent,
            cfg,
            "serve (async)",
            rounds=cfg.n_rounds(full=5, quick=3),
            budget=cfg.time_budget(full=180, quick=10),
        )
    finally:
        client.close()
    description = (
        f"A stdlib client process keeps {CONCURRENCY} connections in flight; the server reads "
        "one line on each and answers it upper-cased, then the connection closes (op = 1 "
        "connection: accept, a line each way, close)."
    )
    blocking_table = Table(
        key="serve",
        title=f"8a. serve (blocking) — {count} connections, one line each way",
        description=description + " Thread per client on both sides.",
        ops=count,
        op="connection",
        reference="socketserver ThreadingTCPServer",
        rows=rows_b,
        rounds=rounds_b,
    )
    async_table = Table(
        key="aio.serve",
        title=f"8b. aio.serve — {count} connections, one line each way",
        description=description + " Task per client.",
        ops=count,
        op="connection",
        reference="asyncio start_server",
        rows=rows_a,
        rounds=rounds_a,
    )
    duonet_row = async_table.row("duonet.aio.serve (asyncio)")
    anyio_row = async_table.row("anyio Listener.serve (asyncio)")
    if duonet_row is not None and anyio_row is not None:
        speed = async_table.speed(duonet_row, anyio_row.peer.name)
        if speed is not None:
            async_table.notes.append(
                f"duonet.aio.serve (asyncio) against anyio Listener.serve (asyncio): {speed:.2f}x "
                f"(target ≥ 1.0x: {'met' if speed >= 1.0 else '**not met**'})."
            )
    return [blocking_table, async_table]
