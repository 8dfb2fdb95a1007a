"""Tests of duonet's TLS context layer (``duonet._sslcontext``), with no network at all.

Handshakes run between a client and a server ``ssl.SSLObject`` joined by ``ssl.MemoryBIO`` pairs,
exactly as the async core will drive them, only without sockets. Every certificate comes from
trustme.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import shutil
import ssl
import subprocess
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import anyio
import certifi
import pytest
import trustme
from anyio.streams.stapled import StapledObjectStream
from anyio.streams.tls import TLSStream

from duonet._errors import SslError
from duonet._sslcontext import (
    CIPHERS_INTERMEDIATE,
    CIPHERS_MODERN,
    CIPHERS_OLD,
    SslAcceptResult,
    SslContext,
    SslCVerifyMode,
    SslHandshakeType,
    SslProtVersion,
    destroy_context,
    new_context,
    ssl_error_from,
)

PEER = "127.0.0.1:4433"
HAS_PSK = sys.version_info >= (3, 13)
PSK_MESSAGE = "PSK needs Python >= 3.13 (ssl.SSLContext.set_psk_{}_callback)"


# -- in-memory handshakes -------------------------------------------------------------------


@dataclass
class Handshake:
    client: ssl.SSLObject
    server: ssl.SSLObject
    client_error: ssl.SSLError | None
    server_error: ssl.SSLError | None

    @property
    def ok(self) -> bool:
        return self.client_error is None and self.server_error is None


def handshake(
    client_ctx: ssl.SSLContext, server_ctx: ssl.SSLContext, hostname: str | None = "localhost"
) -> Handshake:
    """Run a full TLS handshake between two contexts over memory BIOs (as the core wraps them)."""
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_side=False, server_hostname=hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"client": False, "server": False}
    errors: dict[str, ssl.SSLError | None] = {"client": None, "server": None}

    def step(name: str, obj: ssl.SSLObject) -> None:
        if done[name] or errors[name] is not None:
            return
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            return
        except ssl.SSLError as exc:
            errors[name] = exc
        else:
            done[name] = True

    for _ in range(20):
        step("client", client)
        s_in.write(c_out.read())
        step("server", server)
        c_in.write(s_out.read())
        if all(done[n] or errors[n] is not None for n in done):
            break
    # TLS 1.3: the client finishes before the server has judged the client's certificate; a
    # rejection then reaches the client as an alert on its first read.
    if done["client"] and errors["server"] is not None:
        try:
            client.read(1)
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            errors["client"] = exc
    return Handshake(client, server, errors["client"], errors["server"])


# -- certificates ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def other_ca() -> trustme.CA:
    return trustme.CA()


@dataclass
class Files:
    ca: str
    cert: str
    key: str
    combined: str


@pytest.fixture
def files(ca: trustme.CA, tmp_path: Path) -> Files:
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    paths = Files(
        ca=str(tmp_path / "ca.pem"),
        cert=str(tmp_path / "cert.pem"),
        key=str(tmp_path / "key.pem"),
        combined=str(tmp_path / "combined.pem"),
    )
    ca.cert_pem.write_to_path(paths.ca)
    leaf.cert_chain_pems[0].write_to_path(paths.cert)
    leaf.private_key_pem.write_to_path(paths.key)
    leaf.private_key_and_cert_chain_pem.write_to_path(paths.combined)
    return paths


@pytest.fixture
def server(files: Files) -> SslContext:
    """A server context with a certificate for localhost and 127.0.0.1, trusting ``ca``."""
    return new_context(cert_file=files.cert, key_file=files.key, ca_file=files.ca)


@pytest.fixture
def client(files: Files) -> SslContext:
    """A PEER client context trusting ``ca``."""
    return new_context(ca_file=files.ca)


def write_pem(tmp_path: Path, name: str, blob: trustme.Blob) -> str:
    path = str(tmp_path / name)
    blob.write_to_path(path)
    return path


# -- enums and constants ------------------------------------------------------------------


def test_enums_follow_nim_order() -> None:
    assert [m.name for m in SslCVerifyMode] == ["NONE", "PEER", "PEER_USE_ENV_VARS"]
    assert [m.name for m in SslProtVersion] == ["SSLV2", "SSLV3", "TLSV1", "SSLV23"]
    assert [m.name for m in SslHandshakeType] == ["CLIENT", "SERVER"]
    assert [m.name for m in SslAcceptResult] == ["NO_CLIENT", "NO_HANDSHAKE", "SUCCESS"]
    assert [m.value for m in SslProtVersion] == [0, 1, 2, 3]


def test_cipher_constants_are_nims() -> None:
    assert CIPHERS_MODERN == (
        "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
    )
    assert CIPHERS_INTERMEDIATE == (
        "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:"
        "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
        "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
        "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384"
    )
    assert CIPHERS_OLD.startswith(CIPHERS_INTERMEDIATE)
    assert CIPHERS_OLD.endswith(":DES-CBC3-SHA")


# -- new_context defaults -------------------------------------------------------------------


def test_default_context_settings() -> None:
    ctx = new_context()
    inner = ctx.context
    assert isinstance(inner, ssl.SSLContext)
    assert inner.minimum_version == ssl.TLSVersion.TLSv1_2
    assert inner.verify_mode == ssl.CERT_OPTIONAL
    assert inner.check_hostname
    assert inner.options & ssl.OP_NO_COMPRESSION
    if hasattr(ssl, "OP_NO_RENEGOTIATION"):
        assert inner.options & ssl.OP_NO_RENEGOTIATION
    if hasattr(ssl, "OP_IGNORE_UNEXPECTED_EOF"):
        assert not inner.options & ssl.OP_IGNORE_UNEXPECTED_EOF
    assert inner.security_level >= 2


def test_default_cas_are_certifis() -> None:
    expected = ssl.create_default_context(cafile=certifi.where()).cert_store_stats()["x509_ca"]
    assert expected > 50
    assert new_context().context.cert_store_stats()["x509_ca"] == expected


def test_one_context_serves_both_roles(server: SslContext, client: SslContext) -> None:
    assert server.context is server._ssl_context_for(server_side=True)
    assert server.context is server._ssl_context_for(server_side=False)
    # The server's context can also act as a client (its ca_file trusts the same CA).
    assert handshake(server.context, server.context).ok


def test_new_context_is_warning_free_from_many_threads() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            contexts = list(pool.map(lambda _: new_context(), range(16)))
    assert len({id(c.context) for c in contexts}) == 16


# -- protocol versions ----------------------------------------------------------------------


@pytest.mark.parametrize("version", [SslProtVersion.TLSV1, SslProtVersion.SSLV23])
def test_tls_versions_give_at_least_tls12(version: SslProtVersion) -> None:
    assert new_context(version).context.minimum_version == ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize(
    ("version", "name"), [(SslProtVersion.SSLV2, "SSLv2"), (SslProtVersion.SSLV3, "SSLv3")]
)
def test_sslv2_and_sslv3_are_refused(version: SslProtVersion, name: str) -> None:
    with pytest.raises(SslError, match=f"{name} is no longer secure"):
        new_context(version)


def test_wrong_enum_types_are_type_errors() -> None:
    with pytest.raises(TypeError, match="prot_version"):
        new_context(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="verify_mode"):
        new_context(verify_mode=ssl.CERT_NONE)  # type: ignore[arg-type]


def _tls11_only(context: ssl.SSLContext) -> ssl.SSLContext:
    with warnings.catch_warnings():  # TLS 1.1 is deprecated, which is the point here
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let OpenSSL 3 offer TLS 1.1 at all
    return context


def test_tls12_floor_refuses_a_tls11_client(server: SslContext) -> None:
    old = _tls11_only(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    old.check_hostname = False
    old.verify_mode = ssl.CERT_NONE
    result = handshake(old, server.context)
    assert result.server_error is not None
    assert result.client_error is not None
    message = str(ssl_error_from(result.server_error, PEER))
    assert message == f"TLS handshake with {PEER} failed: unsupported protocol version"


def test_tls12_floor_refuses_a_tls11_server(client: SslContext, files: Files) -> None:
    old = _tls11_only(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    old.load_cert_chain(files.cert, files.key)
    result = handshake(client.context, old)
    assert result.client_error is not None
    assert "protocol version" in str(ssl_error_from(result.client_error, PEER))


# -- client-side verification (PEER) --------------------------------------------------------


@pytest.mark.parametrize("hostname", ["localhost", "127.0.0.1"])
def test_peer_client_accepts_a_trusted_server(
    client: SslContext, server: SslContext, hostname: str
) -> None:
    result = handshake(client.context, server.context, hostname)
    assert result.ok
    assert result.client.version() in ("TLSv1.2", "TLSv1.3")


def test_peer_client_rejects_an_unknown_ca(files: Files) -> None:
    # This server sends its leaf alone: the client cannot find the issuer.
    server = new_context(verify_mode=SslCVerifyMode.NONE, cert_file=files.combined)
    client = new_context()  # certifi only: trustme's CA is unknown
    result = handshake(client.context, server.context)
    assert isinstance(result.client_error, ssl.SSLCertVerificationError)
    error = ssl_error_from(result.client_error, PEER)
    assert isinstance(error, SslError)
    assert str(error) == (
        f"TLS handshake with {PEER} failed: certificate verify failed: "
        "unable to get local issuer certificate (unknown CA)"
    )
    assert error.verify_code == 20  # type: ignore[attr-defined]
    assert error.reason == "CERTIFICATE_VERIFY_FAILED"
    # The server hears about it as an alert.
    assert result.server_error is not None
    assert "does not trust our certificate" in str(ssl_error_from(result.server_error, PEER))


def test_peer_client_rejects_an_untrusted_root_in_the_chain(server: SslContext) -> None:
    # This server trusts its CA, so OpenSSL sends the root along with the leaf.
    result = handshake(new_context().context, server.context)
    assert result.client_error is not None
    assert str(ssl_error_from(result.client_error, PEER)) == (
        f"TLS handshake with {PEER} failed: certificate verify failed: "
        "self-signed certificate in certificate chain (unknown CA)"
    )


def test_peer_client_checks_the_host_name(client: SslContext, server: SslContext) -> None:
    result = handshake(client.context, server.context, "wrong.example")
    assert result.client_error is not None
    assert str(ssl_error_from(result.client_error, PEER)) == (
        f"TLS handshake with {PEER} failed: "
        "hostname mismatch: certificate is not valid for 'wrong.example'"
    )


def test_peer_client_checks_ip_literals_against_ip_sans(
    client: SslContext, server: SslContext
) -> None:
    result = handshake(client.context, server.context, "127.0.0.2")
    assert result.client_error is not None
    assert str(ssl_error_from(result.client_error, PEER)).endswith(
        "IP address mismatch: certificate is not valid for '127.0.0.2'"
    )


def test_ip_san_only_certificate(ca: trustme.CA, tmp_path: Path, files: Files) -> None:
    leaf = ca.issue_cert("127.0.0.1")
    server = new_context(
        cert_file=write_pem(tmp_path, "ip.pem", leaf.private_key_and_cert_chain_pem)
    )
    client = new_context(ca_file=files.ca)
    assert handshake(client.context, server.context, "127.0.0.1").ok
    assert handshake(client.context, server.context, "localhost").client_error is not None


def test_client_without_hostname_checks_the_chain_only(
    client: SslContext, server: SslContext
) -> None:
    assert handshake(client.context, server.context, None).ok
    untrusting = new_context()
    assert handshake(untrusting.context, server.context, None).client_error is not None


def test_expired_certificate(ca: trustme.CA, tmp_path: Path, client: SslContext) -> None:
    leaf = ca.issue_cert(
        "localhost", not_after=datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    )
    server = new_context(
        cert_file=write_pem(tmp_path, "old.pem", leaf.private_key_and_cert_chain_pem)
    )
    result = handshake(client.context, server.context)
    assert result.client_error is not None
    assert str(ssl_error_from(result.client_error, PEER)) == (
        f"TLS handshake with {PEER} failed: certificate verify failed: certificate has expired"
    )


def test_none_checks_nothing(server: SslContext, other_ca: trustme.CA, tmp_path: Path) -> None:
    client = new_context(verify_mode=SslCVerifyMode.NONE)
    assert client.context.verify_mode == ssl.CERT_NONE
    assert not client.context.check_hostname
    assert client.context.cert_store_stats()["x509_ca"] == 0  # no default CAs loaded
    assert handshake(client.context, server.context, "wrong.example").ok
    assert handshake(client.context, server.context, "127.0.0.9").ok
    # And a server under NONE does not even ask for a client certificate.
    leaf = other_ca.issue_cert("client")
    client.context.load_cert_chain(
        write_pem(tmp_path, "c.pem", leaf.private_key_and_cert_chain_pem)
    )
    none_server = new_context(
        verify_mode=SslCVerifyMode.NONE, cert_file=server_cert_path(tmp_path, other_ca)
    )
    result = handshake(client.context, none_server.context)
    assert result.ok
    assert result.server.getpeercert() is None


def server_cert_path(tmp_path: Path, ca: trustme.CA) -> str:
    return write_pem(tmp_path, "srv.pem", ca.issue_cert("localhost").private_key_and_cert_chain_pem)


# -- server-side verification ---------------------------------------------------------------


def test_peer_server_accepts_a_client_without_certificate(
    client: SslContext, server: SslContext
) -> None:
    result = handshake(client.context, server.context)
    assert result.ok
    assert result.server.getpeercert() is None  # requested, none sent, still fine


def test_peer_server_verifies_a_client_certificate(
    ca: trustme.CA, files: Files, server: SslContext, tmp_path: Path
) -> None:
    leaf = ca.issue_cert("client.example")
    client = new_context(
        ca_file=files.ca,
        cert_file=write_pem(tmp_path, "client.pem", leaf.private_key_and_cert_chain_pem),
    )
    result = handshake(client.context, server.context)
    assert result.ok
    assert result.server.getpeercert()  # verified and available


def test_peer_server_rejects_an_untrusted_client_certificate(
    other_ca: trustme.CA, files: Files, server: SslContext, tmp_path: Path
) -> None:
    leaf = other_ca.issue_cert("client.example")
    client = new_context(
        ca_file=files.ca,
        cert_file=write_pem(tmp_path, "client.pem", leaf.private_key_and_cert_chain_pem),
    )
    result = handshake(client.context, server.context)
    assert isinstance(result.server_error, ssl.SSLCertVerificationError)
    assert "(unknown CA)" in str(ssl_error_from(result.server_error, PEER))
    assert result.client_error is not None


def test_cert_required_on_the_server_requires_a_client_certificate(
    ca: trustme.CA, client: SslContext, server: SslContext, files: Files, tmp_path: Path
) -> None:
    server.context.verify_mode = ssl.CERT_REQUIRED  # SPEC's words, literally
    result = handshake(client.context, server.context)
    assert result.server_error is not None
    assert str(ssl_error_from(result.server_error, PEER)) == (
        f"TLS handshake with {PEER} failed: the peer sent no certificate, and one is required"
    )
    assert result.client_error is not None
    assert "certificate" in str(ssl_error_from(result.client_error, PEER))
    # The client role of the same context is unchanged: it still verifies servers.
    leaf = ca.issue_cert("client.example")
    with_cert = new_context(
        ca_file=files.ca,
        cert_file=write_pem(tmp_path, "client.pem", leaf.private_key_and_cert_chain_pem),
    )
    assert handshake(with_cert.context, server.context).ok


def test_user_changes_to_context_apply(files: Files, ca: trustme.CA) -> None:
    bare_server = new_context()
    bare_server.context.load_cert_chain(files.cert, files.key)
    bare_client = new_context()
    assert handshake(bare_client.context, bare_server.context).client_error is not None
    bare_client.context.load_verify_locations(files.ca)
    assert handshake(bare_client.context, bare_server.context).ok


# -- ciphers --------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["BOGUS-CIPHER", ""])
def test_invalid_cipher_list(bad: str) -> None:
    with pytest.raises(SslError, match=f"Invalid cipher_list '{bad}'") as info:
        new_context(cipher_list=bad)
    assert "('" not in str(info.value)  # the reason as text, not a tuple's repr


def test_cipher_list_is_applied(client: SslContext, files: Files) -> None:
    server = new_context(
        cert_file=files.cert,
        key_file=files.key,
        cipher_list="ECDHE-ECDSA-AES256-GCM-SHA384",  # trustme's keys are ECDSA
        ciphersuites="",
    )
    result = handshake(client.context, server.context)
    assert result.ok
    assert result.client.cipher() == ("ECDHE-ECDSA-AES256-GCM-SHA384", "TLSv1.2", 256)


def test_old_ciphers_still_floor_at_tls12() -> None:
    ctx = new_context(cipher_list=CIPHERS_OLD)
    assert ctx.context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_empty_ciphersuites_disable_tls13(client: SslContext, files: Files) -> None:
    server = new_context(cert_file=files.cert, key_file=files.key, ciphersuites="")
    assert server.context.maximum_version == ssl.TLSVersion.TLSv1_2
    result = handshake(client.context, server.context)
    assert result.ok
    assert result.client.version() == "TLSv1.2"
    assert handshake(client.context, new_context(cert_file=files.combined).context).ok


def test_unknown_ciphersuite_is_refused() -> None:
    with pytest.raises(SslError, match=r"unknown TLS 1\.3 ciphersuite.*TLS_BOGUS"):
        new_context(ciphersuites="TLS_AES_128_GCM_SHA256:TLS_BOGUS")


def test_ciphersuites_that_cannot_be_honoured_are_refused() -> None:
    with pytest.raises(SslError, match="cannot be honoured"):
        new_context(ciphersuites="TLS_AES_256_GCM_SHA384")


def test_ciphersuites_superset_is_accepted() -> None:
    new_context(ciphersuites=CIPHERS_MODERN + ":TLS_AES_128_CCM_SHA256")
    new_context(
        ciphersuites="TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256"
    )


# -- certificate and key files --------------------------------------------------------------


def test_missing_certificate_file(tmp_path: Path, files: Files) -> None:
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(SslError) as info:
        new_context(cert_file=missing, key_file=files.key)
    assert str(info.value) == f"Certificate file could not be found: {missing}"


def test_missing_key_file(tmp_path: Path, files: Files) -> None:
    missing = str(tmp_path / "nope.key")
    with pytest.raises(SslError) as info:
        new_context(cert_file=files.cert, key_file=missing)
    assert str(info.value) == f"Key file could not be found: {missing}"


def test_mismatched_key(files: Files, ca: trustme.CA, tmp_path: Path) -> None:
    other_key = write_pem(tmp_path, "other.key", ca.issue_cert("x").private_key_pem)
    with pytest.raises(SslError) as info:
        new_context(cert_file=files.cert, key_file=other_key)
    message = str(info.value)
    assert files.cert in message
    assert other_key in message
    assert "does not match" in message
    assert "key values mismatch" in message
    assert isinstance(info.value.__cause__, ssl.SSLError)


def test_garbage_certificate(tmp_path: Path, files: Files) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(SslError, match=r"garbage\.pem.*not a PEM certificate"):
        new_context(cert_file=str(garbage), key_file=files.key)


def test_unreadable_certificate(tmp_path: Path) -> None:
    with pytest.raises(SslError, match="Could not load certificate file"):
        new_context(cert_file=str(tmp_path))  # a directory


def test_encrypted_key_is_refused_without_prompting(files: Files, tmp_path: Path) -> None:
    serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")
    key = serialization.load_pem_private_key(Path(files.key).read_bytes(), None)
    encrypted = tmp_path / "enc.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(SslError, match="the key is encrypted"):
        new_context(cert_file=files.cert, key_file=str(encrypted))


def test_key_without_certificate(files: Files) -> None:
    with pytest.raises(SslError, match="without a certificate file"):
        new_context(key_file=files.key)


def test_certificate_and_key_in_one_file(files: Files, client: SslContext) -> None:
    server = new_context(cert_file=Path(files.combined))
    assert handshake(client.context, server.context).ok


# -- CA locations ---------------------------------------------------------------------------


def test_ca_file_replaces_certifi(files: Files) -> None:
    assert new_context(ca_file=files.ca).context.cert_store_stats()["x509_ca"] == 1


def test_missing_ca_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "ca.pem")
    with pytest.raises(SslError, match=f"Failed to load SSL/TLS CA.*ca_file='{missing}'"):
        new_context(ca_file=missing)


def test_garbage_ca_file(tmp_path: Path) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("nothing here\n")
    with pytest.raises(SslError, match=r"ca_file=.*no certificate or crl found"):
        new_context(ca_file=str(garbage))


def test_bad_ca_dir(tmp_path: Path) -> None:
    with pytest.raises(SslError, match=r"ca_dir=.*not a directory"):
        new_context(ca_dir=str(tmp_path / "none"))


def test_ca_dir_is_used(tmp_path: Path, files: Files, server: SslContext) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to name the CA by its subject hash")
    subject_hash = subprocess.run(
        [openssl, "x509", "-hash", "-noout", "-in", files.ca],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    ca_dir = tmp_path / "cas"  # c_rehash layout: <subject hash>.0
    ca_dir.mkdir()
    (ca_dir / f"{subject_hash}.0").write_bytes(Path(files.ca).read_bytes())
    assert handshake(new_context(ca_dir=str(ca_dir)).context, server.context).ok


def test_empty_ca_dir_trusts_nothing(tmp_path: Path, server: SslContext) -> None:
    result = handshake(new_context(ca_dir=str(tmp_path)).context, server.context)
    assert result.client_error is not None


# -- PEER_USE_ENV_VARS ----------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    return monkeypatch


def test_env_vars_ssl_cert_file_is_trusted(
    clean_env: pytest.MonkeyPatch, files: Files, server: SslContext
) -> None:
    clean_env.setenv("SSL_CERT_FILE", files.ca)
    client = new_context(verify_mode=SslCVerifyMode.PEER_USE_ENV_VARS)
    assert client.context.cert_store_stats()["x509_ca"] == 1  # that file only, not certifi
    assert handshake(client.context, server.context).ok


def test_env_vars_missing_ssl_cert_file(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("SSL_CERT_FILE", str(tmp_path / "nonexistent.pem"))
    with pytest.raises(SslError, match=r"^No SSL/TLS CA certificates found\."):
        new_context(verify_mode=SslCVerifyMode.PEER_USE_ENV_VARS)


def test_plain_peer_ignores_the_env_vars(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, server: SslContext
) -> None:
    clean_env.setenv("SSL_CERT_FILE", str(tmp_path / "nonexistent.pem"))
    ctx = new_context()
    assert ctx.context.cert_store_stats()["x509_ca"] > 50  # certifi
    assert handshake(ctx.context, server.context).client_error is not None


def test_env_vars_ssl_cert_dir_of_plain_files(
    clean_env: pytest.MonkeyPatch, files: Files, tmp_path: Path, server: SslContext
) -> None:
    cert_dir = tmp_path / "certs"
    cert_dir.mkdir()
    (cert_dir / "my-ca.pem").write_bytes(Path(files.ca).read_bytes())
    (cert_dir / "README").write_text("not a certificate")
    clean_env.setenv("SSL_CERT_DIR", str(cert_dir))
    client = new_context(verify_mode=SslCVerifyMode.PEER_USE_ENV_VARS)
    assert handshake(client.context, server.context).ok


def test_env_vars_bad_ssl_cert_dir(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("SSL_CERT_DIR", str(tmp_path / "none"))
    with pytest.raises(SslError, match="No SSL/TLS CA certificates found"):
        new_context(verify_mode=SslCVerifyMode.PEER_USE_ENV_VARS)
    empty = tmp_path / "empty"
    empty.mkdir()
    clean_env.setenv("SSL_CERT_DIR", str(empty))
    with pytest.raises(SslError, match="No SSL/TLS CA certificates found"):
        new_context(verify_mode=SslCVerifyMode.PEER_USE_ENV_VARS)


def test_env_vars_cert_file_with_a_useless_cert_dir(
    clean_env: pytest.MonkeyPatch, files: Files, tmp_path: Path, server: SslContext
) -> None:
    clean_env.setenv("SSL_CERT_FILE", files.ca)
    clean_env.setenv("SSL_CERT_DIR", str(tmp_path / "none"))
    client = new_context(verify_mode=SslCVerifyMode.PEER_USE_ENV_VARS)
    assert handshake(client.context, server.context).ok


def test_env_vars_unset_fall_back_to_certifi(clean_env: pytest.MonkeyPatch) -> None:
    ctx = new_context(verify_mode=SslCVerifyMode.PEER_USE_ENV_VARS)
    assert ctx.context.cert_store_stats()["x509_ca"] > 50


def test_explicit_ca_file_wins_over_env_vars(
    clean_env: pytest.MonkeyPatch, files: Files, tmp_path: Path
) -> None:
    clean_env.setenv("SSL_CERT_FILE", str(tmp_path / "nonexistent.pem"))
    ctx = new_context(verify_mode=SslCVerifyMode.PEER_USE_ENV_VARS, ca_file=files.ca)
    assert ctx.context.cert_store_stats()["x509_ca"] == 1


# -- extra data, destroy, session id context, repr ------------------------------------------


def test_extra_data() -> None:
    ctx = new_context(verify_mode=SslCVerifyMode.NONE)
    with pytest.raises(SslError, match="No data with that index: 3"):
        ctx.get_extra_data(3)
    marker = object()
    ctx.set_extra_data(3, marker)
    assert ctx.get_extra_data(3) is marker
    ctx.set_extra_data(3, "replaced")
    assert ctx.get_extra_data(3) == "replaced"
    ctx.set_extra_data(0, None)
    assert ctx.get_extra_data(0) is None
    with pytest.raises(SslError, match="index: 4"):
        ctx.get_extra_data(4)


def test_destroy_context_clears_extra_data_and_is_idempotent() -> None:
    ctx = new_context(verify_mode=SslCVerifyMode.NONE)
    ctx.set_extra_data(1, "x")
    destroy_context(ctx)
    with pytest.raises(SslError):
        ctx.get_extra_data(1)
    destroy_context(ctx)
    assert "destroyed" in repr(ctx)


def test_session_id_context() -> None:
    ctx = new_context(verify_mode=SslCVerifyMode.NONE)
    assert ctx.session_id_context == ""
    ctx.session_id_context = "x" * 32
    assert ctx.session_id_context == "x" * 32
    with pytest.raises(SslError, match="at most 32"):
        ctx.session_id_context = "y" * 33
    assert ctx.session_id_context == "x" * 32  # unchanged
    with pytest.raises(SslError, match="at most 32"):
        ctx.session_id_context = "é" * 17  # 34 bytes
    with pytest.raises(TypeError):
        ctx.session_id_context = b"bytes"  # type: ignore[assignment]


def test_repr() -> None:
    text = repr(new_context())
    assert text.startswith("<SslContext ")
    assert "CERT_OPTIONAL" in text
    assert "TLSv1_2" in text


def test_wrapping_an_existing_context(files: Files, server: SslContext) -> None:
    own = ssl.create_default_context(cafile=files.ca)
    ctx = SslContext(own)
    assert ctx.context is own
    assert handshake(ctx.context, server.context).ok
    with pytest.raises(TypeError):
        SslContext("not a context")  # type: ignore[arg-type]


# -- PSK ------------------------------------------------------------------------------------


def _identity(hint: str | None) -> tuple[str, bytes]:
    return "client-1", b"k" * 32


def _lookup(identity: str) -> bytes:
    return b"k" * 32 if identity == "client-1" else b""


@pytest.mark.skipif(HAS_PSK, reason="Python >= 3.13 supports PSK")
def test_psk_needs_python_313() -> None:
    ctx = new_context(verify_mode=SslCVerifyMode.NONE)
    with pytest.raises(NotImplementedError) as info:
        ctx.client_get_psk_func = _identity
    assert str(info.value) == PSK_MESSAGE.format("client")
    with pytest.raises(NotImplementedError) as info:
        ctx.server_get_psk_func = _lookup
    assert str(info.value) == PSK_MESSAGE.format("server")
    assert ctx.client_get_psk_func is None
    assert ctx.server_get_psk_func is None
    ctx.client_get_psk_func = None  # removing nothing is fine
    ctx.psk_identity_hint = "hint"  # recorded for when it can be used
    assert ctx.psk_identity_hint == "hint"


@pytest.mark.skipif(not HAS_PSK, reason="PSK needs Python >= 3.13")
def test_psk_tls13_handshake_without_certificates() -> None:
    client = new_context()
    server = new_context()
    client.client_get_psk_func = _identity
    server.server_get_psk_func = _lookup
    assert client.client_get_psk_func is _identity
    assert server.server_get_psk_func is _lookup
    result = handshake(client.context, server.context)
    assert result.ok
    assert result.client.version() == "TLSv1.3"


@pytest.mark.skipif(not HAS_PSK, reason="PSK needs Python >= 3.13")
@pytest.mark.parametrize("hint_first", [True, False])
def test_psk_tls12_with_identity_hint(hint_first: bool) -> None:
    seen: list[str | None] = []

    def identity(hint: str | None) -> tuple[str, bytes]:
        seen.append(hint)
        return _identity(hint)

    client = new_context(cipher_list="PSK", ciphersuites="")
    server = new_context(cipher_list="PSK", ciphersuites="")
    client.client_get_psk_func = identity
    if hint_first:
        server.psk_identity_hint = "the-hint"
        server.server_get_psk_func = _lookup
    else:
        server.server_get_psk_func = _lookup
        server.psk_identity_hint = "the-hint"
    assert server.psk_identity_hint == "the-hint"
    result = handshake(client.context, server.context)
    assert result.ok
    assert result.client.version() == "TLSv1.2"
    assert "PSK" in result.client.cipher()[0]  # type: ignore[index]
    assert seen == ["the-hint"]


@pytest.mark.skipif(not HAS_PSK, reason="PSK needs Python >= 3.13")
def test_psk_identity_is_captured_for_the_core() -> None:
    client = new_context()
    server = new_context()
    client.client_get_psk_func = _identity
    server.server_get_psk_func = _lookup
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client_obj = client.context.wrap_bio(c_in, c_out, server_hostname="localhost")
    server_obj = server._ssl_context_for(True).wrap_bio(s_in, s_out, server_side=True)
    identities: list[str] = []
    for _ in range(10):
        with contextlib.suppress(ssl.SSLWantReadError):
            client_obj.do_handshake()
        s_in.write(c_out.read())
        with server._capture_psk_identity() as captured, contextlib.suppress(ssl.SSLWantReadError):
            server_obj.do_handshake()
        identities += captured
        c_in.write(s_out.read())
    assert identities == ["client-1"]
    with server._capture_psk_identity() as captured:
        pass
    assert captured == []


def test_psk_identity_capture_is_empty_without_psk(client: SslContext, server: SslContext) -> None:
    with server._capture_psk_identity() as captured:
        assert handshake(client.context, server.context).ok
    assert captured == []


@pytest.mark.skipif(not HAS_PSK, reason="PSK needs Python >= 3.13")
def test_psk_rejection() -> None:
    client = new_context(cipher_list="PSK", ciphersuites="")
    server = new_context(cipher_list="PSK", ciphersuites="")
    client.client_get_psk_func = lambda hint: ("stranger", b"k" * 32)
    server.server_get_psk_func = _lookup
    result = handshake(client.context, server.context)
    assert result.server_error is not None
    assert "unknown PSK identity" in str(ssl_error_from(result.server_error, PEER))
    assert result.client_error is not None


@pytest.mark.skipif(not HAS_PSK, reason="PSK needs Python >= 3.13")
def test_psk_functions_can_be_removed() -> None:
    ctx = new_context()
    ctx.client_get_psk_func = _identity
    ctx.server_get_psk_func = _lookup
    assert "psk" in repr(ctx)
    ctx.client_get_psk_func = None
    ctx.server_get_psk_func = None
    assert ctx.client_get_psk_func is None
    ctx.server_get_psk_func = _lookup
    destroy_context(ctx)
    assert ctx.server_get_psk_func is None


# -- the core's recipe, through anyio's TLSStream over memory streams ------------------------


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def tls_over_memory(
    client: SslContext, server: SslContext, hostname: str | None
) -> dict[str, TLSStream | Exception]:
    """Handshake both roles as the core does: ``_ssl_context_for`` + ``TLSStream.wrap``."""
    c_send, s_receive = anyio.create_memory_object_stream[bytes](100)
    s_send, c_receive = anyio.create_memory_object_stream[bytes](100)
    results: dict[str, TLSStream | Exception] = {}

    async def side(name: str, transport: StapledObjectStream[bytes], server_side: bool) -> None:
        try:
            results[name] = await TLSStream.wrap(
                transport,
                server_side=server_side,
                hostname=None if server_side else hostname,
                ssl_context=(server if server_side else client)._ssl_context_for(server_side),
            )
        except Exception as exc:
            results[name] = exc
            await transport.aclose()  # as the core closes a socket whose handshake failed

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(side, "client", StapledObjectStream(c_send, c_receive), False)
            tg.start_soon(side, "server", StapledObjectStream(s_send, s_receive), True)
    return results


async def test_core_recipe_handshakes(client: SslContext, server: SslContext) -> None:
    results = await tls_over_memory(client, server, "127.0.0.1")
    tls_client, tls_server = results["client"], results["server"]
    assert isinstance(tls_client, TLSStream)
    assert isinstance(tls_server, TLSStream)
    await tls_client.send(b"ping")
    assert await tls_server.receive() == b"ping"
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(tls_client.aclose)
            tg.start_soon(tls_server.aclose)


async def test_core_recipe_failure_messages(client: SslContext, server: SslContext) -> None:
    results = await tls_over_memory(client, server, "wrong.example")
    client_exc, server_exc = results["client"], results["server"]
    assert isinstance(client_exc, Exception)
    assert isinstance(server_exc, Exception)
    assert str(ssl_error_from(client_exc, PEER)).endswith(
        "hostname mismatch: certificate is not valid for 'wrong.example'"
    )
    # The server sees the alert, or the client hanging up, depending on the timing of the close.
    assert str(ssl_error_from(server_exc, PEER)).startswith(f"TLS handshake with {PEER} failed: ")


# -- ssl_error_from -------------------------------------------------------------------------


def test_error_for_a_peer_closing_during_the_handshake(client: SslContext) -> None:
    c_in, c_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client.context.wrap_bio(c_in, c_out, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    c_in.write_eof()
    with pytest.raises(ssl.SSLError) as info:
        obj.do_handshake()
    expected = f"TLS handshake with {PEER} failed: peer closed the connection during the handshake"
    assert str(ssl_error_from(info.value, PEER)) == expected
    # The same, wrapped by anyio's TLSStream.
    wrapped = anyio.BrokenResourceError()
    wrapped.__cause__ = info.value
    assert str(ssl_error_from(wrapped, PEER)) == expected
    # Outside the handshake the same EOF means truncation.
    assert str(ssl_error_from(info.value, PEER, during="read")) == (
        f"TLS read with {PEER} failed: peer closed the connection without close_notify (truncated)"
    )


def test_error_for_a_reset_during_the_handshake() -> None:
    reset = ConnectionResetError(104, "Connection reset by peer")
    expected = f"TLS handshake with {PEER} failed: connection reset during the handshake"
    assert str(ssl_error_from(reset, PEER)) == expected
    wrapped = anyio.BrokenResourceError()
    wrapped.__cause__ = reset
    error = ssl_error_from(wrapped, PEER)
    assert isinstance(error, SslError)
    assert str(error) == expected


def test_error_for_other_failures() -> None:
    assert str(ssl_error_from(BrokenPipeError(32, "Broken pipe"), PEER)).endswith(
        "connection broken (broken pipe) during the handshake"
    )
    assert str(ssl_error_from(OSError(113, "No route to host"), PEER)).endswith(
        "failed: No route to host"
    )
    assert str(ssl_error_from(anyio.BrokenResourceError(), PEER)).endswith(
        "connection broken during the handshake"
    )
    assert str(ssl_error_from(anyio.EndOfStream(), "")) == (
        "TLS handshake failed: peer closed the connection during the handshake"
    )
    own = SslError("already translated")  # even one made without strerror
    copy = ssl_error_from(own, PEER)
    assert copy is not own
    assert str(copy) == "already translated"
