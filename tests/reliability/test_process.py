"""Faults of the process itself, each run in a fresh interpreter (with a timeout, killed on exit).

* ``EMFILE`` while accepting: the soft ``RLIMIT_NOFILE`` is lowered and every descriptor taken,
  with ``accept`` already waiting; the listener must fail with a clear ``OSError`` and serve the
  waiting client (and the next ones) once descriptors are free again. ``ENFILE`` (the system-wide
  table) cannot be exhausted without hurting the whole machine; it takes the same path (an errno
  that is not a disconnection), so it is not injected.
* ``os.fork()`` while another thread is blocked in a call: the child uses both APIs.
* A program that never closes its sockets (TLS listener with a stalled handshake, TLS and plain
  connections, threads blocked in calls) exits promptly and silently.
* Interpreter shutdown while a non-daemon thread is blocked in ``recv_line`` with a timeout.

``tests/test_blocking.py`` already covers Ctrl-C, a fork with no call in flight, and interpreter
exit with a daemon thread blocked in a plain ``recv_line``; these tests do not repeat them.
"""

from __future__ import annotations

import json
import os
import time

import pytest

from conftest import TlsFiles

from .test_harness import FACES, run_python

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="POSIX only")


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


PORTAL_BACKENDS = [
    "asyncio",
    "trio",
    pytest.param(
        "uvloop", marks=pytest.mark.skipif(not _has_uvloop(), reason="uvloop is not installed")
    ),
]


# -- EMFILE during accept -----------------------------------------------------------------------

EMFILE = r"""
import errno, json, os, resource, socket, ssl, sys, threading, time
import anyio
import duonet
import duonet.aio as aio

face, tls = sys.argv[1], sys.argv[2] == "tls"
cert, key, ca = sys.argv[3:6]
blocking = face.startswith("blocking")
backend = face.split("-", 1)[1]
if blocking:
    duonet.configure(backend)
server_ctx = duonet.new_context(
    verify_mode=duonet.SslCVerifyMode.NONE, cert_file=cert, key_file=key
)
client_ctx = ssl.create_default_context(cafile=ca)
report = {"clients": []}


def describe(outcome):
    if isinstance(outcome, BaseException):
        return {"type": type(outcome).__name__, "errno": getattr(outcome, "errno", None),
                "message": str(outcome)}
    return {"type": "ok"}


def exhaust():
    # Lower the soft limit just above the highest descriptor in use, then take every one left.
    top = max(int(fd) for fd in os.listdir("/proc/self/fd"))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (top + 24, hard))
    fillers = []
    while True:
        try:
            fillers.append(os.open(os.devnull, os.O_RDONLY))
        except OSError as exc:
            assert exc.errno == errno.EMFILE, exc
            return fillers


def talk(sock):
    try:
        conn = client_ctx.wrap_socket(sock, server_hostname="localhost") if tls else sock
        with conn:
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(100)
                if not chunk:
                    break
                data += chunk
            conn.sendall(b"ok\n")
            report["clients"].append(data.decode())
    except Exception as exc:
        report["clients"].append(repr(exc))


def start_client(port):
    sock = socket.socket()  # takes a free descriptor now; the handshake is in a thread
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))  # completes in the listener's backlog
    thread = threading.Thread(target=talk, args=(sock,))
    thread.start()
    return thread


def blocking_main():
    lst = duonet.new_socket()
    lst.bind_addr(0, "127.0.0.1")
    if tls:
        duonet.wrap_socket(server_ctx, lst)
    lst.listen()
    port = lst.get_local_addr()[1]
    try:
        lst.accept(timeout=0.05)  # starts the portal before descriptors run out
    except TimeoutError:
        pass
    box = []

    def waiting_accept():
        try:
            box.append(lst.accept(timeout=10))
        except Exception as exc:
            box.append(exc)

    waiter = threading.Thread(target=waiting_accept)
    waiter.start()
    time.sleep(0.3)
    fillers = exhaust()
    os.close(fillers.pop())
    first = start_client(port)
    waiter.join(15)
    report["waiting_accept"] = describe(box[0])
    try:
        lst.accept(timeout=0.5)
        report["accept_while_full"] = describe(None)
    except Exception as exc:
        report["accept_while_full"] = describe(exc)
    for fd in fillers:
        os.close(fd)
    for thread in (first, None):
        thread = thread or start_client(port)
        with lst.accept(timeout=10) as conn:
            conn.send(b"hi\n", timeout=10)
            assert conn.recv_line(timeout=10) == b"ok"
        thread.join(10)
    lst.close()


async def aio_main():
    lst = aio.new_async_socket()
    lst.bind_addr(0, "127.0.0.1")
    if tls:
        aio.wrap_socket(server_ctx, lst)
    lst.listen()
    port = lst.get_local_addr()[1]
    box = []

    async def waiting_accept():
        try:
            box.append(await lst.accept(timeout=10))
        except Exception as exc:
            box.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiting_accept)
        await anyio.sleep(0.3)
        fillers = exhaust()
        os.close(fillers.pop())
        first = start_client(port)
    report["waiting_accept"] = describe(box[0])
    try:
        await lst.accept(timeout=0.5)
        report["accept_while_full"] = describe(None)
    except Exception as exc:
        report["accept_while_full"] = describe(exc)
    for fd in fillers:
        os.close(fd)
    for thread in (first, None):
        thread = thread or start_client(port)
        async with await lst.accept(timeout=10) as conn:
            await conn.send(b"hi\n", timeout=10)
            assert await conn.recv_line(timeout=10) == b"ok"
        await anyio.to_thread.run_sync(thread.join, 10)
    await lst.close()


if blocking:
    blocking_main()
else:
    anyio.run(aio_main, backend=backend)
print(json.dumps(report), flush=True)
"""


