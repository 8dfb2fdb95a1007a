"""The ``duonet`` command line, run as ``python -m duonet`` in subprocesses on 127.0.0.1.

Peers are stdlib sockets in threads, and ``openssl s_server`` / ``s_client``, ``nc`` and
``socat`` when installed (each such test is skipped otherwise). Every subprocess is bounded by a
timeout and killed in a ``finally``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import queue
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import pytest
import trustme

OPENSSL = shutil.which("openssl")
NC = shutil.which("nc")
SOCAT = shutil.which("socat")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl binary is not installed")
#: Seconds any one subprocess may run.
TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "duonet", *args]


def run(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(cli(*args), input=stdin, capture_output=True, timeout=TIMEOUT)


def start(
    args: list[str], stdin: bool = False, stderr: int = subprocess.PIPE
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        args,
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=stderr,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


def dial(port: int, proc: subprocess.Popen[bytes]) -> socket.socket:
    """Connect to 127.0.0.1:``port`` as soon as ``proc`` listens there (this is the real client)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        else:
            return sock


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    """Wait until something listens on ``port`` (a probe connection, closed at once)."""
    dial(port, proc).close()


@contextlib.contextmanager
def listening(*options: str, stdin: bool = False) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``duonet listen PORT *options`` on a free port: yields the port and the process, which is
    killed at the end (no probe: the caller waits for it as the test needs)."""
    port = free_port()
    proc = start(cli("listen", str(port), *options), stdin=stdin)
    try:
        yield port, proc
    finally:
        stop(proc)


def on_terminal(args: list[str]) -> tuple[subprocess.Popen[bytes], bytes, bytes]:
    """Run ``args`` with stderr on a pseudo-terminal: the ended process, its standard output,
    and everything the terminal showed."""
    leader, follower = os.openpty()
    try:
        proc = start(args, stderr=follower)
        os.close(follower)
        follower = -1
        try:
            out, _ = proc.communicate(timeout=TIMEOUT)
        finally:
            stop(proc)
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the terminal has no writer left
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
        if follower != -1:
            os.close(follower)
    return proc, out, shown


def recv_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


@contextlib.contextmanager
def server(handle: Callable[[socket.socket], object]) -> Iterator[int]:
    """A stdlib TCP server on 127.0.0.1 for one client: yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.settimeout(TIMEOUT)
                handle(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        listener.close()
        thread.join(TIMEOUT)


@contextlib.contextmanager
def udp_receiver() -> Iterator[tuple[socket.socket, int]]:
    """A stdlib UDP socket bound on 127.0.0.1: yields it and its port."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as receiver:
        receiver.bind(("127.0.0.1", 0))
        receiver.settimeout(TIMEOUT)
        yield receiver, int(receiver.getsockname()[1])


@contextlib.contextmanager
def released(event: threading.Event) -> Iterator[None]:
    """Set ``event`` on the way out. Entered after a server whose handler waits for ``event``,
    it lets the handler return before the server joins its thread."""
    try:
        yield
    finally:
        event.set()


def echo(conn: socket.socket) -> None:
    while data := conn.recv(65536):
        conn.sendall(data)


# -- connect --------------------------------------------------------------------------------------


def test_connect_relays_stdin_and_stdout() -> None:
    with server(echo) as port:
        result = run("connect", "127.0.0.1", str(port), "--timeout", "5", stdin=b"hello\nworld\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello\nworld\n"
    assert result.stderr == b""


def test_connect_lines_mode() -> None:
    def lines(conn: socket.socket) -> None:
        conn.sendall(b"one\r\ntwo\n\r\nlast")

    with server(lines) as port:
        result = run("connect", "127.0.0.1", str(port), "--lines", "--timeout", "5")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"one\ntwo\n\nlast\n"


def test_connect_large_transfer_no_progress_without_terminal() -> None:
    body = os.urandom(6 * 1024 * 1024)
    with server(echo) as port:
        result = run("connect", "127.0.0.1", str(port), "--timeout", "5", stdin=body)
    assert result.returncode == 0, result.stderr
    assert result.stdout == body
    assert result.stderr == b""


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_connect_progress_on_terminal() -> None:
    size = 6 * 1024 * 1024

    def blast(conn: socket.socket) -> None:
        conn.sendall(b"x" * size)

    with server(blast) as port:
        proc, out, shown = on_terminal(cli("connect", "127.0.0.1", str(port), "--timeout", "5"))
    assert proc.returncode == 0
    assert len(out) == size
    assert b"received 6.0 MB" in shown
    assert b"/s" in shown
    assert shown.endswith(b"\n")


def test_connect_refused() -> None:
    result = run("connect", "127.0.0.1", str(free_port()), "--timeout", "5")
    assert result.returncode == 1
    assert result.stderr.startswith(b"duonet: ")
    assert b"refused" in result.stderr.lower()
    assert result.stderr.count(b"\n") == 1


def test_connect_timeout() -> None:
    silent = threading.Event()

    def never_send(conn: socket.socket) -> None:
        silent.wait(TIMEOUT)

    with server(never_send) as port, released(silent):
        proc = start(cli("connect", "127.0.0.1", str(port), "--timeout", "0.3"), stdin=True)
        try:
            _, err = proc.communicate(timeout=TIMEOUT)
        finally:
            stop(proc)
    assert proc.returncode == 1
    assert err == f"duonet: nothing received from 127.0.0.1:{port} for 0.3 s (--timeout)\n".encode()


def test_connect_timeout_while_connecting_names_the_address() -> None:
    """A TLS handshake that never gets an answer: the CLI's words, not the library's."""
    silent = threading.Event()
    with server(lambda conn: silent.wait(TIMEOUT)) as port, released(silent):
        args = ["connect", "--tls", "--insecure", "127.0.0.1", str(port)]
        result = run(*args, "--timeout", "0.3")
    assert result.returncode == 1
    assert (
        result.stderr
        == (
            f"duonet: could not connect (with the TLS handshake) to 127.0.0.1:{port} within 0.3 s "
            "(--timeout)\n"
        ).encode()
    )


def test_connect_quit_after_eof_against_a_server_that_keeps_the_connection() -> None:
    stop_server = threading.Event()

    def keep_open(conn: socket.socket) -> None:
        assert conn.recv(100) == b"bye\n"
        conn.sendall(b"hello\n")
        stop_server.wait(TIMEOUT)

    with server(keep_open) as port, released(stop_server):
        started = time.monotonic()
        result = run("connect", "127.0.0.1", str(port), "-q", "0.5", stdin=b"bye\n")
        elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"hello\n"
    assert result.stderr == b""
    assert elapsed < TIMEOUT - 2


def test_connect_quit_after_exits_as_soon_as_the_peer_closes() -> None:
    def answer_and_close(conn: socket.socket) -> None:
        assert recv_all(conn) == b"question\n"  # until the CLI's half-close
        conn.sendall(b"answer\n")

    with server(answer_and_close) as port:
        started = time.monotonic()
        result = run("connect", "127.0.0.1", str(port), "--quit-after", "8", stdin=b"question\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"answer\n"
    assert time.monotonic() - started < 7


# -- listen ---------------------------------------------------------------------------------------


def test_listen_relays_both_ways() -> None:
    with listening(stdin=True) as (port, proc):
        with dial(port, proc) as sock:
            sock.sendall(b"from client\n")
            assert proc.stdin is not None
            proc.stdin.write(b"from server\n")
            proc.stdin.close()  # EOF: the listener half-closes, as nc does
            received = recv_all(sock)
        proc.wait(timeout=TIMEOUT)
        assert proc.stdout is not None
        assert proc.stderr is not None
        out, err = proc.stdout.read(), proc.stderr.read()
    assert proc.returncode == 0, err
    assert received == b"from server\n"
    assert out == b"from client\n"
    assert b"listening on 127.0.0.1:" in err


def test_listen_echo_serves_many_clients() -> None:
    with listening("--echo") as (port, proc):
        for name in (b"first", b"second"):
            with dial(port, proc) as sock:
                sock.sendall(name + b"\r\n" + name + b" again\n")
                sock.shutdown(socket.SHUT_WR)
                assert recv_all(sock) == name + b"\n" + name + b" again\n"


def test_listen_tls_needs_cert_and_key() -> None:
    result = run("listen", str(free_port()), "--tls")
    assert result.returncode == 2
    assert b"--tls needs --cert FILE and --key FILE" in result.stderr


# -- usage errors and help -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["listen", "70000"], "port must be 0-65535, got 70000"),
        (["listen", "-1"], "port must be 0-65535, got -1"),
        (["connect", "localhost", "65536"], "port must be 0-65535, got 65536"),
        (["connect", "localhost", "http"], "not a port number: 'http'"),
        (["udp", "send", "127.0.0.1", "99999", "x"], "port must be 0-65535, got 99999"),
        (["udp", "recv", "127.0.0.1", "70000"], "port must be 0-65535"),
        (["connect", "localhost", "1", "--insecure"], "--insecure needs --tls"),
        (["connect", "localhost", "1", "--ca", "ca.pem"], "--ca needs --tls"),
        (["connect", "localhost", "1", "--tls", "--ca", "ca.pem", "--insecure"], "contradict"),
        (["connect", "localhost", "1", "--timeout", "nan"], "finite number >= 0"),
        (["connect", "localhost", "1", "--timeout", "-1"], "finite number >= 0"),
        (["connect", "localhost", "1", "-q", "soon"], "not a number of seconds"),
        (["listen", "0", "--cert", "c.pem"], "--cert needs --tls"),
        (["listen", "0", "--key", "k.pem"], "--key needs --tls"),
        (["listen", "0", "--tls", "--cert", "c.pem"], "--tls needs --cert FILE and --key FILE"),
        (["ip", "frobnicate", "1.2.3.4"], "invalid choice"),
        (["listen", "0", "--max-clients", "4"], "--max-clients needs --echo"),
        (["listen", "0", "--echo", "--max-clients", "0"], "must be 1 or more, got 0"),
        (["listen", "0", "--echo", "--max-clients", "many"], "not a whole number: 'many'"),
        (["send", "f.bin", "localhost", "65536"], "port must be 0-65535, got 65536"),
        (["send", "f.bin", "localhost", "1", "--ca", "ca.pem"], "--ca needs --tls"),
        (["send", "f.bin", "localhost", "1", "--insecure"], "--insecure needs --tls"),
        (["send", "f.bin", "localhost", "1", "--tls", "--ca", "c.pem", "--insecure"], "contradict"),
        (["send", "f.bin", "localhost", "1", "--timeout", "-2"], "finite number >= 0"),
        (["send", "f.bin", "localhost"], "the following arguments are required: PORT"),
    ],
)
def test_usage_errors_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Options that would do nothing, and ports outside 0-65535, are usage errors (exit 2)."""
    from duonet._cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.startswith("usage: duonet ")


def _commands() -> dict[str, argparse.ArgumentParser]:
    """Every (sub)command's parser, by its name (``""`` for the top, ``"udp send"``, ...)."""
    from duonet._cli import _parser

    found: dict[str, argparse.ArgumentParser] = {}

    def walk(name: str, parser: argparse.ArgumentParser) -> None:
        found[name] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, subparser in action.choices.items():
                    walk(f"{name} {sub}".strip(), subparser)

    walk("", _parser())
    return found


COMMANDS = _commands()


@pytest.mark.parametrize("name", sorted(COMMANDS), ids=lambda n: n or "duonet")
def test_help_is_plain_text_with_every_option_explained(name: str) -> None:
    parser = COMMANDS[name]
    text = parser.format_help()
    for markup in ("``", ":func:", ":meth:", ":doc:", ".. "):
        assert markup not in text
    assert parser.description
    for action in parser._actions:
        assert action.help, f"duonet {name}: {action.option_strings or action.dest} has no help"
        takes_value = action.nargs != 0 and not isinstance(action, argparse._SubParsersAction)
        if action.option_strings and takes_value and action.dest != "help":
            explained = "(default: " in action.help or "(required)" in action.help
            assert explained, f"duonet {name} {action.option_strings}: no default shown"


def _normalized(text: str) -> str:
    return " ".join(text.split())


CLI_DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.rst"


@pytest.mark.parametrize("name", sorted(n for n in COMMANDS if n), ids=str)
def test_docs_cli_page_matches_help(name: str) -> None:
    """docs/cli.rst shows each command's usage line and every option with its help text."""
    doc = _normalized(CLI_DOC.read_text(encoding="utf-8"))
    parser = COMMANDS[name]
    usage = _normalized(parser.format_usage().removeprefix("usage: "))
    assert usage in doc, f"the usage of duonet {name} is not on docs/cli.rst: {usage}"
    for action in parser._actions:
        if action.dest == "help" or isinstance(action, argparse._SubParsersAction):
            continue
        assert action.help is not None
        assert _normalized(action.help) in doc, f"duonet {name} {action.dest}: {action.help}"


# -- udp, ip ---------------------------------------------------------------------------------------


def test_udp_send() -> None:
    with udp_receiver() as (receiver, port):
        result = run("udp", "send", "127.0.0.1", str(port), "ping")
        assert result.returncode == 0, result.stderr
        assert receiver.recvfrom(65535)[0] == b"ping"
    assert b"sent 4 bytes" in result.stderr


def test_udp_recv() -> None:
    port = free_port()
    proc = start(cli("udp", "recv", "127.0.0.1", str(port), "--timeout", "8"))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            deadline = time.monotonic() + TIMEOUT
            while proc.poll() is None and time.monotonic() < deadline:
                sender.sendto(b"pong", ("127.0.0.1", port))  # until the receiver has bound
                time.sleep(0.05)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        stop(proc)
    assert proc.returncode == 0, err
    assert out == b"pong\n"
    assert b"from 127.0.0.1:" in err


def test_udp_send_reads_stdin_without_message() -> None:
    with udp_receiver() as (receiver, port):
        result = run("udp", "send", "127.0.0.1", str(port), stdin=b"from stdin\n")
        assert result.returncode == 0, result.stderr
        assert receiver.recvfrom(65535)[0] == b"from stdin\n"
        empty = run("udp", "send", "127.0.0.1", str(port), "")  # an explicit empty message
        assert empty.returncode == 0, empty.stderr
        assert receiver.recvfrom(65535)[0] == b""
    assert b"sent 11 bytes" in result.stderr


def test_udp_recv_timeout() -> None:
    port = free_port()
    result = run("udp", "recv", "127.0.0.1", str(port), "--timeout", "0.2")
    assert result.returncode == 1
    assert (
        result.stderr
        == f"duonet: no datagram on 127.0.0.1:{port} within 0.2 s (--timeout)\n".encode()
    )


@pytest.mark.parametrize(
    ("address", "shown"),
    [("192.168.1.2", b"192.168.1.2 (IPV4)"), ("::1", b"::1 (IPV6)")],
)
def test_ip_parse(address: str, shown: bytes) -> None:
    result = run("ip", "parse", address)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == shown


def test_ip_parse_bad() -> None:
    result = run("ip", "parse", "1.2.3")
    assert result.returncode == 1
    assert result.stdout == b""
    assert result.stderr.startswith(b"duonet: ")
    assert b"1.2.3" in result.stderr


# -- TLS against openssl ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    folder: Path = tmp_path_factory.mktemp("cli_tls")
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    files = {name: str(folder / f"{name}.pem") for name in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(files["ca"])
    leaf.private_key_and_cert_chain_pem.write_to_path(files["cert"])
    leaf.private_key_pem.write_to_path(files["key"])
    return files


@contextlib.contextmanager
def s_server(tls_files: dict[str, str]) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """``openssl s_server`` on 127.0.0.1, yielded once it listens: what a client sends ends up
    on its stdout."""
    assert OPENSSL is not None
    port = free_port()
    proc = start(
        [
            OPENSSL,
            "s_server",
            "-accept",
            f"127.0.0.1:{port}",
            "-cert",
            tls_files["cert"],
            "-key",
            tls_files["key"],
            "-quiet",
        ],
        stdin=True,
    )
    try:
        wait_listening(port, proc)
        yield port, proc
    finally:
        stop(proc)


def read_line(pipe: IO[bytes], timeout: float = TIMEOUT) -> bytes:
    """One line from ``pipe``, or ``b""`` if none comes within ``timeout``."""
    lines: queue.Queue[bytes] = queue.Queue()
    threading.Thread(target=lambda: lines.put(pipe.readline()), daemon=True).start()
    try:
        return lines.get(timeout=timeout)
    except queue.Empty:
        return b""


def tls_options(tls_files: dict[str, str]) -> list[str]:
    """``listen``'s options for TLS with the test certificate."""
    return ["--tls", "--cert", tls_files["cert"], "--key", tls_files["key"]]


def tls_exchange(server_proc: subprocess.Popen[bytes], args: list[str], line: bytes) -> None:
    """Run ``connect`` with ``line`` on stdin: s_server prints it and answers; then the end of
    stdin half-closes the TLS connection (close_notify, then SHUT_WR): s_server reads the end
    of the stream and closes, and ``connect`` exits 0 without the server being stopped.
    """
    client = start(args, stdin=True)
    try:
        assert client.stdin is not None
        assert client.stdout is not None
        assert server_proc.stdin is not None
        assert server_proc.stdout is not None
        client.stdin.write(line)
        client.stdin.flush()
        assert read_line(server_proc.stdout) == line
        server_proc.stdin.write(b"answer\n")
        server_proc.stdin.flush()
        assert read_line(client.stdout) == b"answer\n"
        client.stdin.close()  # connect half-closes: s_server sees close_notify and closes
        assert client.wait(timeout=TIMEOUT) == 0
        assert server_proc.poll() is None  # connect ended because s_server closed, not died
    finally:
        stop(client)


@needs_openssl
def test_connect_tls_to_openssl(tls_files: dict[str, str]) -> None:
    with s_server(tls_files) as (port, server_proc):
        args = ["connect", "--tls", "--ca", tls_files["ca"], "localhost", str(port)]
        tls_exchange(server_proc, cli(*args), b"hello over tls\n")


@needs_openssl
def test_connect_tls_untrusted_certificate(tls_files: dict[str, str]) -> None:
    with s_server(tls_files) as (port, _):
        result = run("connect", "--tls", "localhost", str(port), "--timeout", "5")
    assert result.returncode == 1
    assert result.stderr.startswith(b"duonet: ")
    assert b"certificate" in result.stderr
    assert b"pass --ca FILE" in result.stderr
    assert b"--insecure" in result.stderr
    assert result.stderr.count(b"\n") == 1


@contextlib.contextmanager
def tls_server(
    tls_files: dict[str, str], handle: Callable[[ssl.SSLSocket], None], ragged: bool = True
) -> Iterator[int]:
    """A stdlib TLS server on 127.0.0.1 for one client: yields its port. With
    ``ragged=False`` a TCP end without close_notify is an error, not the end of the stream
    (``handle`` then fails, and the test with it)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tls_files["cert"], tls_files["key"])

    def handle_tls(conn: socket.socket) -> None:
        with (
            contextlib.suppress(OSError),
            ctx.wrap_socket(conn, server_side=True, suppress_ragged_eofs=ragged) as tls,
        ):
            handle(tls)

    with server(handle_tls) as port:
        yield port


def test_connect_tls_verify_failure_hints_at_ca_and_insecure(tls_files: dict[str, str]) -> None:
    with tls_server(tls_files, lambda tls: None) as port:
        result = run("connect", "--tls", "127.0.0.1", str(port), "--timeout", "5")
    assert result.returncode == 1
    err = result.stderr.decode()
    assert err.startswith("duonet: TLS handshake with 127.0.0.1"), err
    assert "certificate verify failed" in err
    assert err.endswith(
        "; to trust the server's CA, pass --ca FILE; to skip verification (testing only), "
        "--insecure\n"
    ), err


def test_connect_tls_quit_after_eof(tls_files: dict[str, str]) -> None:
    """TLS cannot half-close: -q ends the session once stdin is done and the server lingers."""
    done = threading.Event()

    def linger(tls: ssl.SSLSocket) -> None:
        assert tls.recv(100) == b"ping\n"
        tls.sendall(b"pong\n")
        done.wait(TIMEOUT)

    with tls_server(tls_files, linger) as port, released(done):
        args = ["connect", "--tls", "--ca", tls_files["ca"], "localhost", str(port)]
        result = run(*args, "-q", "0.5", stdin=b"ping\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"pong\n"
    assert result.stderr == b""


@needs_openssl
def test_connect_tls_insecure(tls_files: dict[str, str]) -> None:
    with s_server(tls_files) as (port, server_proc):
        args = ["connect", "--tls", "--insecure", "127.0.0.1", str(port)]
        tls_exchange(server_proc, cli(*args), b"no checks\n")


@needs_openssl
def test_listen_tls_echo_with_openssl_client(tls_files: dict[str, str]) -> None:
    assert OPENSSL is not None
    with listening(*tls_options(tls_files), "--echo") as (port, listener):
        wait_listening(port, listener)  # a probe that fails its handshake: the server goes on
        client = start(
            [
                OPENSSL,
                "s_client",
                "-connect",
                f"127.0.0.1:{port}",
                "-CAfile",
                tls_files["ca"],
                "-verify_return_error",
                "-quiet",
            ],
            stdin=True,
        )
        try:
            assert client.stdin is not None
            assert client.stdout is not None
            client.stdin.write(b"echo me\n")
            client.stdin.flush()
            assert client.stdout.readline() == b"echo me\n"
        finally:
            stop(client)


def test_listen_echo_reports_failing_clients_and_goes_on(tls_files: dict[str, str]) -> None:
    with listening(*tls_options(tls_files), "--echo") as (port, proc):
        wait_listening(port, proc)
        with dial(port, proc) as http:  # plaintext: its handshake fails
            http.sendall(b"GET / HTTP/1.0\r\n\r\n")
            assert b"HTTP" not in recv_all(http)
        ctx = ssl.create_default_context(cafile=tls_files["ca"])
        for line in (b"one\n", b"two\n"):
            with ctx.wrap_socket(dial(port, proc), server_hostname="localhost") as good:
                good.sendall(line)
                assert good.recv(100) == line
                if line == b"one\n":  # then it resets in the middle of a session
                    good.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # Clients are served one after another: "two" was echoed, so the reset was handled.
        proc.kill()
        _, err = proc.communicate(timeout=TIMEOUT)
    text = err.decode()
    assert "http" in text.lower(), text  # the failed handshake, with OpenSSL's reason
    assert "reset" in text.lower(), text  # the reset client
    assert text.count("connection from 127.0.0.1") == 2, text


# -- nc / socat ------------------------------------------------------------------------------------


@pytest.mark.skipif(NC is None, reason="nc is not installed")
def test_connect_to_nc_listener() -> None:
    assert NC is not None
    port = free_port()
    # OpenBSD nc takes "-l PORT", traditional nc "-l -p PORT": try the first, check it listens.
    peer = start([NC, "-l", "127.0.0.1", str(port)], stdin=True)
    try:
        try:
            wait_listening(port, peer)
        except OSError:
            pytest.skip("this nc does not take 'nc -l ADDRESS PORT'")
        # the probe used up nc's one connection: start it again, then connect for real
        stop(peer)
        peer = start([NC, "-l", "127.0.0.1", str(port)], stdin=True)
        time.sleep(0.3)
        result = run("connect", "127.0.0.1", str(port), "--timeout", "5", stdin=b"to nc\n")
        assert result.returncode == 0, result.stderr
        out, _ = peer.communicate(timeout=TIMEOUT)
        assert out == b"to nc\n"
    finally:
        stop(peer)


@pytest.mark.skipif(SOCAT is None, reason="socat is not installed")
def test_listen_with_socat_client() -> None:
    assert SOCAT is not None
    with listening("--echo") as (port, listener):
        wait_listening(port, listener)
        result = subprocess.run(
            [SOCAT, "-", f"TCP:127.0.0.1:{port}"],
            input=b"via socat\n",
            capture_output=True,
            timeout=TIMEOUT,
        )
        assert result.stdout == b"via socat\n"


# -- listen --echo: duonet.serve, clients at once ------------------------------------------------


class StderrLines:
    """The lines a running command writes on stderr, read in a thread as they come."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        self._pipe = proc.stderr
        self._lines: queue.Queue[bytes] = queue.Queue()
        self.seen: list[bytes] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            for line in self._pipe:
                self._lines.put(line)
        self._lines.put(b"")

    def wait_for(self, text: bytes, timeout: float = TIMEOUT) -> bytes:
        """The first line (from now on, or already seen) holding ``text``; fails after timeout."""
        for line in self.seen:
            if text in line:
                return line
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                break
            if not line:
                break
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} on stderr; seen: {self.seen!r}")

    def rest(self) -> bytes:
        """Everything seen, once the command has ended."""
        self._thread.join(TIMEOUT)
        while not self._lines.empty():
            self.seen.append(self._lines.get())
        return b"".join(self.seen)


def ask(sock: socket.socket, line: bytes) -> bytes:
    """Send ``line`` and read its echo (one line)."""
    sock.sendall(line)
    answer = b""
    while not answer.endswith(b"\n"):
        chunk = sock.recv(100)
        if not chunk:
            break
        answer += chunk
    return answer


def test_listen_echo_serves_clients_at_once() -> None:
    """The second client is answered while the first is still connected (and idle)."""
    with listening("--echo") as (port, proc):
        err = StderrLines(proc)
        wait_listening(port, proc)
        with dial(port, proc) as first, dial(port, proc) as second:
            assert ask(first, b"first\n") == b"first\n"
            assert ask(second, b"second\r\n") == b"second\n"  # first is still connected
            assert ask(first, b"\r\n") == b"\n"  # an empty line stays one
            err.wait_for(f"connection from 127.0.0.1:{second.getsockname()[1]}".encode())
            first.shutdown(socket.SHUT_WR)
            assert recv_all(first) == b""
            assert ask(second, b"still here\n") == b"still here\n"
    assert f"listening on 127.0.0.1:{port}".encode() in err.rest()


def test_listen_echo_max_clients_makes_the_next_client_wait() -> None:
    with listening("--echo", "--max-clients", "1") as (port, proc):
        wait_listening(port, proc)
        with dial(port, proc) as first:
            assert ask(first, b"one\n") == b"one\n"
            with dial(port, proc) as second:
                second.sendall(b"two\n")
                second.settimeout(0.5)
                with pytest.raises(TimeoutError):  # waits in the backlog: first has the slot
                    second.recv(100)
                second.settimeout(TIMEOUT)
                first.close()  # its slot goes to second, which is answered now
                assert ask(second, b"") == b"two\n"


def test_listen_echo_reports_a_failing_tls_client_while_serving_another(
    tls_files: dict[str, str],
) -> None:
    with listening(*tls_options(tls_files), "--echo") as (port, proc):
        err = StderrLines(proc)
        wait_listening(port, proc)  # the probe fails its handshake too: it is reported
        ctx = ssl.create_default_context(cafile=tls_files["ca"])
        with ctx.wrap_socket(dial(port, proc), server_hostname="localhost") as good:
            assert ask(good, b"before\n") == b"before\n"
            with dial(port, proc) as plain:  # no TLS: its handshake fails
                bad = f"127.0.0.1:{plain.getsockname()[1]}".encode()
                plain.sendall(b"GET / HTTP/1.0\r\n\r\n")
                assert recv_all(plain) == b""
            line = err.wait_for(bad)  # reported, with the client's address, while good is on
            assert line.startswith(b"duonet: TLS handshake with " + bad + b" failed: "), line
            assert b"http" in line.lower(), line
            assert ask(good, b"after\n") == b"after\n"
            good.unwrap().close()  # a clean TLS close: nothing to report
        err.wait_for(b"connection from 127.0.0.1")
    text = err.rest().decode()
    assert text.count("connection from 127.0.0.1") == 1, text
    assert text.count("duonet: ") == 2, text  # the probe and the plain client, nothing else


def test_listen_echo_ctrl_c_closes_the_clients_and_exits_130() -> None:
    with listening("--echo") as (port, proc):
        err = StderrLines(proc)
        wait_listening(port, proc)
        with dial(port, proc) as client:
            assert ask(client, b"hi\n") == b"hi\n"
            err.wait_for(f"connection from 127.0.0.1:{client.getsockname()[1]}".encode())
            started = time.monotonic()
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=TIMEOUT) == 130
            assert time.monotonic() - started < 4  # the client is not waited for (5 s)
            assert recv_all(client) == b""  # the server closed it
    assert b"Traceback" not in err.rest()


