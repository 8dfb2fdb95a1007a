"""The duonet command line: demo, a netcat-like connect/listen/send, udp send/recv, ip parse.

Exit status follows nc: 0 on success, 1 on a failure (with the reason on standard error), 2 on a
usage error (argparse's), 130 on Ctrl-C. Help texts are plain text: argparse prints them as they
are, so they hold no reST markup.
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import signal
import socket
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import BinaryIO, TextIO

from ._blocking import Socket, new_socket
from ._core._tls import wrap_socket
from ._enums import SOBool, SocketFlag
from ._errors import SocketClosedError, SslError
from ._ip import parse_ip_address
from ._server import serve
from ._sslcontext import SslCVerifyMode, new_context

__all__ = ("main",)

DESCRIPTION = """\
duonet: Nim's std/net for Python, blocking and async. This command is a small netcat built on
its blocking API: connect to a server or listen for one client and relay standard input and
output, serve many clients with a line echo, send a file, send or receive one UDP datagram,
parse an IP address, or run the demo.

exit status: 0 on success, 1 on a failure (the reason is printed on standard error),
2 on a usage error, 130 on Ctrl-C"""

DEMO = """\
A TLS line-echo server on 127.0.0.1 serves a blocking, an asyncio and a trio client, then a
timeout shows that no received byte is lost. Nothing leaves the machine."""

CONNECT = """\
Connect to HOST PORT and relay both ways, like nc: standard input to the socket, the socket to
standard output, until the peer closes. At the end of standard input the connection is
half-closed (the peer reads end-of-file, as with nc -N; on TLS after a close_notify) and the
output goes on until the peer closes. With -q SECS the command closes the connection and exits
at most SECS seconds after the end of standard input, even if the peer keeps the connection
open."""

LISTEN = """\
Listen on PORT. Without --echo: accept one client, relay both ways as connect does, and exit when
that client closes. With --echo: serve many clients at once (duonet's serve, a thread per
client), sending each line back to its client, until Ctrl-C. A client that fails (a failed TLS
handshake, a reset) is reported on standard error with its address and the listener goes on."""

SEND = """\
Send FILE to HOST PORT (zero copy on plain TCP: the kernel's sendfile), half-close the
connection (the peer reads end-of-file, as with nc -N < FILE; on TLS after a close_notify), then
copy whatever the peer answers to standard output until it closes."""

UDP_SEND = """\
Send one UDP datagram to HOST PORT: MESSAGE, or, when MESSAGE is left out, everything on standard
input (read to its end) as one datagram."""

UDP_RECV = """\
Bind HOST PORT, wait for one UDP datagram, print it on standard output and its sender on
standard error."""

IP_PARSE = """\
Parse ADDRESS strictly (IPv4: exactly four decimal parts 0-255, no leading zeros; IPv6: RFC 4291,
no zone, brackets or port) and print its canonical form (RFC 5952) and family, e.g.
"2001:db8::1 (IPV6)". An invalid address prints the reason and exits 1."""


def _wrap(text: str) -> str:
    """Each paragraph filled to 78 columns: argparse prints descriptions as they are."""
    return "\n\n".join(textwrap.fill(" ".join(p.split()), 78) for p in text.split("\n\n"))


def _port(text: str) -> int:
    """An argparse type: a port number 0-65535 (argparse turns the error into a usage error)."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535, got {value}")
    return value


def _seconds(text: str) -> float:
    """An argparse type: a finite number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"seconds must be a finite number >= 0, got {text!r}")
    return value


def _count(text: str) -> int:
    """An argparse type: a whole number, 1 or more."""
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    """The ``duonet`` command's parser (with every subcommand)."""
    return _parsers()[0]


