"""Hostile input: what a malicious or broken peer can send, on all four faces.

* an endless line (no ``\\n``) against ``max_length``: memory stays bounded (RSS measured in a
  subprocess; 64 MiB by default, 1 GiB under ``DUONET_STRESS=1``);
* 100k one-byte TCP segments (``TCP_NODELAY``), and one-byte TLS records;
* slowloris against a TLS listener: clients that connect and send nothing, or dribble a
  ClientHello a byte at a time; a good client is still served at once, the stalled ones are
  dropped after ``ctx.handshake_timeout``;
* random bytes as TLS records: garbage clients against a TLS listener, a fake server answering a
  ClientHello with garbage, garbage after a good handshake;
* fuzzed IP address text (hypothesis), arbitrary Unicode included, against the stdlib
  :mod:`ipaddress` with SPEC's stricter IPv4 rule.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import random
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from typing import Any

import anyio
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from conftest import TlsFiles
from duonet import SocketFlag, SslContext, SslError, is_ip_address, parse_ip_address
from scenarios import Face, stream_pair

from .test_harness import (  # noqa: F401 (fixtures)
    FACES,
    GUARD,
    STEP,
    STRESS,
    ManualTlsServer,
    anyio_backend_fixture,
    face_fixture,
    face_name_fixture,
    in_thread,
    run_python,
    scaled,
    stdlib_server_context,
    tls_client,
    tls_listener,
)

NO_FLAGS = SocketFlag(0)

# -- an endless line: bounded memory --------------------------------------------------------------

ENDLESS_LINE = r"""
import json, socket, sys, threading, time
import anyio
import duonet
import duonet.aio as aio

face, total, max_length = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tls = sys.argv[4] == "tls"
backend = face.split("-", 1)[1]
if face.startswith("blocking"):
    duonet.configure(backend)
if tls:
    import ssl

    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(sys.argv[5], sys.argv[6])
    client_ctx = duonet.new_context(ca_file=sys.argv[7])


