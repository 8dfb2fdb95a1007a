"""Telling an ``ssl.SSLContext`` what a TLS context asks: CPython's ``ssl`` module, driven here.

The helpers :func:`~duonet.new_context` and :class:`~duonet.SslContext` (in ``_sslcontext.py``)
call to configure the one ``ssl.SSLContext`` behind a context: building it for both roles, cipher
lists and TLS 1.3 ciphersuites, this side's certificate, the CAs to trust (files, directories,
``SSL_CERT_FILE`` / ``SSL_CERT_DIR``, certifi) and the PSK callbacks. Each works on a plain
``ssl.SSLContext`` and raises :class:`~duonet.SslError` naming what it could not use. This module
changes when CPython's ``ssl`` module or OpenSSL do; what duonet's API accepts (Nim's names, the
enums, the argument checks) lives in ``_sslcontext.py``, which imports this module (never the
reverse). No sockets, no anyio.

Building the context: Nim's ``SSL_CTX`` comes from ``TLS_method()`` and serves both roles; here
that is ``ssl.SSLContext(ssl.PROTOCOL_TLS)``. ``PROTOCOL_TLS`` has been deprecated since Python
3.10 but still works on every supported version; :func:`generic_tls_context` silences exactly that
one warning while constructing (``warnings.catch_warnings``, under a lock against concurrent
``new_context`` calls), so a program that runs with warnings as errors is not affected. The one
caveat: ``catch_warnings`` swaps process-wide state, so a warning filter that another thread
installs during those microseconds is lost.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
import ssl
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Final

from ._errors import _error, _words

__all__ = (
    "SslClientGetPskFunc",
    "SslServerGetPskFunc",
    "apply_ciphersuites",
    "capture_psk_identity",
    "generic_tls_context",
    "install_client_psk",
    "install_server_psk",
    "load_ca_locations",
    "load_certifi",
    "load_certificates",
    "load_env_cas",
    "set_ciphers",
)

#: ``f(hint)`` gives ``(identity, psk)``: the client's PSK function (Nim's ``SslClientGetPskFunc``).
SslClientGetPskFunc = Callable[[str | None], tuple[str, bytes]]
#: ``g(identity)`` gives the PSK, ``b""`` to reject: the server's (Nim's ``SslServerGetPskFunc``).
SslServerGetPskFunc = Callable[[str], bytes]

_NO_CA_FOUND: Final = "No SSL/TLS CA certificates found."

# Every TLS 1.3 ciphersuite OpenSSL knows by name (RFC 8446 B.4, RFC 9150).
_TLS13_SUITES: Final = frozenset(
    {
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256",
        "TLS_AES_128_CCM_SHA256",
        "TLS_AES_128_CCM_8_SHA256",
        "TLS_SHA256_SHA256",
        "TLS_SHA384_SHA384",
    }
)

# warnings.catch_warnings swaps process-wide state: serialise our own uses of it.
_construct_lock = threading.Lock()

# The list that server PSK callbacks append the client's identity to, while the core runs one
# handshake step inside capture_psk_identity() (do_handshake calls the callback synchronously, in
# the caller's thread and context).
_psk_identities: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "duonet_psk_identities", default=None
)


class _EncryptedKeyError(Exception):
    """Raised by the password callback: the key file wants a password we do not have."""


# -- building the context, ciphers -----------------------------------------------------------


def generic_tls_context() -> ssl.SSLContext:
    """A fresh ``ssl.SSLContext`` for both roles (OpenSSL's ``TLS_method()``), warning-free."""
    with _construct_lock, warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"ssl\.PROTOCOL_TLS is deprecated", category=DeprecationWarning
        )
        return ssl.SSLContext(ssl.PROTOCOL_TLS)


def set_ciphers(context: ssl.SSLContext, cipher_list: str) -> None:
    """Set the TLS 1.2 cipher list, keeping CPython's security level unless the list sets one."""
    level = context.security_level
    try:
        context.set_ciphers(cipher_list)
    except ssl.SSLError as exc:
        raise _error(f"Invalid cipher_list {cipher_list!r}: {_words(exc)}") from exc
    # A list without "@SECLEVEL" resets OpenSSL's security level to its build default: keep the
    # (higher) level CPython chose, as Nim's OpenSSL would have by default.
    if context.security_level < level and "@SECLEVEL" not in cipher_list.upper():
        context.set_ciphers(f"{cipher_list}:@SECLEVEL={level}")


