"""The reliability suite's shared harness (imported by its other modules), and its self-checks.

Every network test of ``tests/reliability`` runs on four faces:

* ``aio-asyncio`` / ``aio-trio``: :class:`duonet.aio.AsyncSocket` on the test's own event loop;
* ``blocking-asyncio`` / ``blocking-trio``: the blocking :class:`duonet.Socket` with duonet's portal
  on that backend. The test loop is asyncio and every blocking call runs in a worker thread
  (``tests/scenarios.py``'s :class:`~scenarios.BlockingAdapter`), so one test body serves all four
  faces, and ``close()`` on the blocking face really comes from another thread.

Peers are stdlib sockets (threads) or subprocesses, never duonet itself unless the test says so, so
a bug cannot hide on both ends. Traffic goes to 127.0.0.1 only. Sizes are small in the default run
and large under ``DUONET_STRESS=1`` (``nox -s stress``): see :func:`scaled`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import ssl
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import anyio.to_thread
import pytest

import duonet
import duonet.aio as aio
from duonet import SslContext, SslHandshakeType, _portal
from scenarios import AsyncFace, BlockingAdapter, BlockingFace, Face, wrap

__all__ = (
    "FACES",
    "GUARD",
    "STEP",
    "STRESS",
    "Child",
    "ManualTlsServer",
    "anyio_backend_fixture",
    "face_fixture",
    "face_name_fixture",
    "fd_count",
    "in_thread",
    "plain_listener",
    "reset",
    "run_python",
    "scaled",
    "stdlib_server_context",
    "thread_count",
    "tls_client",
    "tls_listener",
    "wrap",
    "wrap_connected",
)

#: ``nox -s stress`` sets it: the long variants run, the sizes grow.
STRESS = os.environ.get("DUONET_STRESS", "") not in ("", "0")
#: The timeout of a step that must succeed: never reached when duonet works.
STEP = 5.0
#: The hang guard around a whole test body.
GUARD = 45.0

FACES = ["aio-asyncio", "aio-trio", "blocking-asyncio", "blocking-trio"]


def scaled(default: int, stress: int) -> int:
    """``stress`` under ``DUONET_STRESS=1``, else ``default``."""
    return stress if STRESS else default


# -- the four faces -----------------------------------------------------------------------------


@pytest.fixture(params=FACES, name="face_name")
def face_name_fixture(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(name="anyio_backend")
def anyio_backend_fixture(face_name: str) -> str:
    """The test's loop: trio for ``aio-trio``; asyncio otherwise (the blocking face's threads)."""
    return "trio" if face_name == "aio-trio" else "asyncio"


@pytest.fixture(name="face")
def face_fixture(face_name: str) -> Iterator[Face]:
    """An :class:`~scenarios.AsyncFace`, or a :class:`~scenarios.BlockingFace` whose portal runs
    on the backend named by ``face_name`` (restarted for the test)."""
    if not face_name.startswith("blocking"):
        yield AsyncFace()
        return
    _portal.reset()
    _portal.configure(face_name.split("-", 1)[1])
    try:
        yield BlockingFace()
    finally:
        _portal.reset()
        _portal.configure(None)


async def in_thread(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking call in a worker thread (abandoned if the test's hang guard fires)."""
    return await anyio.to_thread.run_sync(
        functools.partial(func, *args, **kwargs), abandon_on_cancel=True
    )


async def wrap_connected(
    ctx: SslContext,
    s: Any,
    handshake: SslHandshakeType,
    hostname: str = "",
    timeout: float | None = STEP,
) -> None:
    """``wrap_connected_socket`` on either face (a worker thread for the blocking one)."""
    if isinstance(s, BlockingAdapter):
        await in_thread(duonet.wrap_connected_socket, ctx, s.sock, handshake, hostname, timeout)
    else:
        await aio.wrap_connected_socket(ctx, s, handshake, hostname, timeout)


def plain_listener(face: Face, host: str = "127.0.0.1") -> tuple[Any, int]:
    """A listening socket of ``face`` on loopback, and its port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    lst = face.new_socket(family)
    lst.bind_addr(0, host)
    lst.listen()
    return lst, int(lst.get_local_addr()[1])


def tls_listener(face: Face, ctx: SslContext, host: str = "127.0.0.1") -> tuple[Any, int]:
    """A TLS listener of ``face`` (wrapped before ``listen``), and its port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    lst = face.new_socket(family)
    lst.bind_addr(0, host)
    wrap(ctx, lst)
    lst.listen()
    return lst, int(lst.get_local_addr()[1])


async def tls_client(
    face: Face, ctx: SslContext, port: int, host: str = "127.0.0.1", timeout: float = STEP
) -> Any:
    """A socket of ``face`` wrapped with ``ctx`` and connected (handshake done) to ``host``."""
    s = face.new_socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    wrap(ctx, s)
    try:
        await s.connect(host, port, timeout=timeout)
    except BaseException:
        await s.close()
        raise
    return s


# -- stdlib peers -------------------------------------------------------------------------------