def status(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


srv = socket.create_server(("127.0.0.1", 0))
srv.settimeout(30)
port = srv.getsockname()[1]
chunk = b"x" * (1 << 20)


def send_endless_line():
    conn, _ = srv.accept()
    if tls:
        conn = server_ctx.wrap_socket(conn, server_side=True)
    with conn:
        conn.settimeout(60)
        left = total
        while left:
            left -= conn.send(memoryview(chunk)[: min(left, len(chunk))])
        if tls:
            conn.unwrap()


sender = threading.Thread(target=send_endless_line, daemon=True)
sender.start()
report = {"pieces": 0, "bytes": 0, "longest": 0}


def piece_done(piece):
    report["pieces"] += 1
    report["bytes"] += len(piece)
    report["longest"] = max(report["longest"], len(piece))
    if "sampled" in report:
        report["sampled"] = max(report["sampled"], status("VmRSS"))


def start_measuring():
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
    except OSError:  # not allowed here: sample the RSS after every piece instead
        report["sampled"] = 0
    report["base"] = status("VmRSS")


def blocking_main():
    with duonet.new_socket() as s:
        if tls:
            duonet.wrap_socket(client_ctx, s)
        s.connect("127.0.0.1", port, timeout=10)
        piece_done(s.recv_line(timeout=30, max_length=max_length))  # warm: portal, buffers
        start_measuring()
        while piece := s.recv_line(timeout=30, max_length=max_length):
            piece_done(piece)


async def aio_main():
    async with aio.new_async_socket() as s:
        if tls:
            aio.wrap_socket(client_ctx, s)
        await s.connect("127.0.0.1", port, timeout=10)
        piece_done(await s.recv_line(timeout=30, max_length=max_length))
        start_measuring()
        while piece := await s.recv_line(timeout=30, max_length=max_length):
            piece_done(piece)


start = time.monotonic()
if face.startswith("blocking"):
    blocking_main()
else:
    anyio.run(aio_main, backend=backend)
report["peak"] = report["sampled"] if "sampled" in report else status("VmHWM")
report["seconds"] = round(time.monotonic() - start, 2)
sender.join(10)
print(json.dumps(report), flush=True)
"""

MiB = 1 << 20
#: What a reader may grow by while it reads an endless line, whatever the line's length.
RSS_BOUND = 24 * MiB


@pytest.mark.parametrize(
    ("mode", "max_length"),
    [("plain", 64 * 1024), ("plain", 1_000_000), ("tls", 64 * 1024)],
    ids=["64KiB", "default", "tls-64KiB"],
)
@pytest.mark.parametrize("face_name", FACES)
def test_endless_line_memory_is_bounded(
    face_name: str, mode: str, max_length: int, tls_files: TlsFiles
) -> None:
    total = scaled(64 * MiB, 1024 * MiB)
    files = [tls_files.cert, tls_files.key, tls_files.ca]
    result = run_python(
        ENDLESS_LINE,
        face_name,
        str(total),
        str(max_length),
        mode,
        *files,
        timeout=scaled(60, 900),
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    # Every byte came back, in pieces of at most max_length (SPEC recv_line), none lost.
    assert report["bytes"] == total
    assert report["longest"] == max_length
    assert report["pieces"] == -(-total // max_length)
    growth = report["peak"] - report["base"]
    print(f"{face_name} {mode} {max_length}: +{growth / MiB:.1f} MiB, {report['seconds']} s")
    assert growth < RSS_BOUND, f"RSS grew by {growth / MiB:.1f} MiB reading {total / MiB} MiB"


# -- many tiny packets --------------------------------------------------------------------------


def tiny_lines(count: int) -> bytes:
    return b"".join(b"%05d\n" % (i % 100_000) for i in range(count))


def send_bytewise(conn: socket.socket, data: bytes) -> int:
    """Send ``data`` one byte per ``send`` call; the number of calls."""
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    calls = 0
    for i in range(len(data)):
        conn.sendall(data[i : i + 1])
        calls += 1
    return calls


async def test_hundred_thousand_one_byte_segments(face: Face) -> None:
    size = 100_000
    data = tiny_lines(size // 6)
    with anyio.fail_after(GUARD):
        async with stream_pair(face) as (s, conn):
            calls: list[int] = []

            async def feed() -> None:
                calls.append(await in_thread(send_bytewise, conn, data))
                conn.shutdown(socket.SHUT_WR)

            async with anyio.create_task_group() as tg:
                tg.start_soon(feed)
                lines = await face.drain_lines(s, timeout=STEP)
    assert calls == [len(data)]
    assert lines == data.splitlines()


async def test_one_byte_tls_records(
    face: Face, tls_files: TlsFiles, tls_client_ctx: SslContext
) -> None:
    count = scaled(10_000, 100_000)
    data = tiny_lines(count // 6)
    server_ctx = stdlib_server_context(tls_files.cert, tls_files.key)
    with socket.create_server(("127.0.0.1", 0)) as srv, anyio.fail_after(GUARD * 2):
        srv.settimeout(STEP)

        def serve() -> None:
            conn, _ = srv.accept()
            conn.settimeout(STEP)
            server = ManualTlsServer(conn, server_ctx)
            server.handshake()
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for i in range(len(data)):
                    conn.sendall(server.records(data[i : i + 1]))  # one record per byte
                with contextlib.suppress(ssl.SSLError):
                    server.obj.unwrap()
                server.flush()

        async with anyio.create_task_group() as tg:
            tg.start_soon(in_thread, serve)
            s = await tls_client(face, tls_client_ctx, srv.getsockname()[1])
            try:
                lines = await face.drain_lines(s, timeout=STEP)
            finally:
                await s.close()
    assert lines == data.splitlines()


# -- slowloris against a TLS listener -----------------------------------------------------------


def client_hello(ca: str) -> bytes:
    """A real ClientHello, to dribble."""
    ctx = ssl.create_default_context(cafile=ca)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def closed_by_server(sock: socket.socket) -> bool:
    """Whether the server has closed ``sock``'s connection (EOF or RST is waiting)."""
    sock.setblocking(False)
    try:
        while sock.recv(65536):
            pass
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    return True


def good_client(port: int, ca: str) -> bytes:
    ctx = ssl.create_default_context(cafile=ca)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=STEP) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(b"hello\n")
        return tls.recv(100)


@contextlib.contextmanager
def slowloris(
    port: int, hello: bytes, silent: int, dribblers: int
) -> Iterator[list[socket.socket]]:
    """``silent`` clients that send nothing and ``dribblers`` that send ``hello`` a byte every
    20 ms; all connected before this yields, all closed after."""
    clients = [socket.create_connection(("127.0.0.1", port), timeout=STEP) for _ in range(silent)]
    dribbling = [
        socket.create_connection(("127.0.0.1", port), timeout=STEP) for _ in range(dribblers)
    ]
    stop = threading.Event()

    def dribble() -> None:
        for i in range(len(hello)):
            for sock in dribbling:
                with contextlib.suppress(OSError):
                    sock.send(hello[i : i + 1])
            if stop.wait(0.02):
                return

    thread = threading.Thread(target=dribble)
    thread.start()
    try:
        yield clients + dribbling
    finally:
        stop.set()
        thread.join(STEP)
        for sock in clients + dribbling:
            sock.close()