def apply_ciphersuites(context: ssl.SSLContext, ciphersuites: str) -> None:
    """Honour ``ciphersuites`` as far as CPython allows, and refuse what it cannot do.

    CPython has no ``SSL_CTX_set_ciphersuites``: TLS 1.3 always offers the runtime's default
    suites (OpenSSL's: exactly the three of ``CIPHERS_MODERN``). So: unknown names are an error;
    ``""`` disables TLS 1.3 (as in OpenSSL), which ``maximum_version`` can do; a list that leaves
    out an enabled suite is an error (duonet never offers a suite the caller excluded); a list
    naming extra suites is accepted, the extras are not offered.
    """
    names = [name.strip() for name in ciphersuites.split(":") if name.strip()]
    unknown = [name for name in names if name not in _TLS13_SUITES]
    if unknown:
        raise _error(
            f"Invalid ciphersuites {ciphersuites!r}: unknown TLS 1.3 ciphersuite(s) "
            f"{', '.join(unknown)}"
        )
    if not names:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        return
    enabled = {c["name"] for c in context.get_ciphers() if c.get("protocol") == "TLSv1.3"}
    excluded = sorted(enabled - set(names))
    if excluded:
        raise _error(
            f"ciphersuites {ciphersuites!r} cannot be honoured: Python's ssl module cannot "
            f"restrict TLS 1.3 ciphersuites and always offers {', '.join(sorted(enabled))}; "
            f"include {', '.join(excluded)} (CIPHERS_MODERN does), or pass '' to disable TLS 1.3"
        )


# -- this side's certificate, the CAs to trust -----------------------------------------------


def load_certificates(context: ssl.SSLContext, cert_file: str, key_file: str) -> None:
    """Nim's ``loadCertificates``: both files must exist before anything is loaded."""
    if cert_file and not os.path.exists(cert_file):
        raise _error(f"Certificate file could not be found: {cert_file}")
    if key_file and not os.path.exists(key_file):
        raise _error(f"Key file could not be found: {key_file}")
    if not cert_file:
        if key_file:
            raise _error(f"Key file {key_file!r} given without a certificate file (cert_file)")
        return

    def no_password() -> bytes:
        raise _EncryptedKeyError

    what = f"certificate file {cert_file!r} with key file {key_file or cert_file!r}"
    try:
        context.load_cert_chain(cert_file, key_file or None, password=no_password)
    except _EncryptedKeyError:
        raise _error(
            f"Could not load {what}: the key is encrypted (load it with "
            f"ctx.context.load_cert_chain(..., password=...))"
        ) from None
    except ssl.SSLError as exc:
        reason = getattr(exc, "reason", None)
        if reason == "KEY_VALUES_MISMATCH":
            detail = "the private key does not match the certificate (key values mismatch)"
        elif "PEM lib" in str(exc):
            detail = "not a PEM certificate and private key (PEM lib)"
        else:
            detail = _words(exc)
        raise _error(f"Could not load {what}: {detail}") from exc
    except OSError as exc:
        raise _error(f"Could not load {what}: {exc.strerror or exc}") from exc


def load_ca_locations(context: ssl.SSLContext, ca_file: str, ca_dir: str) -> None:
    """Trust the CAs of ``ca_file`` and/or ``ca_dir`` (``""``: not given)."""
    where = ", ".join(
        f"{name}={value!r}" for name, value in (("ca_file", ca_file), ("ca_dir", ca_dir)) if value
    )
    prefix = f"Failed to load SSL/TLS CA certificate(s) from {where}"
    if ca_dir and not os.path.isdir(ca_dir):
        raise _error(f"{prefix}: ca_dir is not a directory")
    try:
        context.load_verify_locations(cafile=ca_file or None, capath=ca_dir or None)
    except ssl.SSLError as exc:
        raise _error(f"{prefix}: {_words(exc)}") from exc
    except OSError as exc:
        raise _error(f"{prefix}: {exc.strerror or exc}") from exc


