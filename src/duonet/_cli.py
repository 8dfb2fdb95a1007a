"""The ``duonet`` command line: ``demo``, a netcat-like ``connect``/``listen``, ``udp``, ``ip``.

Exit codes follow ``nc``: 0 on success, 1 on any failure (with the reason on stderr).
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
from collections.abc import Sequence

from ._blocking import Socket, new_socket
from ._core._tls import wrap_socket
from ._enums import SOBool
from ._ip import parse_ip_address
from ._tls import SslCVerifyMode, new_context

__all__ = ("main",)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="duonet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("demo", help="run the loopback TLS demo")

    connect = sub.add_parser(
        "connect", help="connect to HOST PORT: stdin to socket, socket to stdout"
    )
    connect.add_argument("host")
    connect.add_argument("port", type=int)
    connect.add_argument("--tls", action="store_true", help="use TLS (verified by default)")
    connect.add_argument("--ca", help="trust this CA file instead of certifi's bundle")
    connect.add_argument("--insecure", action="store_true", help="TLS without any verification")
    connect.add_argument("--timeout", type=float, default=None, help="seconds for connect/reads")
    connect.add_argument("--lines", action="store_true", help="line mode: print each line read")

    listen = sub.add_parser("listen", help="accept one client on PORT (or echo every client)")
    listen.add_argument("port", type=int)
    listen.add_argument("--address", default="127.0.0.1")
    listen.add_argument("--tls", action="store_true")
    listen.add_argument("--cert")
    listen.add_argument("--key")
    listen.add_argument("--echo", action="store_true", help="echo lines back, serve many clients")

    udp = sub.add_parser("udp", help="send or receive one UDP datagram")
    udp.add_argument("action", choices=["send", "recv"])
    udp.add_argument("host")
    udp.add_argument("port", type=int)
    udp.add_argument("message", nargs="?", default="")
    udp.add_argument("--timeout", type=float, default=None)

    ip = sub.add_parser("ip", help="IP address tools")
    ip.add_argument("action", choices=["parse"])
    ip.add_argument("address")
    return parser


def _pump_stdin(sock: Socket) -> None:
    for chunk in iter(lambda: sys.stdin.buffer.readline(), b""):
        sock.send(chunk)
    try:
        sock.aio._sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass


def _connect(args: argparse.Namespace) -> int:
    # Line mode reads lines from the buffer; raw mode relays whatever each read gives.
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = new_socket(family, buffered=args.lines)
    with sock:
        if args.tls:
            mode = SslCVerifyMode.NONE if args.insecure else SslCVerifyMode.PEER
            wrap_socket(new_context(verify_mode=mode, ca_file=args.ca or ""), sock)
        sock.connect(args.host, args.port, timeout=args.timeout)
        threading.Thread(target=_pump_stdin, args=(sock,), daemon=True).start()
        out = sys.stdout.buffer
        while True:
            if args.lines:
                line = sock.recv_line(timeout=args.timeout)
                if not line:
                    break
                out.write((b"" if line == b"\r\n" else line) + b"\n")
            else:
                data = sock.recv(65536, timeout=args.timeout)
                if not data:
                    break
                out.write(data)
            out.flush()
    return 0


def _listen(args: argparse.Namespace) -> int:
    family = socket.AF_INET6 if ":" in args.address else socket.AF_INET
    with new_socket(family) as listener:
        listener.set_sock_opt(SOBool.REUSE_ADDR, True)
        listener.bind_addr(args.port, args.address)
        if args.tls:
            if not (args.cert and args.key):
                raise SystemExit("duonet listen --tls needs --cert and --key")
            wrap_socket(
                new_context(
                    verify_mode=SslCVerifyMode.NONE, cert_file=args.cert, key_file=args.key
                ),
                listener,
            )
        listener.listen()
        print(f"listening on {args.address}:{listener.get_local_addr()[1]}", file=sys.stderr)
        while True:
            client, address = listener.accept_addr()
            print(f"connection from {address}", file=sys.stderr)
            with client:
                while line := client.recv_line():
                    text = b"" if line == b"\r\n" else line
                    if args.echo:
                        client.send(text + b"\n")
                    else:
                        sys.stdout.buffer.write(text + b"\n")
                        sys.stdout.flush()
            if not args.echo:
                return 0


def _udp(args: argparse.Namespace) -> int:
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    with new_socket(family, socket.SOCK_DGRAM, socket.IPPROTO_UDP) as sock:
        if args.action == "send":
            sent = sock.send_to(args.host, args.port, args.message)
            print(f"sent {sent} bytes to {args.host}:{args.port}", file=sys.stderr)
        else:
            sock.bind_addr(args.port, args.host)
            data, host, port = sock.recv_from(65535, timeout=args.timeout)
            sys.stdout.buffer.write(data + b"\n")
            print(f"from {host}:{port}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``duonet`` and ``python -m duonet``."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from ._demo import main as demo

            return demo()
        if args.command == "ip":
            address = parse_ip_address(args.address)
            print(f"{address} ({address.family.name})")
            return 0
        if args.command == "connect":
            return _connect(args)
        if args.command == "listen":
            return _listen(args)
        return _udp(args)
    except KeyboardInterrupt:
        return 130
    except (OSError, ValueError) as exc:
        print(f"duonet: {exc}", file=sys.stderr)
        return 1
