"""A default context refuses bad TLS peers, saying why, on all four faces.

The client context is ``new_context()`` as a user writes it: certifi's CAs, or ``ca_file`` for the
session's trustme CA where the test needs one CA to be trusted. Peers are stdlib TLS servers (and
clients) in threads, so the refusal is duonet's own. Every refusal is an ``SslError`` whose message
names the peer and the reason (SPEC: "every TLS failure surfaces as it, with a message that names
the reason").
"""

from __future__ import annotations

import contextlib
import datetime
import re
import socket
import ssl
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import trustme

from conftest import TlsFiles
from duonet import SocketFlag, SslContext, SslError, new_context
from scenarios import Face

from .test_harness import (  # noqa: F401 (fixtures)
    GUARD,
    STEP,
    anyio_backend_fixture,
    face_fixture,
    face_name_fixture,
    in_thread,
    stdlib_server_context,
    tls_client,
    tls_listener,
)


def write_leaf(folder: Path, name: str, leaf: trustme.LeafCert) -> tuple[str, str]:
    cert, key = folder / f"{name}.pem", folder / f"{name}.key"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    return str(cert), str(key)


def self_signed(folder: Path) -> tuple[str, str]:
    """A self-signed certificate for localhost and 127.0.0.1 (its own issuer, no CA)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "self_signed.pem", folder / "self_signed.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


class Bad:
    """Server certificates a default client must refuse, as ``(cert, key)`` paths."""

    def __init__(self, ca: trustme.CA, folder: Path) -> None:
        now = datetime.datetime.now(datetime.timezone.utc)
        self.expired = write_leaf(
            folder,
            "expired",
            ca.issue_cert(
                "localhost",
                "127.0.0.1",
                not_before=now - datetime.timedelta(days=30),
                not_after=now - datetime.timedelta(days=1),
            ),
        )
        self.not_yet_valid = write_leaf(
            folder,
            "not_yet_valid",
            ca.issue_cert(
                "localhost",
                "127.0.0.1",
                not_before=now + datetime.timedelta(days=1),
                not_after=now + datetime.timedelta(days=30),
            ),
        )
        self.wrong_host = write_leaf(folder, "wrong_host", ca.issue_cert("other.example"))
        self.wrong_ip = write_leaf(folder, "wrong_ip", ca.issue_cert("127.0.0.2"))
        self.self_signed = self_signed(folder)
        self.trustme_leaf = write_leaf(folder, "trustme_leaf", ca.issue_cert("localhost"))


@pytest.fixture(scope="module")
def bad(tls_ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory) -> Bad:
    return Bad(tls_ca, tmp_path_factory.mktemp("reliability_bad_certs"))


@contextlib.contextmanager
def refusing_peer(ctx: ssl.SSLContext) -> Iterator[int]:
    """A stdlib TLS server (one thread) whose handshakes are expected to fail; its port."""
    stop = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as srv:
        srv.settimeout(0.1)

        def serve() -> None:
            while not stop.is_set():
                try:
                    conn, _ = srv.accept()
                except TimeoutError:
                    continue
                with conn:
                    conn.settimeout(STEP)
                    with contextlib.suppress(OSError), ctx.wrap_socket(conn, server_side=True):
                        pass

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            yield srv.getsockname()[1]
        finally:
            stop.set()
            thread.join(STEP + 1)
    assert not thread.is_alive()


def old_versions_only(ctx: ssl.SSLContext, version: ssl.TLSVersion) -> ssl.SSLContext:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TLS 1.0/1.1 are deprecated
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        ctx.minimum_version = ctx.maximum_version = version
    return ctx


def old_version_supported(version: ssl.TLSVersion) -> bool:
    """Whether this OpenSSL can still speak ``version`` at all (some builds removed it)."""
    try:
        old_versions_only(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), version)
    except (ssl.SSLError, ValueError):
        return False
    return getattr(ssl, f"HAS_{version.name}", False) is True


OLD_VERSIONS = [
    pytest.param(
        version,
        id=version.name,
        marks=pytest.mark.skipif(
            not old_version_supported(version), reason=f"this OpenSSL cannot speak {version.name}"
        ),
    )
    for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1)
]


async def refused(face: Face, client_ctx: SslContext, port: int, host: str) -> str:
    """Connect with ``client_ctx``: the ``SslError``'s message (anything else fails the test)."""
    with anyio.fail_after(GUARD), pytest.raises(SslError) as info:
        await tls_client(face, client_ctx, port, host)
    message = str(info.value)
    assert message.startswith("TLS handshake with "), message
    assert info.value.__cause__ is not None
    return message


