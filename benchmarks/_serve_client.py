"""The client side of the ``serve`` scenario: plain stdlib, run as a separate process.

It never imports duonet or anyio. One thread drives many connections at once through a
``selectors`` loop (cheaper per connection than a thread each, so the servers under test, not
this client, set the pace).

Usage (started by ``benchmarks/serve.py``)::

    python _serve_client.py

It prints ``READY``, then for each stdin command ``RUN port count concurrency`` makes ``count``
connections to 127.0.0.1:port, at most ``concurrency`` at a time, each sending ``ping\\n`` and
reading the answer line, which must be ``PING\\n``, then closing; and answers ``DONE <bad>`` with
the number of connections that failed or got a wrong answer. It exits when its stdin closes.
"""

from __future__ import annotations

import os
import selectors
import socket
import sys

REQUEST = b"ping\n"
ANSWER = b"PING\n"


def run(port: int, count: int, concurrency: int) -> int:
    address = ("127.0.0.1", port)
    selector = selectors.DefaultSelector()
    started = finished = bad = 0

    def start() -> None:
        nonlocal started
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(address)
        selector.register(sock, selectors.EVENT_WRITE, bytearray())
        started += 1

    def finish(sock: socket.socket, ok: bool) -> None:
        nonlocal finished, bad
        selector.unregister(sock)
        sock.close()
        finished += 1
        bad += not ok
        if started < count:
            start()

    for _ in range(min(count, concurrency)):
        start()
    while finished < count:
        events = selector.select(timeout=60)
        if not events:
            raise TimeoutError(f"no server activity for 60 s ({finished}/{count} done)")
        for key, mask in events:
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            answer: bytearray = key.data
            if mask & selectors.EVENT_WRITE:
                try:
                    sock.send(REQUEST)
                except OSError:
                    finish(sock, False)
                    continue
                selector.modify(sock, selectors.EVENT_READ, answer)
                continue
            try:
                chunk = sock.recv(64)
            except OSError:
                finish(sock, False)
                continue
            answer += chunk
            if not chunk or answer.endswith(b"\n"):
                finish(sock, bytes(answer) == ANSWER)
    selector.close()
    return bad


def main() -> None:
    cpu = os.environ.get("DUONET_BENCH_CPU")
    if cpu is not None:
        os.sched_setaffinity(0, {int(cpu)})
    print("READY", flush=True)
    for command in sys.stdin:
        word, *args = command.split()
        if word == "RUN":
            bad = run(int(args[0]), int(args[1]), int(args[2]))
            print(f"DONE {bad}", flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
