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
``connector``
    a client, not a server: ``CONNECT port n`` opens n connections to 127.0.0.1:port and keeps
    them open (answers ``READY``); ``CLOSE`` closes them (``CLOSED``).
"""

from __future__ import annotations

import os
import socket
import ssl
import sys
import threading
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
    }
    handle = handlers[mode]()
    listener = listen()
    serve_forever(listener, handle)
    say(f"PORT {listener.getsockname()[1]}")
    sys.stdin.read()  # until the benchmark closes our stdin (or dies)
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