async def test_slowloris_tls_handshakes(
    face: Face, tls_files: TlsFiles, tls_server_ctx: SslContext
) -> None:
    limit = 1.0
    tls_server_ctx.handshake_timeout = limit
    lst, port = tls_listener(face, tls_server_ctx)
    try:
        with (
            anyio.fail_after(GUARD),
            slowloris(port, client_hello(tls_files.ca), silent=25, dribblers=25) as hostile,
        ):
            replies: list[bytes] = []

            async def run_good_client() -> None:
                replies.append(await in_thread(good_client, port, tls_files.ca))

            async with anyio.create_task_group() as tg:
                start = time.monotonic()
                tg.start_soon(run_good_client)
                conn = await lst.accept(timeout=STEP)
                served_after = time.monotonic() - start
                # Served while every stalled handshake was still pending: nobody waited for them.
                still_open = [not closed_by_server(sock) for sock in hostile]
                assert await conn.recv_line(timeout=STEP) == b"hello"
                await conn.send(b"served\n", timeout=STEP)
                await conn.close()
            assert replies == [b"served\n"]
            assert served_after < limit, served_after
            assert all(still_open), still_open.count(False)
            # The next accept drives the stalled handshakes to their deadline and drops them.
            with pytest.raises(TimeoutError):
                await lst.accept(timeout=limit + 1.0)
            dropped = [closed_by_server(sock) for sock in hostile]
            assert all(dropped), f"{dropped.count(False)} stalled clients were not dropped"
    finally:
        await lst.close()


async def test_stalled_handshake_error_names_the_timeout(
    face: Face, tls_server_ctx: SslContext
) -> None:
    """Without ``SAFE_DISCONN``, the dropped client's error is raised, saying why."""
    tls_server_ctx.handshake_timeout = 0.3
    lst, port = tls_listener(face, tls_server_ctx)
    try:
        with (
            anyio.fail_after(GUARD),
            socket.create_connection(("127.0.0.1", port), timeout=STEP),
            pytest.raises(SslError, match=r"timed out after 0\.3 s"),
        ):
            await lst.accept(flags=NO_FLAGS, timeout=STEP)
    finally:
        await lst.close()


# -- random bytes as TLS records ----------------------------------------------------------------


def garbage(rng: random.Random, hello: bytes) -> bytes:
    """Random bytes, a random record behind a TLS header, or a real ClientHello with bytes
    flipped (to get past the record layer into the handshake parser)."""
    kind = rng.randrange(3)
    if kind == 0:
        return rng.randbytes(rng.randint(1, 2000))
    if kind == 1:
        body = rng.randbytes(rng.randint(0, 600))
        header = bytes([0x16, 0x03, rng.choice([0, 1, 3, 4])]) + len(body).to_bytes(2, "big")
        return header + body
    mutated = bytearray(hello)
    for _ in range(rng.randint(1, 8)):
        mutated[rng.randrange(5, len(mutated))] = rng.randrange(256)
    return bytes(mutated)


