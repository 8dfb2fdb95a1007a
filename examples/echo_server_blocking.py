"""A line-echo server with the blocking API: one thread per client.

Run: python examples/echo_server_blocking.py [PORT]   (then: duonet connect 127.0.0.1 PORT --lines)
With --selftest it serves one client of its own and exits (the test suite runs it that way).
"""

from __future__ import annotations

import sys
import threading

import duonet


def handle(client: duonet.Socket) -> None:
    with client:
        while line := client.recv_line(timeout=60):  # b"" means the client closed
            if line == b"\r\n":  # an empty line
                line = b""
            client.send(line + b"\n")


def serve(listener: duonet.Socket, clients: int | None = None) -> None:
    served = 0
    threads = []
    while clients is None or served < clients:
        client, address = listener.accept_addr()
        print(f"client from {address}", flush=True)
        thread = threading.Thread(target=handle, args=(client,))
        thread.start()
        threads.append(thread)
        served += 1
    for thread in threads:
        thread.join()


def main() -> None:
    selftest = "--selftest" in sys.argv
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    with duonet.new_socket() as listener:
        listener.set_sock_opt(duonet.SOBool.REUSE_ADDR, True)
        listener.bind_addr(int(args[0]) if args else 0, "127.0.0.1")
        listener.listen()
        port = listener.get_local_addr()[1]
        print(f"echo server on 127.0.0.1:{port}", flush=True)
        if not selftest:
            serve(listener)
            return
        server = threading.Thread(target=serve, args=(listener, 1))
        server.start()
        with duonet.dial("127.0.0.1", port, timeout=5) as client:
            client.send("hello\n\nbye\n")
            replies = [client.recv_line(timeout=5) for _ in range(3)]
        server.join(10)
        print(replies)
        assert replies == [b"hello", b"\r\n", b"bye"], replies


if __name__ == "__main__":
    main()
