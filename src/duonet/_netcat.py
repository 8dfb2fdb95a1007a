"""The network commands of the duonet command line: ``connect``, ``listen`` (one client relayed,
or ``--echo`` for many through ``serve``), ``send`` and ``udp send`` / ``udp recv``.

Each command takes argparse's namespace and returns the exit status. The relay between standard
input and output and a socket (with its progress line on a terminal) is shared by ``connect``
and ``listen``. A failure is raised as :class:`Failure`, already worded for the command line, or
as the library's ``OSError`` / ``ValueError``, which :func:`reason` words in one line.
"""

from __future__ import annotations

import argparse
import io
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO, TextIO

from ._blocking import Socket, new_socket
from ._core._tls import wrap_socket
from ._enums import SOBool, SocketFlag
from ._errors import SocketClosedError, SslError
from ._server import serve
from ._sslcontext import SslCVerifyMode, new_context

__all__ = ("Failure", "connect", "listen", "reason", "send", "udp")


class Failure(Exception):
    """A failure already worded for the command line (printed after ``duonet: ``)."""


def reason(exc: BaseException) -> str:
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
        raise Failure(f"nothing received from {peer} for {timeout:g} s (--timeout)") from None
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
            raise Failure(
                f"could not {what} to {peer} within {args.timeout:g} s (--timeout)"
            ) from None
        yield sock, peer


def connect(args: argparse.Namespace) -> int:
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


def send(args: argparse.Namespace) -> int:
    """``duonet send``: the file (zero copy on plain TCP), a half-close, then the answer."""
    try:
        file: BinaryIO = open(args.file, "rb")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise Failure(f"cannot read {args.file}: {reason(exc)}") from None
    sent = 0
    with file, _dial(args, buffered=False) as (sock, peer):
        progress = _Progress()
        try:
            try:
                for count in _send_slices(sock, file, args.timeout):
                    sent += count
                    progress.add(sent=count)
            except TimeoutError:
                raise Failure(
                    f"sending {args.file} to {peer} stalled: less than 1 MiB went out in "
                    f"{args.timeout:g} s (--timeout)"
                ) from None
            sock.send_eof()  # the peer reads EOF (after a close_notify on TLS), as with nc -N
            out = sys.stdout.buffer
            while True:
                try:
                    data = sock.recv(65536, timeout=args.timeout)
                except TimeoutError:
                    raise Failure(
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
                text = reason(exc)
            elif record.exc_info and record.exc_info[1] is not None:  # a handler that raised
                failure = record.exc_info[1]
                text = f"{record.getMessage()}: {type(failure).__name__}: {reason(failure)}"
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
            text = reason(exc)
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


def listen(args: argparse.Namespace) -> int:
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
                print(f"duonet: {reason(exc)}", file=sys.stderr)
                continue
            print(f"connection from {address}", file=sys.stderr)
            sys.stderr.flush()
            with client:
                _relay(_Session(client, None), False, None, address)
                return 0


def udp(args: argparse.Namespace) -> int:
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
                raise Failure(
                    f"no datagram on {args.host}:{args.port} within {args.timeout:g} s (--timeout)"
                ) from None
            sys.stdout.buffer.write(data + b"\n")
            print(f"from {host}:{port}", file=sys.stderr)
    return 0
