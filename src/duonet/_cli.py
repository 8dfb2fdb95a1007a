"""The duonet command line: its parser (every command's options and help text), the usage
checks argparse cannot make, and :func:`main`, which runs a command and turns its outcome into
the exit status. The network commands themselves are in ``_netcat``, the demo in ``_demo``.

Exit status follows nc: 0 on success, 1 on a failure (with the reason on standard error), 2 on a
usage error (argparse's), 130 on Ctrl-C. Help texts are plain text: argparse prints them as they
are, so they hold no reST markup.
"""

from __future__ import annotations

import argparse
import math
import sys
import textwrap
from collections.abc import Sequence

from . import _netcat
from ._errors import SslError
from ._ip import parse_ip_address

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
            return _netcat.connect(args)
        if args.command == "listen":
            return _netcat.listen(args)
        if args.command == "send":
            return _netcat.send(args)
        return _netcat.udp(args)
    except KeyboardInterrupt:
        return 130
    except _netcat.Failure as exc:
        print(f"duonet: {exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        reason = _netcat.reason(exc)
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