def _parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top parser, and the parsers of the commands whose options :func:`_check` checks."""
    plain = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="duonet", description=_wrap(DESCRIPTION), formatter_class=plain
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", help="duonet COMMAND --help tells more"
    )
    sub.add_parser(
        "demo",
        help="run the loopback TLS demo (needs the demo extra: trustme and trio)",
        description=_wrap(DEMO),
    )

    connect = sub.add_parser(
        "connect",
        help="connect to HOST PORT and relay standard input and output (like nc)",
        description=_wrap(CONNECT),
        formatter_class=plain,
    )
    connect.add_argument("host", metavar="HOST", help="host name or IP address of the server")
    connect.add_argument("port", metavar="PORT", type=_port, help="TCP port of the server, 0-65535")
    _tls_client_options(connect)
    connect.add_argument(
        "--timeout",
        metavar="SECS",
        type=_seconds,
        help="seconds allowed for connecting (TLS handshake included) and for each read "
        "(default: no limit)",
    )
    connect.add_argument(
        "--lines",
        action="store_true",
        help="line mode: read lines (ended by \\n, \\r\\n or a lone \\r) and print each on a "
        "line of its own (default: relay bytes as they come)",
    )
    connect.add_argument(
        "-q",
        "--quit-after",
        metavar="SECS",
        type=_seconds,
        help="after the end of standard input, close the connection and exit once the peer "
        "closes or SECS seconds have passed, whichever comes first; 0 closes at once "
        "(default: wait until the peer closes)",
    )

    listen = sub.add_parser(
        "listen",
        help="listen on PORT: relay with one client, or echo lines to many (--echo)",
        description=_wrap(LISTEN),
        formatter_class=plain,
    )
    listen.add_argument(
        "port",
        metavar="PORT",
        type=_port,
        help="TCP port to listen on, 0-65535 (0: a free port, shown on standard error)",
    )
    listen.add_argument(
        "--address",
        metavar="ADDR",
        default="127.0.0.1",
        help="address to listen on; 0.0.0.0 or :: for every address (default: 127.0.0.1)",
    )
    listen.add_argument(
        "--tls", action="store_true", help="use TLS; needs --cert and --key (default: plain TCP)"
    )
    listen.add_argument(
        "--cert", metavar="FILE", help="with --tls (required): the certificate chain (PEM)"
    )
    listen.add_argument(
        "--key", metavar="FILE", help="with --tls (required): its private key (PEM)"
    )
    listen.add_argument(
        "--echo",
        action="store_true",
        help="echo each line back, serving many clients at once until Ctrl-C "
        "(default: relay with one client, then exit)",
    )
    listen.add_argument(
        "--max-clients",
        metavar="N",
        type=_count,
        help="with --echo: serve at most N clients at once; more wait until one leaves "
        "(default: 1024)",
    )

    send_file = sub.add_parser(
        "send",
        help="send FILE to HOST PORT, then print what the peer answers (like nc -N < FILE)",
        description=_wrap(SEND),
        formatter_class=plain,
    )
    send_file.add_argument("file", metavar="FILE", help="the file to send")
    send_file.add_argument("host", metavar="HOST", help="host name or IP address of the server")
    send_file.add_argument(
        "port", metavar="PORT", type=_port, help="TCP port of the server, 0-65535"
    )
    _tls_client_options(send_file)
    send_file.add_argument(
        "--timeout",
        metavar="SECS",
        type=_seconds,
        help="seconds allowed for connecting (TLS handshake included), for sending each MiB "
        "of the file and for each read of the answer (default: no limit)",
    )

    udp = sub.add_parser(
        "udp",
        help="send or receive one UDP datagram",
        description="Send (udp send) or receive (udp recv) one UDP datagram.",
    )
    udp_sub = udp.add_subparsers(
        dest="action", required=True, metavar="ACTION", help="send or recv"
    )
    send = udp_sub.add_parser(
        "send",
        help="send one datagram to HOST PORT",
        description=_wrap(UDP_SEND),
        formatter_class=plain,
    )
    send.add_argument("host", metavar="HOST", help="host name or IP address to send to")
    send.add_argument("port", metavar="PORT", type=_port, help="UDP port to send to, 0-65535")
    send.add_argument(
        "message",
        metavar="MESSAGE",
        nargs="?",
        help="the datagram, as text (default: standard input, read to its end)",
    )
    recv = udp_sub.add_parser(
        "recv",
        help="bind HOST PORT and print one datagram and its sender",
        description=_wrap(UDP_RECV),
        formatter_class=plain,
    )
    recv.add_argument(
        "host", metavar="HOST", help="address to bind, e.g. 127.0.0.1, or 0.0.0.0 for all"
    )
    recv.add_argument("port", metavar="PORT", type=_port, help="UDP port to bind, 0-65535")
    recv.add_argument(
        "--timeout",
        metavar="SECS",
        type=_seconds,
        help="seconds to wait for the datagram (default: no limit)",
    )

    ip = sub.add_parser(
        "ip",
        help="IP address tools: parse an address",
        description="IP address tools (duonet's parse_ip_address).",
    )
    ip_sub = ip.add_subparsers(dest="action", required=True, metavar="ACTION", help="parse")
    parse = ip_sub.add_parser(
        "parse",
        help="check an address strictly and print its canonical form and family",
        description=_wrap(IP_PARSE),
        formatter_class=plain,
    )
    parse.add_argument("address", metavar="ADDRESS", help="an IPv4 or IPv6 address, as text")
    return parser, {"connect": connect, "listen": listen, "send": send_file}


def _tls_client_options(parser: argparse.ArgumentParser) -> None:
    """``--tls``, ``--ca`` and ``--insecure``, as ``connect`` and ``send`` take them."""
    parser.add_argument(
        "--tls",
        action="store_true",
        help="use TLS, verifying the certificate and host name against certifi's CAs "
        "(default: plain TCP)",
    )
    parser.add_argument(
        "--ca",
        metavar="FILE",
        help="with --tls: trust the CAs in this PEM file (default: certifi's CAs)",
    )
    parser.add_argument(
        "--insecure", action="store_true", help="with --tls: verify nothing (no CA, no host name)"
    )


def _check(commands: dict[str, argparse.ArgumentParser], args: argparse.Namespace) -> None:
    """Refuse options that would do nothing: a usage error (exit status 2), as argparse does."""
    command = commands.get(args.command)
    if command is None:
        return
    if args.command in ("connect", "send"):
        if not args.tls:
            for given, flag in ((args.ca, "--ca"), (args.insecure, "--insecure")):
                if given:
                    command.error(f"{flag} needs --tls")
        if args.ca and args.insecure:
            command.error("--ca and --insecure contradict each other (--insecure trusts anyone)")
    if args.command == "listen":
        if not args.tls:
            for given, flag in ((args.cert, "--cert"), (args.key, "--key")):
                if given:
                    command.error(f"{flag} needs --tls")
        elif not (args.cert and args.key):
            command.error("--tls needs --cert FILE and --key FILE")
        if args.max_clients is not None and not args.echo:
            command.error("--max-clients needs --echo (without it, listen serves one client)")


class _Failure(Exception):
    """A failure already worded for the command line (printed after ``duonet: ``)."""


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


class _Session:
    """One relay's shared state: the pump thread and the reading loop tell each other they ended."""

    def __init__(self, sock: Socket, quit_after: float | None) -> None:
        self.sock = sock
        self.quit_after = quit_after
        self.peer_closed = threading.Event()
        self.quitting = threading.Event()


