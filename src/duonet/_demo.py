"""``python -m duonet demo``: duonet's main job, end to end, on loopback only.

A TLS line-echo server (``duonet.serve``, a throwaway certificate authority from trustme)
serves a blocking client, an asyncio client and a trio client, all verifying the server's
certificate; then a client gives a stalled peer a short timeout and shows that the bytes
received before it are not lost.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable

import anyio

from . import aio
from ._blocking import Socket, new_socket
from ._core._tls import wrap_connected_socket as aio_wrap_connected_socket
from ._core._tls import wrap_socket
from ._server import serve
from ._sslcontext import SslContext, SslCVerifyMode, SslHandshakeType, new_context

__all__ = ("main",)


def _say(step: str, text: str) -> None:
    print(f"  {step:<10} {text}", flush=True)


def _make_pki(folder: str) -> tuple[str, str, str]:
    try:
        import trustme
    except ImportError as exc:  # pragma: no cover - the README installs the demo extra
        raise SystemExit(
            "the demo needs trustme for its throwaway certificate authority: "
            "pip install 'duonet[demo]'"
        ) from exc
    ca = trustme.CA(organization_name="duonet demo CA")
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ca_file = os.path.join(folder, "ca.pem")
    cert_file = os.path.join(folder, "server.pem")
    key_file = os.path.join(folder, "server.key")
    ca.cert_pem.write_to_path(ca_file)
    cert.cert_chain_pems[0].write_to_path(cert_file)
    for extra in cert.cert_chain_pems[1:]:
        with open(cert_file, "ab") as out:
            out.write(extra.bytes())
    cert.private_key_pem.write_to_path(key_file)
    return ca_file, cert_file, key_file


def _echo(client: Socket) -> None:
    """The demo server's handler: each line back, in the client's own thread (``serve``)."""
    for line in client.lines(timeout=10):
        client.send(b"echo: " + (b"" if line == b"\r\n" else line) + b"\n")


def _blocking_client(port: int, ctx: SslContext) -> None:
    with new_socket() as sock:
        wrap_socket(ctx, sock)
        started = time.perf_counter()
        sock.connect("localhost", port, timeout=5)
        ms = (time.perf_counter() - started) * 1000
        _say("blocking", f"connected to localhost:{port}, TLS verified ({ms:.1f} ms)")
        for word in ("hello", "world"):
            sock.send(word + "\n")
            _say("blocking", f"sent {word!r:9} got {sock.recv_line(timeout=5)!r}")


async def _async_client(port: int, ctx: SslContext, backend: str) -> None:
    sock = await aio.dial("127.0.0.1", port, timeout=5)
    async with sock:
        await aio_wrap_connected_socket(ctx, sock, SslHandshakeType.CLIENT, "127.0.0.1")
        await sock.send(f"hi from {backend}\n")
        _say(backend, f"verified 127.0.0.1 by IP; got {await sock.recv_line(timeout=5)!r}")


def _timeout_demo() -> None:
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    release = threading.Event()

    def stalling_peer() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.sendall(b"the first half of a line, ")
            release.wait(5)  # ... and stall
            conn.sendall(b"and the rest of it\n")
            conn.recv(1)

    peer = threading.Thread(target=stalling_peer, daemon=True)
    peer.start()
    with new_socket() as sock:
        sock.connect("127.0.0.1", port, timeout=5)
        try:
            sock.recv_line(timeout=0.2)
        except TimeoutError as exc:
            _say("timeout", f"{type(exc).__name__}: {exc}")
        release.set()
        _say("timeout", f"next recv_line -> {sock.recv_line(timeout=5)!r} (nothing lost)")
    peer.join(5)
    listener.close()


def _run(name: str, step: Callable[[], None]) -> bool:
    try:
        step()
    except Exception as exc:
        _say(name, f"FAILED: {type(exc).__name__}: {exc}")
        return False
    return True


def main() -> int:
    """Run the demo; return the exit status."""
    print("duonet demo: a TLS line-echo server on loopback, three kinds of client")
    with tempfile.TemporaryDirectory(prefix="duonet-demo-") as folder:
        ca_file, cert_file, key_file = _make_pki(folder)
        server_ctx = new_context(
            verify_mode=SslCVerifyMode.NONE, cert_file=cert_file, key_file=key_file
        )
        client_ctx = new_context(ca_file=ca_file)
        _say("server", "TLS echo server with a throwaway CA (trustme) on 127.0.0.1")
        with serve(_echo, 0, "127.0.0.1", ssl_context=server_ctx) as server:
            ok = _run("blocking", lambda: _blocking_client(server.port, client_ctx))
            for backend in ("asyncio", "trio"):
                ok &= _run(
                    backend,
                    lambda backend=backend: anyio.run(  # type: ignore[misc]
                        _async_client, server.port, client_ctx, backend, backend=backend
                    ),
                )
            ok &= _run("timeout", _timeout_demo)
    print("done: every step succeeded" if ok else "done, with failures (see above)")
    return 0 if ok else 1
