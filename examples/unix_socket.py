"""A Unix stream socket exchange (Nim's tunixsocket test, in duonet), served by ``serve_unix``.

Run: python examples/unix_socket.py
"""

from __future__ import annotations

import os
import socket
import tempfile

import duonet


def handle(conn: duonet.Socket) -> None:
    """The server's side, in a thread of its own."""
    assert conn.recv_line(timeout=5) == b"data sent through the socket"
    conn.send("Hello from server\r\n")
    assert conn.recv_line(timeout=5) == b"bye"
    conn.send("bye\r\n")


def main() -> None:
    folder = tempfile.mkdtemp(prefix="duonet-", dir="/tmp")
    path = os.path.join(folder, "sock")
    try:
        # serve_unix removes the socket file when the server closes, at the end of the with.
        with (
            duonet.serve_unix(handle, path),
            duonet.new_socket(socket.AF_UNIX, socket.SOCK_STREAM, 0) as client,
        ):
            client.connect_unix(path)
            client.send("data sent through the socket\r\n")
            greeting = client.recv_line(timeout=5)
            print(greeting)
            client.send("bye\r\n")
            bye = client.recv_line(timeout=5)
            print(bye)
            assert (greeting, bye) == (b"Hello from server", b"bye"), (greeting, bye)
        assert not os.path.exists(path)
    finally:
        if os.path.exists(path):
            os.unlink(path)
        os.rmdir(folder)


if __name__ == "__main__":
    main()
