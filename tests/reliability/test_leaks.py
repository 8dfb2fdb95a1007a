"""Open / use / close cycles: nothing may accumulate, on all four faces.

Each cycle connects a duonet client to a duonet listener of the same face, exchanges a line each
way and closes both ends; TLS cycles handshake as well. Checked after the cycles (and every 100
cycles along the way): open file descriptors (``/proc/self/fd``) back to their count after the
warm-up, native threads (``/proc/self/task``) no more than then, every socket object freed by
``gc.collect()`` (weak references), and no ``ResourceWarning``. Failure paths (refused connects,
timeouts, failed handshakes) get the same checks.

Default run: 500 plain and 100 TLS cycles per face; ``DUONET_STRESS=1``: 10 000 of each.
"""

from __future__ import annotations

import gc
import socket
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from duonet import SslContext, SslError
from scenarios import BlockingAdapter, Face, closed_port

from .test_harness import (  # noqa: F401 (fixtures)
    GUARD,
    STEP,
    STRESS,
    anyio_backend_fixture,
    face_fixture,
    face_name_fixture,
    fd_count,
    no_resource_warnings,
    plain_listener,
    scaled,
    thread_count,
    tls_client,
    tls_listener,
    wrap,
)

#: Descriptors that may come and go between checkpoints (a worker thread's, the loop's own).
FD_SLACK = 4


def _core(s: Any) -> Any:
    """What a weak reference should watch: the duonet object behind a face's socket."""
    return s.sock if isinstance(s, BlockingAdapter) else s


async def run_cycles(cycle: Callable[[int], Awaitable[list[Any]]], count: int) -> None:
    """Warm up, then run ``count`` cycles and check what they left behind."""
    for i in range(5):  # starts the portal, worker threads, the TLS context's caches
        await cycle(i)
    gc.collect()
    fds, threads = fd_count(), thread_count()
    watched: list[weakref.ref[Any]] = []
    peak = fds
    with no_resource_warnings():
        for i in range(count):
            made = await cycle(i)
            if i % 10 == 0:
                watched.extend(weakref.ref(_core(s)) for s in made)
            del made
            if i % 100 == 99:
                peak = max(peak, fd_count())
                assert fd_count() <= fds + FD_SLACK, (i, fds, fd_count())
    gc.collect()
    assert fd_count() == fds, f"{fd_count() - fds} descriptors leaked in {count} cycles"
    assert thread_count() <= threads, f"{thread_count() - threads} threads more than at start"
    alive = [ref() for ref in watched if ref() is not None]
    assert not alive, f"{len(alive)} of {len(watched)} sockets still referenced: {alive[:3]}"
    assert peak <= fds + FD_SLACK


async def test_plain_cycles(face: Face) -> None:
    count = scaled(500, 10_000)
    lst, port = plain_listener(face)
    try:

        async def cycle(i: int) -> list[Any]:
            client = face.new_socket()
            await client.connect("127.0.0.1", port, timeout=STEP)
            served = await lst.accept(timeout=STEP)
            await client.send(b"ping %d\n" % i, timeout=STEP)
            assert await served.recv_line(timeout=STEP) == b"ping %d" % i
            await served.send(b"pong\n", timeout=STEP)
            assert await client.recv_line(timeout=STEP) == b"pong"
            await client.close()
            assert await served.recv_line(timeout=STEP) == b""
            await served.close()
            return [client, served]

        with anyio.fail_after(GUARD * (20 if STRESS else 1)):
            await run_cycles(cycle, count)
    finally:
        await lst.close()


async def test_tls_cycles(
    face: Face, tls_server_ctx: SslContext, tls_client_ctx: SslContext
) -> None:
    count = scaled(100, 10_000)
    lst, port = tls_listener(face, tls_server_ctx)
    try:

        async def cycle(i: int) -> list[Any]:
            accepted: list[Any] = []

            async def accept() -> None:
                accepted.append(await lst.accept(timeout=STEP))

            async with anyio.create_task_group() as tg:
                tg.start_soon(accept)
                client = await tls_client(face, tls_client_ctx, port)
            served = accepted[0]
            await client.send(b"ping %d\n" % i, timeout=STEP)
            assert await served.recv_line(timeout=STEP) == b"ping %d" % i
            await served.send(b"pong\n", timeout=STEP)
            assert await client.recv_line(timeout=STEP) == b"pong"
            await client.close()  # close_notify: a clean end for the server
            assert await served.recv_line(timeout=STEP) == b""
            await served.close()
            return [client, served]

        with anyio.fail_after(GUARD * (60 if STRESS else 1)):
            await run_cycles(cycle, count)
    finally:
        await lst.close()


async def test_failure_paths(
    face: Face, tls_server_ctx: SslContext, tls_client_ctx: SslContext
) -> None:
    """Refused connects, read and accept timeouts, handshakes failing on either side."""
    count = scaled(50, 2_000)
    refused = closed_port()
    plain, plain_port = plain_listener(face)
    tls, tls_port = tls_listener(face, tls_server_ctx)
    try:

        async def cycle(i: int) -> list[Any]:
            made: list[Any] = []
            s = face.new_socket()
            made.append(s)
            with pytest.raises(ConnectionRefusedError):
                await s.connect("127.0.0.1", refused, timeout=STEP)
            await s.close()
            # A read that times out, then the server side vanishes.
            s = face.new_socket()
            made.append(s)
            await s.connect("127.0.0.1", plain_port, timeout=STEP)
            served = await plain.accept(timeout=STEP)
            made.append(served)
            with pytest.raises(TimeoutError):
                await s.recv_line(timeout=0.001)
            await served.close()
            await s.close()
            with pytest.raises(TimeoutError):
                await plain.accept(timeout=0.001)
            # A TLS client that does not trust a server of this context (no certificate).
            s = face.new_socket()
            made.append(s)
            wrap(tls_client_ctx, s)
            with pytest.raises(SslError):
                await s.connect("127.0.0.1", refused_tls, timeout=STEP)
            await s.close()
            # A plaintext client on the TLS listener: skipped under SAFE_DISCONN.
            with socket.create_connection(("127.0.0.1", tls_port), timeout=STEP) as raw:
                raw.sendall(b"GET / HTTP/1.0\r\n\r\n")
                raw.shutdown(socket.SHUT_WR)
                with pytest.raises(TimeoutError):
                    await tls.accept(timeout=0.01)
            return made

        with socket.create_server(("127.0.0.1", 0)) as mute_tls:
            # A "TLS server" that closes every connection at once: the handshake fails.
            refused_tls = mute_tls.getsockname()[1]
            mute_tls.settimeout(STEP)

            async def closer() -> None:
                while True:
                    try:
                        conn, _ = await anyio.to_thread.run_sync(
                            mute_tls.accept, abandon_on_cancel=True
                        )
                    except TimeoutError:
                        continue
                    conn.close()

            async with anyio.create_task_group() as tg:
                tg.start_soon(closer)
                with anyio.fail_after(GUARD * (20 if STRESS else 1)):
                    await run_cycles(cycle, count)
                tg.cancel_scope.cancel()
    finally:
        await plain.close()
        await tls.close()
