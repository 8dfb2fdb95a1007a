"""The blocking face serves TLS calls in the caller's thread when the channel can answer without
waiting, and only while no call of the socket runs in the portal (an ``SSLObject`` is not
thread-safe): sends the kernel takes at once, and reads of records already arrived.

Correctness under threads is the point: one thread reading and another writing the same TLS
socket must never use the channel at the same time (OpenSSL would corrupt the stream, and the
peer would fail the record's MAC), and a send too large for the kernel must still arrive whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import duonet
from conftest import TlsFiles, peer
from duonet import _portal


def _server_context(files: TlsFiles) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(files.cert, files.key)
    return ctx


def _tls_peer(files: TlsFiles, handler: Callable[[ssl.SSLSocket], None]) -> Any:
    ctx = _server_context(files)

    def run(conn: socket.socket) -> None:
        with ctx.wrap_socket(conn, server_side=True) as tls:
            handler(tls)

    return peer(run)


def _echo_lines(tls: ssl.SSLSocket) -> None:
    reader = tls.makefile("rb")
    for line in reader:
        tls.sendall(line)


@contextlib.contextmanager
def _counting_hops(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Counts the blocking face's portal hops (instrumentation, not a mock: each hop still
    runs)."""
    count = [0]
    real = _portal.call

    def call(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(_portal, "call", call)
    yield count


def _dial_tls(port: int, files: TlsFiles) -> duonet.Socket:
    sock = duonet.new_socket()
    duonet.wrap_socket(duonet.new_context(ca_file=files.ca), sock)
    sock.connect("127.0.0.1", port, timeout=10)
    return sock


def test_a_tls_send_the_kernel_takes_needs_no_hop(
    portal_backend: str, tls_files: TlsFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _tls_peer(tls_files, _echo_lines) as server, _dial_tls(server.port, tls_files) as sock:
        with _counting_hops(monkeypatch) as hops:
            sock.send(b"one\n")
            sock.send(b"two\n")
        assert hops[0] == 0
        assert sock.recv_line(timeout=10) == b"one"
        assert sock.recv_line(timeout=10) == b"two"


def test_tls_records_already_arrived_are_read_without_a_hop(
    portal_backend: str, tls_files: TlsFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _tls_peer(tls_files, _echo_lines) as server, _dial_tls(server.port, tls_files) as sock:
        sock.send(b"hello\n")
        assert sock.recv_line(timeout=10) == b"hello"
        hop_counts = []
        for attempt in range(1, 6):
            sock.send(b"again %d\n" % attempt)
            time.sleep(0.1 * attempt)  # the echo's record is in the kernel by then (or retry)
            with _counting_hops(monkeypatch) as hops:
                assert sock.recv_line(timeout=10) == b"again %d" % attempt
            hop_counts.append(hops[0])
            if hops[0] == 0:
                break
        assert hop_counts[-1] == 0, hop_counts


def test_a_tls_send_larger_than_the_kernel_takes_arrives_whole(
    portal_backend: str, tls_files: TlsFiles
) -> None:
    payload = bytes(range(256)) * (8 << 12)  # 8 MiB
    digest: list[str] = []

    def slow_reader(tls: ssl.SSLSocket) -> None:
        got = hashlib.sha256()
        size = 0
        while size < len(payload):
            chunk = tls.recv(1 << 14)
            if not chunk:
                break
            got.update(chunk)
            size += len(chunk)
        digest.append(got.hexdigest())
        tls.sendall(b"done\n")

    with _tls_peer(tls_files, slow_reader) as server, _dial_tls(server.port, tls_files) as sock:
        sock.send(payload, timeout=30)
        assert sock.recv_line(timeout=30) == b"done"
    assert digest == [hashlib.sha256(payload).hexdigest()]


def test_a_reader_and_a_writer_thread_share_a_tls_socket_without_loss(
    portal_backend: str, tls_files: TlsFiles
) -> None:
    lines = [b"%05d %s" % (i, b"x" * (i % 700)) for i in range(3000)]
    received: list[bytes] = []
    errors: list[BaseException] = []

    with _tls_peer(tls_files, _echo_lines) as server, _dial_tls(server.port, tls_files) as sock:

        def read() -> None:
            try:
                for _ in lines:
                    received.append(sock.recv_line(timeout=20))
            except BaseException as exc:
                errors.append(exc)

        reader = threading.Thread(target=read)
        reader.start()
        try:
            for line in lines:
                sock.send(line + b"\n", timeout=20)
        finally:
            reader.join(30)
        assert not reader.is_alive()
        assert errors == []
        assert received == lines


def test_a_tls_send_to_a_peer_gone_follows_the_flags(
    portal_backend: str, tls_files: TlsFiles
) -> None:
    closed = threading.Event()

    def close_at_once(tls: ssl.SSLSocket) -> None:
        tls.recv(100)
        closed.set()

    with _tls_peer(tls_files, close_at_once) as server, _dial_tls(server.port, tls_files) as sock:
        sock.send(b"hello\n")
        assert closed.wait(10)
        # the peer is gone: sends under SAFE_DISCONN return quietly, and the stream then ends
        for _ in range(200):
            sock.send(b"x" * 4096)
        assert sock.recv_line(timeout=10) == b""
