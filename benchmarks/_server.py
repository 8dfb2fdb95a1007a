"""The far side of every scenario: one plain-stdlib implementation, run as a separate process.

It never imports duonet or anyio, and runs in its own interpreter (its own GIL), so the peer under
test in the benchmark process has the CPU of its own process to itself.

Usage (started by :class:`benchmarks._harness.ServerProcess`)::

    python _server.py MODE [ARGS...]

The process prints ``PORT <n>`` (a listener on 127.0.0.1) or ``READY`` (connector) on stdout,
then serves until its stdin closes: it can never outlive the benchmark, even one that is killed.

Modes (each accepted connection is served by its own thread):

``lines COUNT``
    sends COUNT lines of 40 bytes (``%08d`` + 30 x ``.`` + ``\\n``), then EOF.
``bulk TOTAL``
    sends TOTAL bytes (1 MiB writes), then EOF.
``echo``
    echoes every chunk it receives (line ping-pong and 1-byte ping-pong alike).
``sink``
    reads until EOF, then answers ``<bytes received> <adler32 of them>\n`` and closes.
``tls PEMFILE``
    TLS 1.3 server handshake with the key and chain in PEMFILE, then waits for EOF.
``waiters``
    stdin commands ``EXPECT n`` (answers ``READY`` once n connections are accepted), ``GO``
    (sends one line to each of them, answers ``SENT``), ``CLOSE`` (closes them, ``CLOSED``).
``resp [VALUE_SIZE]``
    a RESP-like key-value server: every request line ``GET <i>`` (``\\r\\n``-terminated, any
    number per write) is answered, in order, by a header line ``$<n>\\r\\n`` and exactly n body
    bytes: :func:`body` ``(i)`` (8-200 bytes), or with VALUE_SIZE :func:`value` ``(i, size)``.
    All the replies to the requests of one read go out in one write; the replies to a read seen
    before are sent from a cache, so that the server's own work is small beside the client's.
``tlsline PEMFILE``
    TLS 1.3 server: handshake, read one line, answer ``OK <line>``, then wait for EOF.
``starttls PEMFILE``
    an SMTP-like session: greeting line ``220 ...``; on ``STARTTLS`` answers ``220 ...`` and
    handshakes (TLS 1.3) on the same connection; then answers each line with ``250 <line>``.
``connector``
    a client, not a server: ``CONNECT port n`` opens n connections to 127.0.0.1:port and keeps
    them open (answers ``READY``); ``CLOSE`` closes them (``CLOSED``).

Every listening mode answers the stdin command ``CPU`` with ``CPU <seconds>``: the CPU time the
server process has used so far (all its threads), so that a run can report the far side's cost.
"""

from __future__ import annotations

import os
import random
import socket
import ssl
import sys
import threading
import time
import zlib
from collections.abc import Callable

LINE_SIZE = 40
_out_lock = threading.Lock()


def say(text: str) -> None:
    with _out_lock:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


def line(index: int) -> bytes:
    """Line ``index`` of the ``lines`` payload, with its ``\\n`` (40 bytes)."""
    return b"%08d%s\n" % (index, b"." * (LINE_SIZE - 9))


def body(index: int) -> bytes:
    """The small value of key ``index`` for the ``resp`` mode: 8 to 192 bytes."""
    return (b"%08d" % index) * (1 + index % 24)


_BLOCK: bytes | None = None


def value_block(size: int) -> bytes:
    """``size`` pseudo-random bytes, the same in every process (the large values' payload)."""
    global _BLOCK
    if _BLOCK is None or len(_BLOCK) < size:
        _BLOCK = random.Random(20).randbytes(size)
    return _BLOCK[:size]


def value(index: int, size: int) -> bytes:
    """The large value of key ``index``: its number in 8 digits, then the shared block."""
    return b"%08d" % index + value_block(size)[8:]


def listen(backlog: int = 4096) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(backlog)
    return sock


def serve_forever(listener: socket.socket, handle: Callable[[socket.socket], None]) -> None:
    def loop() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=guarded, args=(handle, conn), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()


def guarded(handle: Callable[[socket.socket], None], conn: socket.socket) -> None:
    try:
        handle(conn)
    except OSError:
        pass
    finally:
        conn.close()


def drain_until_eof(conn: socket.socket) -> None:
    # Let the client close first: closing with unread data would reset the connection.
    while conn.recv(65536):
        pass


def make_lines_handler(count: int) -> Callable[[socket.socket], None]:
    payload = b"".join(line(i) for i in range(count))

    def handle(conn: socket.socket) -> None:
        conn.sendall(payload)
        conn.shutdown(socket.SHUT_WR)
        drain_until_eof(conn)

    return handle


def make_bulk_handler(total: int) -> Callable[[socket.socket], None]:
    block = memoryview(os.urandom(1 << 20))

    def handle(conn: socket.socket) -> None:
        left = total
        while left:
            n = min(left, len(block))
            conn.sendall(block[:n])
            left -= n
        conn.shutdown(socket.SHUT_WR)
        drain_until_eof(conn)

    return handle


def sink(conn: socket.socket) -> None:
    view = memoryview(bytearray(1 << 20))
    total, check = 0, 1
    while n := conn.recv_into(view):
        total += n
        check = zlib.adler32(view[:n], check)
    conn.sendall(b"%d %d\n" % (total, check))


def echo(conn: socket.socket) -> None:
    recv, sendall = conn.recv, conn.sendall
    while data := recv(65536):
        sendall(data)


