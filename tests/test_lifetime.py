"""A closed socket is freed as soon as it is dropped: none of duonet's objects hold a reference
cycle through it, so a server that accepts and closes many clients never leaves them to the
cycle collector (whose passes then cost time on every later allocation).

Each test makes the sockets with the collector off, drops them, and asks the collector what it
would free: none of it may be duonet's.
"""

from __future__ import annotations

import contextlib
import gc
import socket
from collections.abc import Iterator

import anyio

import duonet
from conftest import TlsFiles
from duonet import aio


@contextlib.contextmanager
def _no_cyclic_sockets() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        kept = [
            type(o).__qualname__
            for o in gc.garbage
            if type(o).__module__.startswith("duonet") or isinstance(o, socket.socket)
        ]
        assert kept == []
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def _stdlib_echo_once(listener: socket.socket) -> None:
    conn, _ = listener.accept()
    with conn:
        conn.sendall(conn.recv(100))


def test_accepted_and_closed_clients_are_freed_at_once(portal_backend: str) -> None:
    with duonet.new_socket() as listener:
        listener.bind_addr(0, "127.0.0.1")
        listener.listen()
        port = listener.get_local_addr()[1]
        peers = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(3)]
        try:
            with _no_cyclic_sockets():
                for peer in peers:
                    peer.sendall(b"x\n")
                    client = listener.accept(timeout=10)
                    assert client.recv_line(timeout=10) == b"x"  # a call without a timeout
                    client.close()
                    del client
        finally:
            for peer in peers:
                peer.close()


def test_a_dialled_tls_socket_is_freed_at_once(portal_backend: str, tls_files: TlsFiles) -> None:
    import ssl
    import threading

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tls_files.cert, tls_files.key)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)

        def serve() -> None:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(tls.recv(100))

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with _no_cyclic_sockets():
                sock = duonet.dial("127.0.0.1", listener.getsockname()[1], timeout=10)
                duonet.wrap_connected_socket(
                    duonet.new_context(ca_file=tls_files.ca),
                    sock,
                    duonet.SslHandshakeType.CLIENT,
                    "127.0.0.1",
                    timeout=10,
                )
                sock.send(b"hello\n")
                assert sock.recv_line() == b"hello"
                sock.close()
                del sock
        finally:
            thread.join(10)


async def test_async_clients_are_freed_at_once() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        port = listener.getsockname()[1]
        with _no_cyclic_sockets():
            async with anyio.create_task_group() as tg:
                tg.start_soon(anyio.to_thread.run_sync, _stdlib_echo_once, listener)
                sock = await aio.dial("127.0.0.1", port, timeout=10)
                await sock.send(b"hi\n")
                assert await sock.recv_line() == b"hi"
                await sock.close()
                del sock
