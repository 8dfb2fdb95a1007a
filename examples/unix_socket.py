"""A Unix stream socket exchange (Nim's tunixsocket test, in duonet).

Run: python examples/unix_socket.py
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading

import duonet


def main() -> None:
    folder = tempfile.mkdtemp(prefix="duonet-", dir="/tmp")
    path = os.path.join(folder, "sock")
    try:
        with duonet.new_socket(socket.AF_UNIX, socket.SOCK_STREAM, 0) as listener:
            listener.bind_unix(path)
            listener.listen()

            def serve() -> None:
                with listener.accept(timeout=10) as conn:
                    assert conn.recv_line(timeout=5) == b"data sent through the socket"
                    conn.send("Hello from server\r\n")
                    assert conn.recv_line(timeout=5) == b"bye"
                    conn.send("bye\r\n")

            server = threading.Thread(target=serve)
            server.start()
            with duonet.new_socket(socket.AF_UNIX, socket.SOCK_STREAM, 0) as client:
                client.connect_unix(path)
                client.send("data sent through the socket\r\n")
                print(client.recv_line(timeout=5))
                client.send("bye\r\n")
                print(client.recv_line(timeout=5))
            server.join(10)
    finally:
        if os.path.exists(path):
            os.unlink(path)
        os.rmdir(folder)


if __name__ == "__main__":
    main()
