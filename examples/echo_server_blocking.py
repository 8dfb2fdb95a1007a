"""A line-echo server with the blocking API: ``duonet.serve``, a thread per client.

Run: python examples/echo_server_blocking.py [PORT]   (then: duonet connect 127.0.0.1 PORT --lines)
With --selftest it serves one client of its own and exits (the test suite runs it that way).
"""

from __future__ import annotations

import sys

import duonet


def handle(client: duonet.Socket) -> None:
    """Runs in a thread of its own for each client; serve closes the client when it returns."""
    host, port = client.get_peer_addr()
    print(f"client from {host}:{port}", flush=True)
    for line in client.lines(timeout=60):  # ends when the client closes
        if line == b"\r\n":  # an empty line
            line = b""
        client.send(line + b"\n")


def main() -> None:
    selftest = "--selftest" in sys.argv
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    with duonet.serve(handle, int(args[0]) if args else 0, "127.0.0.1") as server:
        print(f"echo server on 127.0.0.1:{server.port}", flush=True)
        if not selftest:
            try:
                server.serve_forever()  # until Ctrl-C, which closes the server
            except KeyboardInterrupt:
                pass
            return
        with duonet.dial("127.0.0.1", server.port, timeout=5) as client:
            client.send("hello\n\nbye\n")
            replies = [client.recv_line(timeout=5) for _ in range(3)]
    print(replies)
    assert replies == [b"hello", b"\r\n", b"bye"], replies


if __name__ == "__main__":
    main()