def _pump_stdin(session: _Session, progress: _Progress | None = None) -> None:
    """Send stdin to the socket until EOF, then half-close (the peer sees EOF, like ``nc -N``).

    With ``quit_after`` (``-q``), close the socket once that many seconds have passed after EOF
    without the peer closing: the reading loop, blocked in ``recv``, then ends.
    """
    sock = session.sock
    stdin = sys.stdin
    try:
        if stdin is not None:
            buffer = stdin.buffer
            # read1: whatever one read gives (a typed line goes out at once), not a full 64 KiB.
            read = buffer.read1 if isinstance(buffer, io.BufferedReader) else buffer.read
            for chunk in iter(lambda: read(65536), b""):
                sock.send(chunk)
                if progress is not None:
                    progress.add(sent=len(chunk))
        sock.send_eof()  # the peer reads EOF (after a close_notify on TLS), as with nc -N
    except (OSError, ValueError):
        pass  # the connection (or stdin) is gone: the reading side reports or ends
    if session.quit_after is not None and not session.peer_closed.wait(session.quit_after):
        session.quitting.set()
        sock.close()  # wakes the reading loop up with SocketClosedError


def _relay(session: _Session, lines: bool, timeout: float | None, peer: str) -> None:
    """Stdin to the socket (in a thread), the socket to stdout until the peer closes."""
    sock = session.sock
    progress = None if lines else _Progress()
    threading.Thread(target=_pump_stdin, args=(session, progress), daemon=True).start()
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
    except SocketClosedError:
        if not session.quitting.is_set():
            raise
    except TimeoutError:
        assert timeout is not None
        raise _Failure(f"nothing received from {peer} for {timeout:g} s (--timeout)") from None
    finally:
        session.peer_closed.set()
        if progress is not None:
            progress.finish()


