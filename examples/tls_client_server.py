"""A TLS server and a verifying TLS client, with a throwaway CA (needs trustme).

Run: python examples/tls_client_server.py
"""

from __future__ import annotations

import os
import tempfile

import trustme

import duonet


def main() -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    with tempfile.TemporaryDirectory() as folder:
        ca_file = os.path.join(folder, "ca.pem")
        cert_file = os.path.join(folder, "cert.pem")
        key_file = os.path.join(folder, "key.pem")
        ca.cert_pem.write_to_path(ca_file)
        cert.cert_chain_pems[0].write_to_path(cert_file)
        cert.private_key_pem.write_to_path(key_file)

        server_ctx = duonet.new_context(
            verify_mode=duonet.SslCVerifyMode.NONE, cert_file=cert_file, key_file=key_file
        )
        client_ctx = duonet.new_context(ca_file=ca_file)  # verify against our CA only

        def handle(client: duonet.Socket) -> None:  # in a thread, after the TLS handshake
            client.send(b"hello " + client.recv_line(timeout=5) + b"\n")

        with (
            duonet.serve(handle, 0, "127.0.0.1", ssl_context=server_ctx) as server,
            duonet.new_socket() as sock,
        ):
            duonet.wrap_socket(client_ctx, sock)
            sock.connect("localhost", server.port, timeout=5)  # handshake + verification
            sock.send("tls\n")
            reply = sock.recv_line(timeout=5)
            print(reply, "- peer certificates:", len(sock.get_peer_certificates()))
            assert reply == b"hello tls"


if __name__ == "__main__":
    main()