def unacked(conn: socket.socket) -> int:
    """Bytes ``conn`` has sent that its peer has not acknowledged yet (Linux ``SIOCOUTQ``)."""
    import fcntl
    import termios

    return struct.unpack("i", fcntl.ioctl(conn.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]


def reset(conn: socket.socket) -> None:
    """Close ``conn`` with an RST (``SO_LINGER`` 0) instead of a FIN.

    First waits (up to 5 s) until the peer has acknowledged everything sent: an RST discards the
    send queue, and Nagle may still hold a small segment there, which the test would take for a
    byte lost by duonet.
    """
    deadline = time.monotonic() + STEP
    while unacked(conn) and time.monotonic() < deadline:
        time.sleep(0.002)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def stdlib_server_context(
    cert: str, key: str, ca: str | None = None, require_client_cert: bool = False
) -> ssl.SSLContext:
    """A stdlib server context that reports a peer closing without close_notify (``ca``: it
    asks for a client certificate signed by it, and with ``require_client_cert`` insists)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    ctx.load_cert_chain(cert, key)
    if ca:
        ctx.load_verify_locations(ca)
        ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    return ctx


class ManualTlsServer:
    """The server end of one TLS connection, driven by hand over memory BIOs.

    It gives the test the encrypted records themselves, so it can send half a record, garbage
    after a good handshake, or reset the connection at an exact byte. ``conn`` is a blocking
    stdlib socket with a timeout.
    """

    def __init__(self, conn: socket.socket, ctx: ssl.SSLContext) -> None:
        self.conn = conn
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.incoming, self.outgoing, server_side=True)

    def flush(self) -> None:
        data = self.outgoing.read()
        if data:
            self.conn.sendall(data)

    def handshake(self) -> None:
        while True:
            try:
                self.obj.do_handshake()
            except ssl.SSLWantReadError:
                self.flush()
                data = self.conn.recv(65536)
                if not data:
                    raise ConnectionError("the client closed during the handshake") from None
                self.incoming.write(data)
                continue
            self.flush()
            return

    def records(self, data: bytes) -> bytes:
        """The TLS records carrying ``data`` (not sent)."""
        self.obj.write(data)
        return self.outgoing.read()


# -- subprocesses -------------------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, **extra)
    # The child imports duonet the way this process did (an installed or a source tree).
    src = os.path.dirname(os.path.dirname(os.path.abspath(duonet.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH", "")) if p)
    return env


def run_python(
    script: str, *args: str, timeout: float = 60.0, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter (killed after ``timeout``); capture its output."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(**env),
    )


class Child:
    """A Python subprocess driven line by line over its stdout; always killed on exit."""

    def __init__(self, script: str, *args: str, **env: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(**env),
        )

    def readline(self, timeout: float = 20.0) -> str:
        """The child's next line of output (``AssertionError`` if none comes in time)."""
        assert self.proc.stdout is not None
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()))  # type: ignore[union-attr]
        reader.daemon = True
        reader.start()
        reader.join(timeout)
        if not result:
            self.kill()
            raise AssertionError(f"no output from the child in {timeout} s: {self.stderr()}")
        return result[0].rstrip("\n")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.proc.wait(10)

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.kill()
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


# -- resources ----------------------------------------------------------------------------------


def fd_count() -> int:
    """Open file descriptors of this process."""
    return len(os.listdir("/proc/self/fd"))


def thread_count() -> int:
    """Threads of this process, native ones included (``/proc/self/task``)."""
    return len(os.listdir("/proc/self/task"))


@contextlib.contextmanager
def no_resource_warnings() -> Iterator[list[Any]]:
    """Record every ``ResourceWarning`` (also from ``gc.collect()``) raised inside the block."""
    import gc
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield caught
        gc.collect()
    resource = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not resource, [str(w.message) for w in resource]


# -- self-checks --------------------------------------------------------------------------------


async def test_face_closes_what_it_opens(face: Face) -> None:
    """The harness itself: every face gives sockets that close and free their descriptor."""
    counts = []
    with anyio.fail_after(GUARD):
        for _ in range(3):  # the first round may start the portal (its loop holds descriptors)
            lst, port = plain_listener(face)
            client = face.new_socket()
            await client.connect("127.0.0.1", port, timeout=STEP)
            server = await lst.accept(timeout=STEP)
            for s in (client, server, lst):
                await s.close()
            counts.append(fd_count())
    assert counts[1] == counts[2]


def test_child_is_killed_on_exit() -> None:
    with Child("import time; print('up', flush=True); time.sleep(60)") as child:
        assert child.readline() == "up"
    assert child.proc.returncode == -signal.SIGKILL


def test_resource_warning_is_caught() -> None:
    """``no_resource_warnings`` really sees a leaked socket (so its silence means something)."""
    with pytest.raises(AssertionError, match="unclosed"), no_resource_warnings():
        socket.socket()
    start = time.monotonic()
    with no_resource_warnings():
        socket.socket().close()
    assert time.monotonic() - start < 5