# -- connect: TLS half-close ---------------------------------------------------------------------


def test_connect_tls_half_closes_at_the_end_of_stdin(tls_files: dict[str, str]) -> None:
    """The server reads a clean end of the stream (close_notify, not a bare TCP FIN), then
    answers on its still open side, and connect prints the answer and exits."""
    got: dict[str, bytes] = {}

    def read_to_eof_then_answer(tls: ssl.SSLSocket) -> None:
        data = b""
        while chunk := tls.recv(65536):  # suppress_ragged_eofs=False: only close_notify ends
            data += chunk
        got["data"] = data
        tls.sendall(b"got " + str(len(data)).encode() + b" bytes\n")
        tls.unwrap()

    with tls_server(tls_files, read_to_eof_then_answer, ragged=False) as port:
        args = ["connect", "--tls", "--ca", tls_files["ca"], "localhost", str(port)]
        result = run(*args, "--timeout", "5", stdin=b"a\nb\n")
    assert result.returncode == 0, result.stderr
    assert got["data"] == b"a\nb\n"
    assert result.stdout == b"got 4 bytes\n"
    assert result.stderr == b""


# -- send -----------------------------------------------------------------------------------------


def sha256_answer(conn: socket.socket) -> None:
    """Read to the end of the stream, answer with the size and the sha256 of what came."""
    digest = hashlib.sha256()
    size = 0
    while chunk := conn.recv(1 << 20):
        digest.update(chunk)
        size += len(chunk)
    conn.sendall(f"{size} {digest.hexdigest()}\n".encode())


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A 5 MB file (not a multiple of the 1 MiB slices) and its expected answer."""
    path = tmp_path_factory.mktemp("cli_send") / "big.bin"
    body = os.urandom(5 * 1000 * 1000 + 7)
    path.write_bytes(body)
    return path, f"{len(body)} {hashlib.sha256(body).hexdigest()}\n".encode()


def test_send_file_prints_the_answer(big_file: tuple[Path, bytes]) -> None:
    path, answer = big_file
    with server(sha256_answer) as port:
        result = run("send", str(path), "127.0.0.1", str(port), "--timeout", "5")
    assert result.returncode == 0, result.stderr
    assert result.stdout == answer
    size = path.stat().st_size
    assert result.stderr == f"sent {size} bytes of {path} to 127.0.0.1:{port}\n".encode()


def test_send_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    with server(sha256_answer) as port:
        result = run("send", str(path), "127.0.0.1", str(port), "--timeout", "5")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"0 {hashlib.sha256().hexdigest()}\n".encode()


def test_send_file_over_tls(big_file: tuple[Path, bytes], tls_files: dict[str, str]) -> None:
    """Chunks through TLS, then close_notify: the stdlib server reads a clean end."""
    path, answer = big_file
    with tls_server(tls_files, sha256_answer, ragged=False) as port:
        args = ["send", "--tls", "--ca", tls_files["ca"], str(path), "localhost", str(port)]
        result = run(*args, "--timeout", "5")
    assert result.returncode == 0, result.stderr
    assert result.stdout == answer


@pytest.mark.skipif(NC is None, reason="nc is not installed")
def test_send_to_nc(tmp_path: Path) -> None:
    assert NC is not None
    path = tmp_path / "to_nc.txt"
    path.write_bytes(b"a file for nc\n" * 1000)
    port = free_port()
    peer = start([NC, "-l", "127.0.0.1", str(port)])
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:  # no probe: nc takes one connection, the command's
            result = run("send", str(path), "127.0.0.1", str(port), "--timeout", "5")
            if result.returncode == 0 or time.monotonic() > deadline or peer.poll() is not None:
                break
            time.sleep(0.1)
        out, _ = peer.communicate(timeout=TIMEOUT)
    finally:
        stop(peer)
    if out == b"" and result.returncode != 0:
        pytest.skip("this nc does not take 'nc -l ADDRESS PORT'")
    assert result.returncode == 0, result.stderr
    assert out == path.read_bytes()


@pytest.mark.skipif(not os.path.exists("/dev/stdin"), reason="needs /dev/stdin")
def test_send_from_a_pipe(big_file: tuple[Path, bytes]) -> None:
    """A file without offsets (a pipe) is read and sent as it comes."""
    path, answer = big_file
    with server(sha256_answer) as port:
        args = ["send", "/dev/stdin", "127.0.0.1", str(port), "--timeout", "5"]
        result = run(*args, stdin=path.read_bytes())
    assert result.returncode == 0, result.stderr
    assert result.stdout == answer


def test_send_missing_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.bin"
    result = run("send", str(missing), "127.0.0.1", str(free_port()), "--timeout", "5")
    assert result.returncode == 1
    assert result.stderr == f"duonet: cannot read {missing}: No such file or directory\n".encode()
    assert result.stdout == b""


def test_send_refused_names_the_address(tmp_path: Path) -> None:
    path = tmp_path / "small"
    path.write_bytes(b"x")
    port = free_port()
    result = run("send", str(path), "127.0.0.1", str(port), "--timeout", "5")
    assert result.returncode == 1
    assert result.stderr.startswith(b"duonet: ")
    assert b"refused" in result.stderr.lower()
    assert f"127.0.0.1:{port}".encode() in result.stderr
    assert result.stderr.count(b"\n") == 1


def test_send_tls_untrusted_hints_at_ca(tmp_path: Path, tls_files: dict[str, str]) -> None:
    path = tmp_path / "small"
    path.write_bytes(b"x")
    with tls_server(tls_files, lambda tls: None) as port:
        result = run("send", "--tls", str(path), "127.0.0.1", str(port), "--timeout", "5")
    assert result.returncode == 1
    assert b"certificate verify failed" in result.stderr
    assert b"pass --ca FILE" in result.stderr


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_send_progress_on_terminal(big_file: tuple[Path, bytes]) -> None:
    path, answer = big_file
    with server(sha256_answer) as port:
        args = cli("send", str(path), "127.0.0.1", str(port), "--timeout", "5")
        proc, out, shown = on_terminal(args)
    assert proc.returncode == 0
    assert out == answer
    assert b"sent 4.8 MB" in shown, shown
    assert b"/s" in shown
    assert shown.endswith(
        f"sent {path.stat().st_size} bytes of {path} to 127.0.0.1:{port}\r\n".encode()
    )