@pytest.mark.parametrize("tls", ["plain", "tls"])
@pytest.mark.parametrize("face_name", FACES)
def test_emfile_during_accept(face_name: str, tls: str, tls_files: TlsFiles) -> None:
    result = run_python(
        EMFILE, face_name, tls, tls_files.cert, tls_files.key, tls_files.ca, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    for key in ("waiting_accept", "accept_while_full"):
        outcome = report[key]
        # A clear error: the OS's own errno and reason, with the listener's address.
        assert outcome["type"] == "OSError", (key, outcome)
        assert outcome["errno"] == 24, (key, outcome)  # EMFILE
        assert "Too many open files" in outcome["message"], (key, outcome)
        assert "127.0.0.1" in outcome["message"], (key, outcome)
    # The listener survived: the client that waited and a new one are both served.
    assert report["clients"] == ["hi\n", "hi\n"], report


# -- fork while another thread is blocked in a call ---------------------------------------------

FORK_WHILE_BLOCKED = r"""
import os, socket, sys, threading, time, warnings
import anyio
import duonet
import duonet.aio as aio

srv = socket.create_server(("127.0.0.1", 0))
srv.settimeout(10)
port = srv.getsockname()[1]


def echo(conn):
    with conn:
        conn.settimeout(20)
        while data := conn.recv(100):
            conn.sendall(data)


def acceptor():
    while True:
        try:
            conn, _ = srv.accept()
        except OSError:
            return
        threading.Thread(target=echo, args=(conn,), daemon=True).start()


threading.Thread(target=acceptor, daemon=True).start()


def roundtrip(tag):
    with duonet.new_socket() as s:
        s.connect("127.0.0.1", port, timeout=5)
        s.send(tag + "\n", timeout=5)
        return s.recv_line(timeout=5)


async def aio_roundtrip(tag):
    async with aio.new_async_socket() as s:
        await s.connect("127.0.0.1", port, timeout=5)
        await s.send(tag + "\n", timeout=5)
        return await s.recv_line(timeout=5)


print("parent", roundtrip("before"), flush=True)
blocked = duonet.new_socket()
blocked.connect("127.0.0.1", port, timeout=5)
box = []
reader = threading.Thread(target=lambda: box.append(blocked.recv_line(timeout=20)))
reader.start()
time.sleep(0.3)  # the reader waits in the portal for a line
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads
    pid = os.fork()
if pid == 0:
    out = []
    try:
        out.append(roundtrip("child"))
        out.append(anyio.run(aio_roundtrip, "child-aio", backend="asyncio"))
        out.append(anyio.run(aio_roundtrip, "child-trio", backend="trio"))
        start = time.monotonic()
        try:  # the parent's reader is not here: this copy must fail fast, not wait for it
            blocked.recv_line(timeout=2)
            out.append("no error")
        except Exception as exc:
            out.append(type(exc).__name__)
        out.append(time.monotonic() - start < 1.5)
        blocked.close()
        out.append("closed")
    except BaseException as exc:
        out.append(repr(exc))
    print("child", out, flush=True)
    sys.exit(0)  # a normal exit: atexit stops the child's own portal
deadline = time.monotonic() + 20
while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    if time.monotonic() > deadline:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        print("child hung", flush=True)
        sys.exit(3)
    time.sleep(0.02)
print("child exit", os.waitstatus_to_exitcode(status), flush=True)
blocked.send(b"wake\n", timeout=5)  # the parent's blocked reader still works
reader.join(10)
print("parent reader", box, flush=True)
print("parent", roundtrip("after"), flush=True)
blocked.close()
srv.close()
"""


@pytest.mark.parametrize("backend", PORTAL_BACKENDS)
def test_fork_while_a_thread_is_blocked(backend: str) -> None:
    result = run_python(FORK_WHILE_BLOCKED, timeout=60, DUONET_BACKEND=backend)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "parent b'before'", result.stdout
    child = next(line for line in lines if line.startswith("child ["))
    assert child == (
        "child [b'child', b'child-aio', b'child-trio', 'BusyError', True, 'closed']"
    ), result.stdout + result.stderr
    assert "child exit 0" in lines, result.stdout
    assert "parent reader [b'wake']" in lines, result.stdout
    assert lines[-1] == "parent b'after'", result.stdout


# -- a program that never closes its sockets ----------------------------------------------------

NEVER_CLOSES_BLOCKING = r"""
import socket, sys, threading, time
import duonet

cert, key, ca = sys.argv[1:4]
server_ctx = duonet.new_context(
    verify_mode=duonet.SslCVerifyMode.NONE, cert_file=cert, key_file=key
)
client_ctx = duonet.new_context(ca_file=ca)
lst = duonet.new_socket()
lst.bind_addr(0, "127.0.0.1")
duonet.wrap_socket(server_ctx, lst)
lst.listen()
port = lst.get_local_addr()[1]
client = duonet.new_socket()
duonet.wrap_socket(client_ctx, client)
connecting = threading.Thread(target=client.connect, args=("127.0.0.1", port, 5))
connecting.start()
served = lst.accept(timeout=5)
connecting.join()
client.send(b"no end of line")
stalled = socket.create_connection(("127.0.0.1", port))  # parks a handshake on the listener
plain = duonet.new_socket()
plain.bind_addr(0, "127.0.0.1")
plain.listen()
plain_client = duonet.dial("127.0.0.1", plain.get_local_addr()[1], timeout=5)
plain_served = plain.accept(timeout=5)
for call in (served.recv_line, lst.accept, plain_served.recv_line, client.recv_line):
    threading.Thread(target=call, daemon=True).start()
time.sleep(0.3)
print("main done", flush=True)
"""

NEVER_CLOSES_AIO = r"""
import socket, sys
import anyio
import duonet.aio as aio

cert, key, ca, backend = sys.argv[1:5]
server_ctx = aio.new_context(verify_mode=aio.SslCVerifyMode.NONE, cert_file=cert, key_file=key)
client_ctx = aio.new_context(ca_file=ca)
kept = []


async def main():
    lst = aio.new_async_socket()
    lst.bind_addr(0, "127.0.0.1")
    aio.wrap_socket(server_ctx, lst)
    lst.listen()
    port = lst.get_local_addr()[1]
    client = aio.new_async_socket()
    aio.wrap_socket(client_ctx, client)
    async with anyio.create_task_group() as tg:
        tg.start_soon(client.connect, "127.0.0.1", port, 5)
        served = await lst.accept(timeout=5)
    await client.send(b"no end of line")
    kept.append(socket.create_connection(("127.0.0.1", port)))
    # Tasks blocked in calls when the program gives up on them (the cancel is its way out).
    async with anyio.create_task_group() as tg:
        for call in (served.recv_line, lst.accept, client.recv_line):
            tg.start_soon(call)
        await anyio.sleep(0.3)
        tg.cancel_scope.cancel()
    kept.extend([lst, client, served])


anyio.run(main, backend=backend)
print("main done", flush=True)
"""


@pytest.mark.parametrize(
    "variant", ["blocking-asyncio", "blocking-trio", "blocking-uvloop", "aio-asyncio", "aio-trio"]
)
def test_program_that_never_closes_exits_promptly(variant: str, tls_files: TlsFiles) -> None:
    face, backend = variant.split("-")
    if backend == "uvloop" and not _has_uvloop():
        pytest.skip("uvloop is not installed")
    files = [tls_files.cert, tls_files.key, tls_files.ca]
    start = time.monotonic()
    if face == "blocking":
        result = run_python(NEVER_CLOSES_BLOCKING, *files, timeout=30, DUONET_BACKEND=backend)
    else:
        result = run_python(NEVER_CLOSES_AIO, *files, backend, timeout=30)
    elapsed = time.monotonic() - start
    assert result.returncode == 0, result.stderr
    assert result.stdout == "main done\n"
    assert result.stderr == ""  # no traceback, no "Exception ignored" at exit
    assert elapsed < 8, elapsed


# -- interpreter shutdown while a non-daemon thread is blocked ----------------------------------

SHUTDOWN_WAITS_FOR_A_BOUNDED_CALL = r"""
import socket, threading, time
import duonet

srv = socket.create_server(("127.0.0.1", 0))
s = duonet.new_socket()
s.connect("127.0.0.1", srv.getsockname()[1], timeout=5)
conn, _ = srv.accept()
conn.sendall(b"partial")


def reader():
    try:
        s.recv_line(timeout=1.0)
    except TimeoutError:
        print("reader timed out", s.read_line_nowait(), flush=True)


threading.Thread(target=reader).start()  # not a daemon: the interpreter waits for it
time.sleep(0.2)
print("main done", flush=True)
"""


@pytest.mark.parametrize("backend", PORTAL_BACKENDS)
def test_shutdown_while_a_thread_waits_in_recv_line(backend: str) -> None:
    """The portal outlives the main thread until every non-daemon thread has finished: the
    blocked call ends by its own timeout, with its bytes still buffered, and the program exits."""
    start = time.monotonic()
    result = run_python(SHUTDOWN_WAITS_FOR_A_BOUNDED_CALL, timeout=30, DUONET_BACKEND=backend)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "main done",
        "reader timed out (<ReadLineResult.NONE: 3>, b'')",
    ], result.stdout + result.stderr
    assert result.stderr == ""
    assert time.monotonic() - start < 8
