"""A line-protocol client with timeouts: a timeout loses nothing.

Run: python examples/line_client.py   (starts its own slow stdlib peer on loopback)
"""

from __future__ import annotations

import socket
import threading
import time

import duonet


def slow_peer(listener: socket.socket) -> None:
    conn, _ = listener.accept()
    with conn:
        conn.sendall(b"220 ready\r\nSTATUS: half a li")
        time.sleep(0.5)  # stall in the middle of a line
        conn.sendall(b"ne, then the rest\r\n")
        conn.recv(100)


def main() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    peer = threading.Thread(target=slow_peer, args=(listener,))
    peer.start()
    with duonet.dial("127.0.0.1", listener.getsockname()[1], timeout=5) as sock:
        print("greeting:", sock.recv_line(timeout=5))
        try:
            sock.recv_line(timeout=0.1)
        except TimeoutError as exc:
            print("timed out:", exc)
        line = sock.recv_line(timeout=5)  # the partial line was kept
        print("status:", line)
        assert line == b"STATUS: half a line, then the rest"
        sock.send(b"QUIT\r\n")
    peer.join(5)
    listener.close()


if __name__ == "__main__":
    main()