def make_resp_handler(value_size: int) -> Callable[[socket.socket], None]:
    cache: dict[bytes, bytes] = {}  # request line -> reply (the rounds repeat the same keys)

    def small_reply(request: bytes) -> bytes:
        reply = cache.get(request)
        if reply is None:
            data = body(int(request[4:]))
            reply = cache[request] = b"$%d\r\n%s" % (len(data), data)
        return reply

    block = memoryview(value_block(value_size))[8:] if value_size else None

    writes: dict[bytes, bytes] = {}  # one read of requests -> all its replies

    def handle(conn: socket.socket) -> None:
        recv = conn.recv
        pending = b""
        while data := recv(65536):
            if block is None and not pending and data in writes:
                conn.sendall(writes[data])  # the rounds repeat the same writes: answer at once
                continue
            whole = not pending and data.endswith(b"\r\n")
            pending += data
            *requests, pending = pending.split(b"\r\n")
            if not requests:
                continue
            if block is None:
                reply = b"".join(map(small_reply, requests))
                if whole and len(writes) < 100_000:
                    writes[data] = reply
                conn.sendall(reply)
                continue
            for request in requests:  # header, key number, shared block: no 1 MiB copy
                parts = [b"$%d\r\n%08d" % (value_size, int(request[4:])), block]
                while parts:
                    sent = conn.sendmsg(parts)
                    while parts and sent >= len(parts[0]):
                        sent -= len(parts[0])
                        parts.pop(0)
                    if parts and sent:
                        parts[0] = memoryview(parts[0])[sent:]

    return handle


def _tls13_server_context(pem: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(pem)
    return ctx


def make_tlsline_handler(pem: str) -> Callable[[socket.socket], None]:
    ctx = _tls13_server_context(pem)

    def handle(conn: socket.socket) -> None:
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls, tls.makefile("rb") as file:
                tls.sendall(b"OK " + file.readline())
                while tls.recv(4096):
                    pass
        except ssl.SSLError:
            pass

    return handle


def make_starttls_handler(pem: str) -> Callable[[socket.socket], None]:
    ctx = _tls13_server_context(pem)

    def handle(conn: socket.socket) -> None:
        conn.sendall(b"220 bench.invalid ESMTP ready\r\n")
        command = b""  # the client sends nothing more before our answer: no over-read
        while not command.endswith(b"\n"):
            data = conn.recv(4096)
            if not data:
                return
            command += data
        if command.strip().upper() != b"STARTTLS":
            conn.sendall(b"500 expected STARTTLS\r\n")
            return
        conn.sendall(b"220 go ahead\r\n")
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls, tls.makefile("rb") as file:
                while request := file.readline():
                    tls.sendall(b"250 " + request)
        except (ssl.SSLError, OSError):
            pass

    return handle


def make_tls_handler(pem: str) -> Callable[[socket.socket], None]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_cert_chain(pem)

    def handle(conn: socket.socket) -> None:
        try:
            with ctx.wrap_socket(conn, server_side=True) as tls:
                while tls.recv(4096):
                    pass
        except ssl.SSLError:
            pass

    return handle


def run_waiters() -> None:
    listener = listen()
    conns: list[socket.socket] = []
    lock = threading.Lock()
    expected = [0]

    def check_ready() -> None:  # with lock held
        if expected[0] and len(conns) >= expected[0]:
            expected[0] = 0
            say("READY")

    def accept_loop() -> None:
        while True:
            conn, _ = listener.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with lock:
                conns.append(conn)
                check_ready()

    threading.Thread(target=accept_loop, daemon=True).start()
    say(f"PORT {listener.getsockname()[1]}")
    payload = line(0)
    for command in sys.stdin:
        word, *args = command.split()
        if word == "EXPECT":
            with lock:
                expected[0] = int(args[0])
                check_ready()
        elif word == "GO":
            with lock:
                for conn in conns:
                    conn.sendall(payload)
            say("SENT")
        elif word == "CLOSE":
            with lock:
                for conn in conns:
                    conn.close()
                conns.clear()
            say("CLOSED")
    os._exit(0)


def run_connector() -> None:
    conns: list[socket.socket] = []
    say("READY")
    for command in sys.stdin:
        word, *args = command.split()
        if word == "CONNECT":
            port, count = int(args[0]), int(args[1])
            for _ in range(count):
                conns.append(socket.create_connection(("127.0.0.1", port)))
            say("READY")
        elif word == "CLOSE":
            for conn in conns:
                conn.close()
            conns.clear()
            say("CLOSED")
    os._exit(0)


def main(argv: list[str]) -> None:
    cpu = os.environ.get("DUONET_BENCH_CPU")
    if cpu is not None:  # before any thread starts: every thread inherits it
        os.sched_setaffinity(0, {int(cpu)})
    mode, args = argv[0], argv[1:]
    if mode == "waiters":
        run_waiters()
    if mode == "connector":
        run_connector()
    handlers: dict[str, Callable[[], Callable[[socket.socket], None]]] = {
        "lines": lambda: make_lines_handler(int(args[0])),
        "bulk": lambda: make_bulk_handler(int(args[0])),
        "echo": lambda: echo,
        "sink": lambda: sink,
        "tls": lambda: make_tls_handler(args[0]),
        "resp": lambda: make_resp_handler(int(args[0]) if args else 0),
        "tlsline": lambda: make_tlsline_handler(args[0]),
        "starttls": lambda: make_starttls_handler(args[0]),
    }
    handle = handlers[mode]()
    listener = listen()
    serve_forever(listener, handle)
    say(f"PORT {listener.getsockname()[1]}")
    for command in sys.stdin:  # until the benchmark closes our stdin (or dies)
        if command.strip() == "CPU":
            say(f"CPU {time.process_time()!r}")
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