@pytest.mark.parametrize("flags", [SocketFlag.SAFE_DISCONN, NO_FLAGS], ids=["SAFE", "no_flags"])
async def test_garbage_clients_against_a_tls_listener(
    face: Face, tls_files: TlsFiles, tls_server_ctx: SslContext, flags: SocketFlag
) -> None:
    """Clients complete TCP and send garbage. ``SAFE_DISCONN``: skipped, and a good client that
    comes after them is served; no flags: ``accept`` raises one ``SslError`` per garbage client,
    and nothing else."""
    rng = random.Random(f"garbage-clients-{flags}")
    count = scaled(24, 400)
    tls_server_ctx.handshake_timeout = 0.5
    hello = client_hello(tls_files.ca)
    lst, port = tls_listener(face, tls_server_ctx)
    senders: list[socket.socket] = []
    try:
        with anyio.fail_after(GUARD * (4 if STRESS else 1)):
            for i in range(count):
                sock = socket.create_connection(("127.0.0.1", port), timeout=STEP)
                senders.append(sock)
                sock.sendall(garbage(rng, hello))
                if i % 6:  # most say they are done; the others stall after their garbage
                    sock.shutdown(socket.SHUT_WR)
            if flags is NO_FLAGS:
                errors = []
                for _ in range(count):
                    with pytest.raises(SslError) as info:
                        await lst.accept(flags=flags, timeout=STEP)
                    errors.append(str(info.value))
                assert all("TLS handshake with 127.0.0.1:" in e for e in errors), errors
            replies: list[bytes] = []

            async def run_good_client() -> None:
                replies.append(await in_thread(good_client, port, tls_files.ca))

            async with anyio.create_task_group() as tg:
                tg.start_soon(run_good_client)
                conn = await lst.accept(flags=flags, timeout=STEP)
                assert await conn.recv_line(timeout=STEP) == b"hello"
                await conn.send(b"served\n", timeout=STEP)
                await conn.close()
            assert replies == [b"served\n"]
            if flags is not NO_FLAGS:
                with pytest.raises(TimeoutError):
                    await lst.accept(timeout=1.0)
            assert all(closed_by_server(sock) for sock in senders)
    finally:
        for sock in senders:
            sock.close()
        await lst.close()


async def test_tls_client_against_a_garbage_server(
    face: Face, tls_files: TlsFiles, tls_client_ctx: SslContext
) -> None:
    """A fake server reads the ClientHello and answers with garbage (random, or its real first
    flight with bytes flipped), then closes: the client's ``connect`` raises ``SslError`` (or, for
    a flip TLS ignores, the first read reports the truncation)."""
    rounds = scaled(16, 300)
    rng = random.Random("garbage-server")
    server_ctx = stdlib_server_context(tls_files.cert, tls_files.key)
    with socket.create_server(("127.0.0.1", 0)) as srv, anyio.fail_after(GUARD):
        srv.settimeout(STEP)
        port = srv.getsockname()[1]
        refused = 0
        for _ in range(rounds):
            seed = rng.random()

            def serve(seed: float = seed) -> None:
                local = random.Random(seed)
                conn, _ = srv.accept()
                with conn:
                    conn.settimeout(STEP)
                    hello = conn.recv(65536)
                    server = ManualTlsServer(conn, server_ctx)
                    server.incoming.write(hello)
                    with contextlib.suppress(ssl.SSLError):
                        server.obj.do_handshake()
                    flight = bytearray(server.outgoing.read())
                    if local.random() < 0.5 or not flight:
                        flight = bytearray(local.randbytes(local.randint(1, 3000)))
                    else:
                        for _ in range(local.randint(1, 8)):
                            flight[local.randrange(len(flight))] = local.randrange(256)
                    conn.sendall(bytes(flight))

            async with anyio.create_task_group() as tg:
                tg.start_soon(in_thread, serve)
                try:
                    s = await tls_client(face, tls_client_ctx, port)  # (closes what it made)
                except SslError as exc:
                    assert str(exc).startswith("TLS handshake with 127.0.0.1:"), exc  # noqa: PT017
                    refused += 1
                    continue
            # A flipped byte that TLS ignores (the legacy version of a plaintext record header,
            # RFC 8446 5.1): the handshake is fine. The server is gone: the next read says so.
            try:
                with pytest.raises((SslError, ConnectionResetError)):
                    await s.recv_line(timeout=STEP, flags=NO_FLAGS)
            finally:
                await s.close()
    assert refused >= rounds // 2, refused


async def test_garbage_after_a_good_handshake(
    face: Face, tls_files: TlsFiles, tls_client_ctx: SslContext
) -> None:
    """Random bytes where the next record should be: ``SslError`` (under ``SAFE_DISCONN`` too:
    garbage is not a disconnection), after the good data before it."""
    rng = random.Random("garbage-records")
    server_ctx = stdlib_server_context(tls_files.cert, tls_files.key)
    with socket.create_server(("127.0.0.1", 0)) as srv, anyio.fail_after(GUARD):
        srv.settimeout(STEP)
        for flags in (SocketFlag.SAFE_DISCONN, NO_FLAGS) * 3:
            junk = rng.randbytes(rng.randint(1, 3000))
            if rng.random() < 0.5:  # a plausible application-data header first
                junk = b"\x17\x03\x03" + len(junk).to_bytes(2, "big") + junk

            def serve(junk: bytes = junk) -> None:
                conn, _ = srv.accept()
                conn.settimeout(STEP)
                server = ManualTlsServer(conn, server_ctx)
                server.handshake()
                with conn:
                    conn.sendall(server.records(b"good\n") + junk)
                    conn.recv(65536)  # until the client goes

            async with anyio.create_task_group() as tg:
                tg.start_soon(in_thread, serve)
                s = await tls_client(face, tls_client_ctx, srv.getsockname()[1])
                try:
                    assert await s.recv_line(timeout=STEP, flags=flags) == b"good"
                    with pytest.raises(SslError) as info:
                        await s.recv_line(timeout=STEP, flags=flags)
                    assert "TLS" in str(info.value), info.value
                finally:
                    await s.close()