def _endpoint(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@contextmanager
def _dial(args: argparse.Namespace, buffered: bool) -> Iterator[tuple[Socket, str]]:
    """The connected client socket of ``connect`` and ``send`` (TLS as the options say), and
    the server's address as messages name it; closed on exit."""
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    peer = _endpoint(args.host, args.port)
    with new_socket(family, buffered=buffered) as sock:
        if args.tls:
            mode = SslCVerifyMode.NONE if args.insecure else SslCVerifyMode.PEER
            wrap_socket(new_context(verify_mode=mode, ca_file=args.ca or ""), sock)
        try:
            sock.connect(args.host, args.port, timeout=args.timeout)
        except TimeoutError:
            what = "connect (with the TLS handshake)" if args.tls else "connect"
            raise _Failure(
                f"could not {what} to {peer} within {args.timeout:g} s (--timeout)"
            ) from None
        yield sock, peer


def _connect(args: argparse.Namespace) -> int:
    # Line mode reads lines from the buffer; raw mode relays whatever each read gives.
    with _dial(args, buffered=args.lines) as (sock, peer):
        _relay(_Session(sock, args.quit_after), args.lines, args.timeout, peer)
    return 0


#: Bytes per ``send_file`` call of ``duonet send``: the progress line moves between two calls.
SEND_SLICE = 1024 * 1024


def _send_slices(sock: Socket, file: BinaryIO, timeout: float | None) -> Iterator[int]:
    """Send ``file`` in slices of :data:`SEND_SLICE` bytes, yielding each slice's size, so
    that the progress line moves between two; ``timeout`` bounds each slice."""
    if file.seekable():  # a regular file: send_file, zero copy on plain TCP
        offset = 0
        while True:
            count = sock.send_file(file, offset, SEND_SLICE, timeout=timeout)
            offset += count  # offset is absolute in the file
            if count:
                yield count
            if count < SEND_SLICE:  # the end of the file
                return
    # A pipe (/dev/stdin, a FIFO): no offset to give send_file; read and send what comes.
    read = file.read1 if isinstance(file, io.BufferedReader) else file.read
    while chunk := read(SEND_SLICE):
        sock.send(chunk, flags=SocketFlag(0), timeout=timeout)
        yield len(chunk)


def _send(args: argparse.Namespace) -> int:
    """``duonet send``: the file (zero copy on plain TCP), a half-close, then the answer."""
    try:
        file: BinaryIO = open(args.file, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise _Failure(f"cannot read {args.file}: {_reason(exc)}") from None
    sent = 0
    with file, _dial(args, buffered=False) as (sock, peer):
        progress = _Progress()
        try:
            try:
                for count in _send_slices(sock, file, args.timeout):
                    sent += count
                    progress.add(sent=count)
            except TimeoutError:
                raise _Failure(
                    f"sending {args.file} to {peer} stalled: less than 1 MiB went out in "
                    f"{args.timeout:g} s (--timeout)"
                ) from None
            sock.send_eof()  # the peer reads EOF (after a close_notify on TLS), as with nc -N
            out = sys.stdout.buffer
            while True:
                try:
                    data = sock.recv(65536, timeout=args.timeout)
                except TimeoutError:
                    raise _Failure(
                        f"nothing received from {peer} for {args.timeout:g} s (--timeout)"
                    ) from None
                if not data:
                    break
                out.write(data)
                out.flush()
                progress.add(received=len(data))
        finally:
            progress.finish()
    print(f"sent {sent} bytes of {args.file} to {peer}", file=sys.stderr)
    return 0


_report_lock = threading.Lock()


def _report(text: str) -> None:
    """One line on stderr, whole even when many client threads report at once."""
    with _report_lock:
        try:
            sys.stderr.write(text + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass


class _ServerReport(logging.Handler):
    """The server's records (a failed TLS handshake, ...) as the command's one-line reports.

    ``serve`` logs on the ``"duonet"`` logger; this handler prints each record as the command
    words its failures: ``duonet: REASON``, the client's address in it.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            args = record.args if isinstance(record.args, tuple) else ()
            exc = next((a for a in args if isinstance(a, BaseException)), None)
            if exc is not None:  # a failed handshake: its reason names the client
                text = _reason(exc)
            elif record.exc_info and record.exc_info[1] is not None:  # a handler that raised
                failure = record.exc_info[1]
                text = f"{record.getMessage()}: {type(failure).__name__}: {_reason(failure)}"
            else:
                text = record.getMessage()
            peer = getattr(record, "peer", None)
            if isinstance(peer, str) and peer not in text:
                text = f"{peer}: {text}"
            _report(f"duonet: {text}")
        except Exception:  # pragma: no cover - logging's own rule: never raise from emit
            self.handleError(record)


def _echo_server(args: argparse.Namespace) -> int:
    """``listen --echo``: duonet's ``serve``, a thread per client, until Ctrl-C."""
    # No SAFE_DISCONN: a client that resets or ends TLS without close_notify is reported (one
    # line on stderr) instead of being let go in silence; the server goes on serving.
    loud = SocketFlag(0)

    def echo(client: Socket) -> None:
        peer = _endpoint(*client.get_peer_addr())
        _report(f"connection from {peer}")
        try:
            for line in client.lines(flags=loud):
                client.send((b"" if line == b"\r\n" else line) + b"\n", flags=loud)
        except SocketClosedError:
            pass  # Ctrl-C: the server closed this client
        except OSError as exc:
            text = _reason(exc)
            _report(f"duonet: {text}" if peer in text else f"duonet: {peer}: {text}")

    ctx = None
    if args.tls:
        ctx = new_context(verify_mode=SslCVerifyMode.NONE, cert_file=args.cert, key_file=args.key)
    max_clients = 1024 if args.max_clients is None else args.max_clients
    log, report = logging.getLogger("duonet"), _ServerReport()
    log.addHandler(report)
    propagate, log.propagate = log.propagate, False
    try:
        with serve(
            echo, args.port, args.address, ssl_context=ctx, max_clients=max_clients
        ) as server:
            _report(f"listening on {args.address}:{server.port}")

            def interrupted(signum: int, frame: object) -> None:
                # serve_forever's close waits up to 5 s for the handlers: close the clients
                # now (from a thread: a signal handler must not wait for a lock that the
                # thread it interrupted may hold).
                threading.Thread(target=server.close, args=(0,), daemon=True).start()
                raise KeyboardInterrupt

            main_thread = threading.current_thread() is threading.main_thread()
            previous = signal.signal(signal.SIGINT, interrupted) if main_thread else None
            try:
                server.serve_forever()  # Ctrl-C: closes the server, KeyboardInterrupt goes on
            finally:
                if previous is not None:
                    signal.signal(signal.SIGINT, previous)
    finally:
        log.removeHandler(report)
        log.propagate = propagate
    return 0


def _listen(args: argparse.Namespace) -> int:
    if args.echo:
        return _echo_server(args)
    family = socket.AF_INET6 if ":" in args.address else socket.AF_INET
    # Raw mode relays whatever each read gives: no buffer.
    with new_socket(family, buffered=False) as listener:
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
        # stderr) instead of being skipped in silence, and the listener waits for the next one.
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
                _relay(_Session(client, None), False, None, address)
                return 0


def _udp(args: argparse.Namespace) -> int:
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    with new_socket(family, socket.SOCK_DGRAM, socket.IPPROTO_UDP) as sock:
        if args.action == "send":
            if args.message is not None:
                message: bytes = args.message.encode()
            else:
                message = b"" if sys.stdin is None else sys.stdin.buffer.read()
            sent = sock.send_to(args.host, args.port, message)
            print(f"sent {sent} bytes to {args.host}:{args.port}", file=sys.stderr)
        else:
            sock.bind_addr(args.port, args.host)
            try:
                data, host, port = sock.recv_from(65535, timeout=args.timeout)
            except TimeoutError:
                raise _Failure(
                    f"no datagram on {args.host}:{args.port} within {args.timeout:g} s (--timeout)"
                ) from None
            sys.stdout.buffer.write(data + b"\n")
            print(f"from {host}:{port}", file=sys.stderr)
    return 0


#: Appended to a certificate verification failure of ``connect --tls``.
VERIFY_HINT = (
    "; to trust the server's CA, pass --ca FILE; to skip verification (testing only), --insecure"
)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``duonet`` and ``python -m duonet``."""
    parser, commands = _parsers()
    args = parser.parse_args(argv)
    _check(commands, args)
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
        if args.command == "send":
            return _send(args)
        return _udp(args)
    except KeyboardInterrupt:
        return 130
    except _Failure as exc:
        print(f"duonet: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        reason = _reason(exc)
        if args.command in ("connect", "send") and _verification_failed(exc):
            reason += VERIFY_HINT
        print(f"duonet: {reason}", file=sys.stderr)
        return 1


def _verification_failed(exc: BaseException) -> bool:
    """True for a TLS failure because the server's certificate or its name was not trusted."""
    if not isinstance(exc, SslError):
        return False
    text = str(exc)
    return getattr(exc, "verify_code", None) is not None or (
        "certificate verify failed" in text or "hostname mismatch" in text
    )


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
