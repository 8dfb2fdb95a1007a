"""Shared fixtures: both anyio backends, both portal backends, stdlib peers on loopback.

Every async test runs on asyncio and trio (``anyio_backend`` is pinned, so a missing trio fails
instead of being skipped). Blocking tests take ``portal_backend``, which restarts duonet's portal
on asyncio and on trio. Peers written with the stdlib ``socket`` module run in threads, so a bug
cannot hide on both ends.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import inspect
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

# tests/scenarios.py holds the conformance suite's assertions: have pytest explain them.
pytest.register_assert_rewrite("scenarios")

from duonet import _portal  # noqa: E402

#: anyio's pytest plugin reads ``anyio_mode = "auto"`` (pyproject.toml) from anyio 4.11 on; on the
#: lowest anyio allowed (4.10, ``nox -s lowest``) this file declares the option and does the same.
_ANYIO_HAS_AUTO_MODE = tuple(
    int(part) for part in importlib.metadata.version("anyio").split(".")[:2]
) >= (4, 11)


def pytest_addoption(parser: pytest.Parser) -> None:
    if not _ANYIO_HAS_AUTO_MODE:
        parser.addini("anyio_mode", "anyio >= 4.11's plugin mode (done here below 4.11)")


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: Any) -> None:
    if _ANYIO_HAS_AUTO_MODE or not isinstance(collector, (pytest.Module, pytest.Class)):
        return
    if collector.istestfunction(obj, name) and inspect.iscoroutinefunction(obj):
        pytest.mark.usefixtures("anyio_backend")(obj)  # what anyio's auto mode does


@pytest.fixture(scope="module", params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["asyncio", "trio"])
def portal_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the blocking API's portal on this backend for the test."""
    _portal.reset()
    _portal.configure(str(request.param))
    yield str(request.param)
    _portal.reset()
    _portal.configure(None)


def has_ipv6() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError:
        return False
    return True


HAS_IPV6 = has_ipv6()
needs_ipv6 = pytest.mark.skipif(not HAS_IPV6, reason="IPv6 loopback is not available")


class Peer:
    """A stdlib server on loopback that runs ``handler(conn)`` for each client in a thread."""

    def __init__(
        self,
        handler: Callable[[socket.socket], None],
        family: int = socket.AF_INET,
        clients: int = 1,
    ) -> None:
        host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        self.listener = socket.create_server((host, 0), family=family)
        self.listener.settimeout(10)
        self.port: int = self.listener.getsockname()[1]
        self.host = host
        self.errors: list[BaseException] = []
        self._handler = handler
        self._clients = clients
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for _ in range(self._clients):
                conn, _ = self.listener.accept()
                with conn:
                    conn.settimeout(10)
                    self._handler(conn)
        except BaseException as exc:  # reported by close()
            self.errors.append(exc)

    def close(self) -> None:
        self._thread.join(15)
        self.listener.close()
        assert not self._thread.is_alive(), "peer thread did not finish"


@contextlib.contextmanager
def peer(
    handler: Callable[[socket.socket], None], family: int = socket.AF_INET, clients: int = 1
) -> Iterator[Peer]:
    p = Peer(handler, family, clients)
    try:
        yield p
    finally:
        p.close()


def sender(
    *chunks: bytes, pause: float = 0.0, then_close: bool = True
) -> Callable[[socket.socket], None]:
    """A handler that sends ``chunks`` (pausing between them), then closes."""
    import time

    def handler(conn: socket.socket) -> None:
        for chunk in chunks:
            conn.sendall(chunk)
            if pause:
                time.sleep(pause)
        if not then_close:
            conn.recv(1)

    return handler


def resetter(*chunks: bytes) -> Callable[[socket.socket], None]:
    """A handler that sends ``chunks`` then resets the connection (RST, SO_LINGER 0)."""
    import struct
    import time

    def handler(conn: socket.socket) -> None:
        for chunk in chunks:
            conn.sendall(chunk)
        time.sleep(0.05)
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    return handler


# -- TLS: one throwaway CA for the session, certificate files, duonet contexts ----------------

import pathlib  # noqa: E402
import ssl  # noqa: E402

import trustme  # noqa: E402

from duonet import SslContext, SslCVerifyMode, new_context  # noqa: E402


class TlsFiles:
    """PEM files issued by the session's trustme CA (paths as ``str``).

    ``cert``/``key``: a server certificate for ``localhost``, ``127.0.0.1`` and ``::1``;
    ``client_cert``/``client_key``: a client certificate for ``client.example``.
    """

    def __init__(self, ca: trustme.CA, folder: pathlib.Path) -> None:
        self.folder = folder
        self.ca = str(folder / "ca.pem")
        self.cert = str(folder / "server.pem")
        self.key = str(folder / "server.key")
        self.client_cert = str(folder / "client.pem")
        self.client_key = str(folder / "client.key")
        server = ca.issue_cert("localhost", "127.0.0.1", "::1")
        client = ca.issue_cert("client.example")
        ca.cert_pem.write_to_path(self.ca)
        server.cert_chain_pems[0].write_to_path(self.cert)
        server.private_key_pem.write_to_path(self.key)
        client.cert_chain_pems[0].write_to_path(self.client_cert)
        client.private_key_pem.write_to_path(self.client_key)
        self.ca_der = ssl.PEM_cert_to_DER_cert(ca.cert_pem.bytes().decode())
        self.cert_der = ssl.PEM_cert_to_DER_cert(server.cert_chain_pems[0].bytes().decode())
        self.client_der = ssl.PEM_cert_to_DER_cert(client.cert_chain_pems[0].bytes().decode())


_shared_tls_files: TlsFiles | None = None


def shared_tls_files() -> TlsFiles:
    """The process's own :class:`TlsFiles` (for code that cannot take a fixture, such as the
    conformance scenarios); made on first use, removed at exit."""
    global _shared_tls_files
    if _shared_tls_files is None:
        import atexit
        import shutil
        import tempfile

        folder = tempfile.mkdtemp(prefix="duonet-tls-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        _shared_tls_files = TlsFiles(trustme.CA(), pathlib.Path(folder))
    return _shared_tls_files


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def tls_files(tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return TlsFiles(tls_ca, tmp_path_factory.mktemp("tls"))


@pytest.fixture
def tls_server_ctx(tls_files: TlsFiles) -> SslContext:
    """A duonet server context (``verify_mode=NONE``) with the localhost/127.0.0.1/::1 cert."""
    return new_context(
        verify_mode=SslCVerifyMode.NONE, cert_file=tls_files.cert, key_file=tls_files.key
    )


@pytest.fixture
def tls_client_ctx(tls_files: TlsFiles) -> SslContext:
    """A duonet client context (``PEER``) trusting the session CA only."""
    return new_context(ca_file=tls_files.ca)