# -- fuzzed IP address text ---------------------------------------------------------------------

FUZZ = settings(max_examples=scaled(500, 20_000), deadline=None)
#: Characters an address is made of, their look-alikes, and separators.
IP_PIECES = [
    *"0123456789abcdefABCDEF:.",
    "::",
    "255",
    "256",
    "0x1",
    "01",
    "ffff",
    "%",
    "[",
    "]",
    " ",
    "\t",
    "\n",
    "\x00",
    "\u0661",  # ARABIC-INDIC DIGIT ONE: int() accepts it, an address must not
    "\uff11",  # FULLWIDTH DIGIT ONE
    "\U0001d7cf",  # MATHEMATICAL BOLD DIGIT ONE
    "\u066b",  # ARABIC DECIMAL SEPARATOR
    "\uff0e",  # FULLWIDTH FULL STOP
    "\uff1a",  # FULLWIDTH COLON
    "\u01c5",  # LATIN CAPITAL LETTER D WITH SMALL LETTER Z WITH CARON (title case)
    "\udcff",  # a lone surrogate (surrogateescape)
]


def ip_like() -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(IP_PIECES), max_size=24).map("".join)


def spec_verdict(text: str) -> bool:
    """SPEC's rule, written from the stdlib: ASCII only, no zone ids, strict dotted quads."""
    if not text.isascii() or "%" in text:
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    dotted = text.rpartition(":")[2]
    if "." in dotted:
        parts = dotted.split(".")
        if any(len(p) > 1 and p.startswith("0") for p in parts):
            return False  # the stdlib rejects these too since 3.9.5; SPEC always does
    return True


@FUZZ
@given(st.one_of(st.text(st.characters(codec=None), max_size=60), ip_like()))
@example("")
@example("\u0661.\u0662.\u0663.\u0664")
@example("\uff11.2.3.4")
@example("1.2.3.4\x00")
@example("::ffff:1.2.3.\uff14")
@example("\udcff")
@example("1" * 100_000)
@example(":" * 100_000)
def test_parse_ip_address_raises_only_value_error(text: str) -> None:
    verdict = is_ip_address(text)  # never raises
    assert verdict is spec_verdict(text), text
    if verdict:
        ip = parse_ip_address(text)
        assert ip.to_ipaddress() == ipaddress.ip_address(text)
        assert parse_ip_address(str(ip)) == ip
        return
    # Anything else is a ValueError (pytest.raises lets every other exception through: a fail).
    with pytest.raises(ValueError, match=r"^invalid IP address ") as info:
        parse_ip_address(text)
    if "'" not in text and '"' not in text:
        assert repr(text[:16])[1:-1] in str(info.value), info.value  # the input is quoted


@given(
    st.one_of(
        st.binary(max_size=20),
        st.integers(),
        st.none(),
        st.floats(),
        st.lists(st.text(max_size=3), max_size=3),
        st.builds(bytearray, st.binary(max_size=8)),
    )
)
@settings(max_examples=scaled(100, 2000), deadline=None)
def test_ip_functions_on_non_text(value: Any) -> None:
    assert is_ip_address(value) is False
    with pytest.raises(TypeError):
        parse_ip_address(value)


def test_long_hostile_ip_text_is_rejected_quickly() -> None:
    """Linear time on long inputs (a quadratic parser would stall a server here)."""
    inputs = [
        "1." * 500_000,
        ":" * 1_000_000,
        "1:" * 500_000,
        "f" * 1_000_000,
        "::" + "1:" * 300_000 + "1.2.3.4",
        "\u0661" * 1_000_000,
    ]
    start = time.monotonic()
    for text in inputs:
        assert is_ip_address(text) is False
        with pytest.raises(ValueError):  # noqa: PT011 (the message is checked above)
            parse_ip_address(text)
    assert time.monotonic() - start < 5
