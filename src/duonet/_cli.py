"""The ``duonet`` command line: ``demo``, a netcat-like ``connect``/``listen``, ``udp``, ``ip``.

Exit codes follow ``nc``: 0 on success, 1 on any failure (with the reason on stderr).
"""

from __future__ import annotations

import argparse
import io
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import TextIO

from ._blocking import Socket, new_socket
from ._core._tls import wrap_socket
from ._enums import SOBool, SocketFlag
from ._errors import SslError
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
    udp_sub = udp.add_subparsers(dest="action", required=True)
    send = udp_sub.add_parser("send", help="send MESSAGE (empty if left out) to HOST PORT")
    send.add_argument("host")
    send.add_argument("port", type=int)
    send.add_argument("message", nargs="?", default="")
    recv = udp_sub.add_parser("recv", help="bind HOST PORT, print one datagram and its sender")
    recv.add_argument("host")
    recv.add_argument("port", type=int)
    recv.add_argument("--timeout", type=float, default=None, help="seconds to wait")

    ip = sub.add_parser("ip", help="IP address tools")
    ip.add_argument("action", choices=["parse"])
    ip.add_argument("address")
    return parser


#: Bytes (both directions) after which a terminal stderr shows the progress line.
PROGRESS_THRESHOLD = 4 * 1024 * 1024
#: Seconds between two updates of the progress line.
PROGRESS_INTERVAL = 0.2


def _size(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


class _Progress:
    """Bytes sent and received, shown on stderr (only a terminal) once past the threshold."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = sys.stderr if stream is None else stream
        try:
            self._enabled = self._stream.isatty()
        except (AttributeError, ValueError, OSError):
            self._enabled = False
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._last = 0.0
        self._shown = False
        self.sent = 0
        self.received = 0

    def add(self, sent: int = 0, received: int = 0) -> None:
        with self._lock:
            self.sent += sent
            self.received += received
            if not self._enabled or self.sent + self.received <= PROGRESS_THRESHOLD:
                return
            now = time.monotonic()
            if now - self._last < PROGRESS_INTERVAL:
                return
            self._last = now
            self._show(now)

    def _show(self, now: float) -> None:
        rate = (self.sent + self.received) / max(now - self._start, 1e-6)
        line = f"received {_size(self.received)}, sent {_size(self.sent)}, {_size(rate)}/s"
        try:
            self._stream.write(f"\r{line}\x1b[K")
            self._stream.flush()
        except (OSError, ValueError):
            self._enabled = False
            return
        self._shown = True

    def finish(self) -> None:
        """Print the final totals and end the line (only if the line was ever shown)."""
        with self._lock:
            if self._shown:
                self._show(time.monotonic())
                try:
                    self._stream.write("\n")
                    self._stream.flush()
                except (OSError, ValueError):
                    pass
            self._enabled = self._shown = False


def _pump_stdin(sock: Socket, progress: _Progress | None = None) -> None:
    """Send stdin to ``sock`` until EOF, then half-close (the peer sees EOF, like ``nc -N``)."""
    stdin = sys.stdin
    if stdin is None:
        return
    try:
        buffer = stdin.buffer
        # read1: whatever one read gives (a typed line goes out at once), not a full 64 KiB.
        read = buffer.read1 if isinstance(buffer, io.BufferedReader) else buffer.read
        for chunk in iter(lambda: read(65536), b""):
            sock.send(chunk)
            if progress is not None:
                progress.add(sent=len(chunk))
        # Plain TCP: half-close, so the peer sees EOF. TLS: a TCP half-close would break the
        # record stream (peers report "unexpected eof"), so keep reading until the peer closes.
        if not sock.is_ssl():
            sock.aio._sock.shutdown(socket.SHUT_WR)
    except (OSError, ValueError):
        pass  # the connection (or stdin) is gone: the reading side reports or ends


def _relay(sock: Socket, lines: bool, timeout: float | None) -> None:
    """Stdin to ``sock`` (in a thread), ``sock`` to stdout until the peer closes."""
    progress = None if lines else _Progress()
    threading.Thread(target=_pump_stdin, args=(sock, progress), daemon=True).start()
    out = sys.stdout.buffer
    try:
        while True:
            if lines:
                line = sock.recv_line(timeout=timeout)
                if not line:
                    break
                out.write((b"" if line == b"\r\n" else line) + b"\n")
            else:
                data = sock.recv(65536, timeout=timeout)
                if not data:
                    break
                out.write(data)
                assert progress is not None
                progress.add(received=len(data))
            out.flush()
    finally:
        if progress is not None:
            progress.finish()


def _connect(args: argparse.Namespace) -> int:
    # Line mode reads lines from the buffer; raw mode relays whatever each read gives.
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = new_socket(family, buffered=args.lines)
    with sock:
        if args.tls:
            mode = SslCVerifyMode.NONE if args.insecure else SslCVerifyMode.PEER
            wrap_socket(new_context(verify_mode=mode, ca_file=args.ca or ""), sock)
        sock.connect(args.host, args.port, timeout=args.timeout)
        _relay(sock, args.lines, args.timeout)
    return 0


def _listen(args: argparse.Namespace) -> int:
    family = socket.AF_INET6 if ":" in args.address else socket.AF_INET
    if args.tls and not (args.cert and args.key):
        print("duonet: listen --tls needs --cert and --key", file=sys.stderr)
        return 1
    # Echo mode works on lines (buffered); raw mode relays whatever each read gives.
    with new_socket(family, buffered=args.echo) as listener:
        listener.set_sock_opt(SOBool.REUSE_ADDR, True)
        listener.bind_addr(args.port, args.address)
        if args.tls:
            wrap_socket(
                new_context(
                    verify_mode=SslCVerifyMode.NONE, cert_file=args.cert, key_file=args.key
                ),
                listener,
            )
        listener.listen()
        print(f"listening on {args.address}:{listener.get_local_addr()[1]}", file=sys.stderr)
        sys.stderr.flush()
        # No SAFE_DISCONN: a client that fails its handshake or resets is reported (one line on
        # stderr) instead of being skipped in silence, and the listener goes on serving.
        loud = SocketFlag(0)
        while True:
            try:
                client, address = listener.accept_addr(flags=loud)
            except (SslError, ConnectionError) as exc:
                print(f"duonet: {_reason(exc)}", file=sys.stderr)
                continue
            print(f"connection from {address}", file=sys.stderr)
            sys.stderr.flush()
            with client:
                if not args.echo:
                    _relay(client, False, None)
                    return 0
                try:
                    while line := client.recv_line(flags=loud):
                        client.send((b"" if line == b"\r\n" else line) + b"\n", flags=loud)
                except OSError as exc:  # one client's failure does not stop the server
                    print(f"duonet: {_reason(exc)}", file=sys.stderr)


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
        print(f"duonet: {_reason(exc)}", file=sys.stderr)
        return 1


def _reason(exc: BaseException) -> str:
    """One line saying what went wrong: ``Connection refused (connecting to ...)``, the TLS
    reason (``certificate verify failed: ...``), ``... timed out after 0.3 s ...``."""
    if isinstance(exc, OSError) and not isinstance(exc, SslError):
        text = exc.strerror if isinstance(exc.strerror, str) and exc.strerror else str(exc)
    else:
        text = str(exc)
    text = " ".join(text.split()) or type(exc).__name__
    if isinstance(exc, TimeoutError) and "timed out" not in text:
        text = f"timed out: {text}"
    return text