def load_env_cas(context: ssl.SSLContext) -> bool:
    """Load ``SSL_CERT_FILE`` and/or ``SSL_CERT_DIR`` if set; False if neither is set.

    A set ``SSL_CERT_FILE`` must load (Nim: that file and no fallback). ``SSL_CERT_DIR`` is used
    as OpenSSL's hashed ``capath`` if it holds ``c_rehash`` links, else each file in it that
    parses is loaded (Nim's way); it must yield something unless ``SSL_CERT_FILE`` did.
    """
    cert_file = os.environ.get("SSL_CERT_FILE", "")
    cert_dir = os.environ.get("SSL_CERT_DIR", "")
    if not cert_file and not cert_dir:
        return False
    if cert_file:
        try:
            context.load_verify_locations(cafile=cert_file)
        except (ssl.SSLError, OSError) as exc:
            raise _error(
                f"{_NO_CA_FOUND} SSL_CERT_FILE={cert_file!r} could not be loaded: {_words(exc)}"
            ) from exc
    if cert_dir:
        entries = sorted(os.listdir(cert_dir)) if os.path.isdir(cert_dir) else []
        loaded = 0
        if any(re.fullmatch(r"[0-9a-f]{8}\.\d+", name) for name in entries):
            context.load_verify_locations(capath=cert_dir)  # OpenSSL looks certificates up lazily
            loaded = 1
        else:
            for name in entries:
                path = os.path.join(cert_dir, name)
                if os.path.isfile(path):
                    try:
                        context.load_verify_locations(cafile=path)
                    except (ssl.SSLError, OSError):
                        continue
                    loaded += 1
        if not loaded and not cert_file:
            raise _error(f"{_NO_CA_FOUND} SSL_CERT_DIR={cert_dir!r} holds no CA certificates")
    return True


def load_certifi(context: ssl.SSLContext) -> None:
    """Trust certifi's CA bundle (the default CAs of ``new_context``)."""
    import certifi  # here, not at the top: ``import duonet`` stays light

    try:
        context.load_verify_locations(cafile=certifi.where())
    except (ssl.SSLError, OSError) as exc:
        raise _error(f"{_NO_CA_FOUND} certifi's bundle: {_words(exc)}") from exc


# -- PSK callbacks (Python >= 3.13) ----------------------------------------------------------


def _psk_bytes(psk: object) -> bytes:
    if isinstance(psk, str):  # Nim's PSKs are strings; accept them as UTF-8
        return psk.encode("utf-8")
    if isinstance(psk, (bytes, bytearray, memoryview)):
        return bytes(psk)
    raise TypeError(f"a PSK function must return bytes, not {type(psk).__name__}")


def install_client_psk(context: ssl.SSLContext, func: SslClientGetPskFunc | None) -> None:
    """Make ``func`` the client's PSK callback (``None`` removes it); nothing before 3.13."""
    if sys.version_info >= (3, 13):
        if func is None:
            context.set_psk_client_callback(None)
            return

        def client_callback(hint: str | None) -> tuple[str | None, bytes]:
            identity, psk = func(hint)
            return identity, _psk_bytes(psk)

        context.set_psk_client_callback(client_callback)


def install_server_psk(
    context: ssl.SSLContext, func: SslServerGetPskFunc | None, hint: str | None
) -> None:
    """Make ``func`` the server's PSK callback, sending ``hint`` (``None`` removes it).

    The callback records each identity it is asked about for :func:`capture_psk_identity`.
    Nothing before Python 3.13.
    """
    if sys.version_info >= (3, 13):
        if func is None:
            context.set_psk_server_callback(None)
            return

        def server_callback(identity: str | None) -> bytes:
            captured = _psk_identities.get()
            if captured is not None:
                captured.append(identity or "")
            return _psk_bytes(func(identity or ""))

        context.set_psk_server_callback(server_callback, hint)


@contextlib.contextmanager
def capture_psk_identity() -> Iterator[list[str]]:
    """Collect the PSK identities that server callbacks see during the ``with`` body."""
    captured: list[str] = []
    token = _psk_identities.set(captured)
    try:
        yield captured
    finally:
        _psk_identities.reset(token)
