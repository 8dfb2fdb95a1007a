"""The load generator of the ``load`` scenario: plain stdlib, run as a separate process.

It never imports duonet or anyio. One thread drives every connection through a ``selectors``
loop (non-blocking sockets, and non-blocking TLS for ``tls``), so the server under test, not this
client, sets the pace.

Usage (started by ``benchmarks/load.py``)::

    python _load_client.py [CAFILE]

It prints ``READY``, then for each stdin command ``RUN port connections rounds tls`` opens
``connections`` connections to 127.0.0.1:port at once (TLS verified against CAFILE when ``tls`` is
1), and on each makes ``rounds`` round trips: it sends ``ping-<n>\\n`` and reads the answer, which
must be ``PING-<n>\\n``, before the next one; then it closes. It answers ``DONE <bad>`` with the
number of connections that failed or got a wrong answer. It exits when its stdin closes.
"""

from __future__ import annotations

import os
import selectors
import socket
import ssl
import sys

WANT = (ssl.SSLWantReadError, ssl.SSLWantWriteError)


class Conn:
    """One connection's state: handshaking, sending a request, or reading its answer."""

    __slots__ = ("answer", "done_rounds", "handshaken", "request", "sock", "wants_write")

    def __init__(self, sock: socket.socket, tls: bool) -> None:
        self.sock = sock
        self.handshaken = not tls
        self.done_rounds = 0
        self.answer = b""
        self.request = b""
        self.wants_write = True


def run(port: int, connections: int, rounds: int, ctx: ssl.SSLContext | None) -> int:
    selector = selectors.DefaultSelector()
    open_conns = bad = 0

    def request(conn: Conn) -> bytes:
        return b"ping-%08d\n" % (conn.done_rounds,)

    def finish(conn: Conn, ok: bool) -> None:
        nonlocal open_conns, bad
        selector.unregister(conn.sock)
        conn.sock.close()
        open_conns -= 1
        bad += not ok

    for _ in range(connections):
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        raw.setblocking(False)
        raw.connect_ex(("127.0.0.1", port))
        sock: socket.socket = raw
        if ctx is not None:
            sock = ctx.wrap_socket(raw, server_hostname="127.0.0.1", do_handshake_on_connect=False)
        conn = Conn(sock, ctx is not None)
        conn.request = request(conn)
        selector.register(sock, selectors.EVENT_WRITE, conn)
        open_conns += 1

    while open_conns:
        events = selector.select(timeout=60)
        if not events:
            raise TimeoutError(f"no server activity for 60 s ({open_conns} connections open)")
        for key, _mask in events:
            conn = key.data
            sock = conn.sock
            try:
                if not conn.handshaken:
                    try:
                        sock.do_handshake()  # type: ignore[attr-defined]
                    except ssl.SSLWantReadError:
                        selector.modify(sock, selectors.EVENT_READ, conn)
                        continue
                    except ssl.SSLWantWriteError:
                        selector.modify(sock, selectors.EVENT_WRITE, conn)
                        continue
                    conn.handshaken = True
                    selector.modify(sock, selectors.EVENT_WRITE, conn)
                    continue
                if conn.wants_write:
                    try:
                        sent = sock.send(conn.request)
                    except WANT:
                        continue
                    conn.request = conn.request[sent:]
                    if not conn.request:
                        conn.wants_write = False
                        selector.modify(sock, selectors.EVENT_READ, conn)
                    continue
                while True:  # a TLS record may hold more than one read gives
                    try:
                        chunk = sock.recv(256)
                    except WANT:
                        break
                    if not chunk:
                        finish(conn, False)
                        break
                    conn.answer += chunk
                    if conn.answer.endswith(b"\n"):
                        expected = b"PING-%08d\n" % (conn.done_rounds,)
                        if conn.answer != expected:
                            finish(conn, False)
                            break
                        conn.done_rounds += 1
                        conn.answer = b""
                        if conn.done_rounds == rounds:
                            finish(conn, True)
                            break
                        conn.request = request(conn)
                        conn.wants_write = True
                        selector.modify(sock, selectors.EVENT_WRITE, conn)
                        break
                    if not isinstance(sock, ssl.SSLSocket) or not sock.pending():
                        break
            except OSError:
                finish(conn, False)
    selector.close()
    return bad


def main() -> None:
    cpu = os.environ.get("DUONET_BENCH_CPU")
    if cpu is not None:
        os.sched_setaffinity(0, {int(cpu)})
    ctx = None
    if len(sys.argv) > 1:
        ctx = ssl.create_default_context(cafile=sys.argv[1])
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    print("READY", flush=True)
    for command in sys.stdin:
        word, *args = command.split()
        if word == "RUN":
            port, connections, rounds, tls = (int(a) for a in args)
            bad = run(port, connections, rounds, ctx if tls else None)
            print(f"DONE {bad}", flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