CASES = {
    # name: (certificate attribute, trust the trustme CA?, host, reason pattern)
    "expired": (
        "expired",
        True,
        "localhost",
        r"certificate verify failed: certificate has expired",
    ),
    "not_yet_valid": (
        "not_yet_valid",
        True,
        "localhost",
        r"certificate verify failed: certificate is not yet valid",
    ),
    "self_signed": (
        "self_signed",
        False,
        "localhost",
        r"certificate verify failed: self[- ]signed certificate",
    ),
    "unknown_ca": (
        "trustme_leaf",
        False,
        "localhost",
        r"certificate verify failed: unable to get local issuer certificate \(unknown CA\)",
    ),
    "wrong_host": (
        "wrong_host",
        True,
        "localhost",
        r"hostname mismatch: certificate is not valid for 'localhost'",
    ),
    "wrong_ip": (
        "wrong_ip",
        True,
        "127.0.0.1",
        r"IP address mismatch: certificate is not valid for '127\.0\.0\.1'",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_default_client_refuses_a_bad_certificate(
    face: Face, bad: Bad, tls_files: TlsFiles, case: str
) -> None:
    attribute, trust_ca, host, reason = CASES[case]
    cert, key = getattr(bad, attribute)
    # What a user writes: the defaults (certifi's CAs), or the one CA this deployment uses.
    client_ctx = new_context(ca_file=tls_files.ca) if trust_ca else new_context()
    with refusing_peer(stdlib_server_context(cert, key)) as port:
        message = await refused(face, client_ctx, port, host)
    assert re.search(reason, message), message
    assert f"{host}:{port}" in message or f"127.0.0.1:{port}" in message, message


@pytest.mark.parametrize("version", OLD_VERSIONS)
async def test_default_client_refuses_an_old_protocol_server(
    face: Face, tls_files: TlsFiles, version: ssl.TLSVersion
) -> None:
    server_ctx = old_versions_only(stdlib_server_context(tls_files.cert, tls_files.key), version)
    with refusing_peer(server_ctx) as port:
        message = await refused(face, new_context(ca_file=tls_files.ca), port, "localhost")
    assert "unsupported protocol version" in message, message


@pytest.mark.parametrize("version", OLD_VERSIONS)
async def test_default_server_refuses_an_old_protocol_client(
    face: Face, tls_files: TlsFiles, version: ssl.TLSVersion
) -> None:
    server_ctx = new_context(cert_file=tls_files.cert, key_file=tls_files.key)
    client_ctx = old_versions_only(ssl.create_default_context(cafile=tls_files.ca), version)
    lst, port = tls_listener(face, server_ctx)
    outcome: list[str] = []

    def old_client() -> None:
        try:
            with (
                socket.create_connection(("127.0.0.1", port), timeout=STEP) as raw,
                client_ctx.wrap_socket(raw, server_hostname="localhost"),
            ):
                outcome.append("connected")
        except (ssl.SSLError, OSError) as exc:
            outcome.append(type(exc).__name__)

    try:
        with anyio.fail_after(GUARD):
            async with anyio.create_task_group() as tg:
                tg.start_soon(in_thread, old_client)
                with pytest.raises(SslError) as info:
                    await lst.accept(flags=SocketFlag(0), timeout=STEP)
    finally:
        await lst.close()
    assert len(outcome) == 1
    assert outcome != ["connected"], outcome
    assert "unsupported protocol version" in str(info.value), info.value
    assert str(info.value).startswith("TLS handshake with 127.0.0.1:"), info.value
