"""UDP datagrams: send_to / recv_from, with a timeout that loses no datagram.

Run: python examples/udp.py
"""

from __future__ import annotations

import socket

import duonet


def main() -> None:
    udp = (socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
    with duonet.new_socket(*udp) as server, duonet.new_socket(*udp) as client:
        server.bind_addr(0, "127.0.0.1")
        port = server.get_local_addr()[1]
        try:
            server.recv_from(100, timeout=0.05)
        except TimeoutError:
            print("no datagram yet")
        sent = client.send_to("localhost", port, b"ping")
        data, host, sender_port = server.recv_from(100, timeout=5)
        print(f"{data!r} ({sent} bytes) from {host}:{sender_port}")
        server.send_to(host, sender_port, b"pong")
        reply = client.recv_from(100, timeout=5)[0]
        print(reply)
        assert (data, reply) == (b"ping", b"pong")


if __name__ == "__main__":
    main()
