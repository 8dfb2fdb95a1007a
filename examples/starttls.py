"""STARTTLS: a plain line protocol upgraded to TLS in the middle (needs trustme).

Run: python examples/starttls.py
"""

from __future__ import annotations

import os
import tempfile

import trustme

import duonet
from duonet import SslHandshakeType


def main() -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    with tempfile.TemporaryDirectory() as folder:
        ca_file, cert_file, key_file = (os.path.join(folder, n) for n in ("ca", "cert", "key"))
        ca.cert_pem.write_to_path(ca_file)
        cert.cert_chain_pems[0].write_to_path(cert_file)
        cert.private_key_pem.write_to_path(key_file)
        server_ctx = duonet.new_context(
            verify_mode=duonet.SslCVerifyMode.NONE, cert_file=cert_file, key_file=key_file
        )
        client_ctx = duonet.new_context(ca_file=ca_file)

        def handle(client: duonet.Socket) -> None:  # plain at first: no ssl_context
            client.send(b"220 plain text here\r\n")
            assert client.recv_line(timeout=5) == b"STARTTLS"
            client.send(b"220 go ahead\r\n")
            duonet.wrap_connected_socket(server_ctx, client, SslHandshakeType.SERVER)
            client.send(b"secret: " + client.recv_line(timeout=5) + b"\r\n")

        with (
            duonet.serve(handle, 0, "127.0.0.1") as server,
            duonet.dial("127.0.0.1", server.port, timeout=5) as sock,
        ):
            print(sock.recv_line(timeout=5))
            sock.send(b"STARTTLS\r\n")
            print(sock.recv_line(timeout=5))
            duonet.wrap_connected_socket(client_ctx, sock, SslHandshakeType.CLIENT, "localhost")
            sock.send(b"over TLS\r\n")
            reply = sock.recv_line(timeout=5)
            print(reply)
            assert reply == b"secret: over TLS"


if __name__ == "__main__":
    main()
