"""TLS contexts: Nim's ``newContext`` and friends, over one ``ssl.SSLContext`` (no sockets here).

Theory of operation
-------------------
Nim builds one OpenSSL ``SSL_CTX`` with ``TLS_method()`` and uses it for both roles: a client
``connect`` and a server ``accept`` share it. duonet does the same with one ``ssl.SSLContext``
made with the generic ``ssl.PROTOCOL_TLS``. CPython's non-deprecated alternatives,
``PROTOCOL_TLS_CLIENT`` and ``PROTOCOL_TLS_SERVER``, each refuse the other role ("Cannot create a
server socket with a PROTOCOL_TLS_CLIENT context"), and two twin contexts could not both follow
what a user changes through ``ctx.context`` (a later ``load_verify_locations`` or
``load_cert_chain`` would reach only one of them). ``PROTOCOL_TLS`` has been deprecated since
Python 3.10 but still works on every supported version; :func:`new_context` builds it without
the warning (see ``_sslconfig.py``).

The module holds duonet's API for contexts: the enums, the cipher constants, :class:`SslContext`
and :func:`new_context`'s arguments. How each setting reaches the ``ssl.SSLContext`` (building
it, ciphers, certificates, CAs, PSK callbacks) is in ``_sslconfig.py``, which this module
imports.

Verification with one context for both roles (``SslCVerifyMode.PEER``):

* ``verify_mode = ssl.CERT_OPTIONAL`` and ``check_hostname = True``.
* Client role: OpenSSL ignores ``SSL_VERIFY_FAIL_IF_NO_PEER_CERT`` on a client, so
  ``CERT_OPTIONAL`` there means the same as ``CERT_REQUIRED`` (the ``ssl`` documentation says so):
  the server's chain must verify. With ``server_hostname`` given to ``wrap_bio`` /
  ``wrap_socket``, the name is checked too (an IP literal against the certificate's IP SANs, and
  no SNI is sent for it). Without a ``server_hostname`` only the chain is checked.
* Server role: ``CERT_OPTIONAL`` asks the client for a certificate and verifies one that is sent,
  but lets a client without one in (Nim's ``SSL_VERIFY_PEER`` without ``FAIL_IF_NO_PEER_CERT``).
  ``ctx.context.verify_mode = ssl.CERT_REQUIRED`` makes the server require one; the client role
  does not change.

``SslCVerifyMode.NONE`` sets ``check_hostname = False`` and ``verify_mode = ssl.CERT_NONE``:
nothing is checked in either role.

What the async core does with a context: ``ctx._ssl_context_for(server_side)`` (today always
``ctx.context``) wrapped with ``server_side=True`` and no ``server_hostname`` on the server side,
and with ``server_side=False`` and ``server_hostname=hostname or None`` on the client side. Every
exception out of a handshake, read or write goes through ``ssl_error_from``, which lives with the
other translations in ``duonet._errors`` (and is importable from here too).
"""

from __future__ import annotations

import contextlib
import enum
import operator
import os
import ssl
import sys
from typing import Final

from ._errors import _error, ssl_error_from
from ._sslconfig import (
    SslClientGetPskFunc,
    SslServerGetPskFunc,
    apply_ciphersuites,
    capture_psk_identity,
    generic_tls_context,
    install_client_psk,
    install_server_psk,
    load_ca_locations,
    load_certifi,
    load_certificates,
    load_env_cas,
    set_ciphers,
)

__all__ = (
    "CIPHERS_INTERMEDIATE",
    "CIPHERS_MODERN",
    "CIPHERS_OLD",
    "SslAcceptResult",
    "SslCVerifyMode",
    "SslClientGetPskFunc",
    "SslContext",
    "SslHandshakeType",
    "SslProtVersion",
    "SslServerGetPskFunc",
    "destroy_context",
    "new_context",
    "ssl_error_from",
)

# Mozilla server-side TLS guidelines 5.4, as Nim's ssl_config.nim (generated 2020-06-03).
#: TLS 1.3 ciphersuites for "modern" compatibility: the default ``ciphersuites``.
CIPHERS_MODERN: Final = "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
#: Ciphers for "intermediate" compatibility: the default ``cipher_list``.
CIPHERS_INTERMEDIATE: Final = (
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:"
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384"
)
#: Ciphers for "old" compatibility (TLS 1.2 remains the floor whatever the list allows).
CIPHERS_OLD: Final = (
    "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:"
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384:DHE-RSA-CHACHA20-POLY1305:"
    "ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA:"
    "ECDHE-RSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA384:ECDHE-RSA-AES256-SHA384:"
    "ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES256-SHA:DHE-RSA-AES128-SHA256:DHE-RSA-AES256-SHA256:"
    "AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA256:AES256-SHA256:AES128-SHA:AES256-SHA:"
    "DES-CBC3-SHA"
)

_PSK_UNSUPPORTED: Final = "PSK needs Python >= 3.13 (ssl.SSLContext.set_psk_{}_callback)"
_MAX_SID_CTX_LENGTH: Final = 32  # OpenSSL's SSL_MAX_SID_CTX_LENGTH


class SslCVerifyMode(enum.Enum):
    """What a context verifies (Nim's ``SslCVerifyMode``).

    ``PEER`` checks the peer's chain and, on a client, the host name; a server requests a client
    certificate without requiring one. ``PEER_USE_ENV_VARS`` is ``PEER`` whose default CAs come
    from ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set. ``NONE`` checks nothing.
    """

    NONE = 0
    PEER = 1
    PEER_USE_ENV_VARS = 2


class SslProtVersion(enum.Enum):
    """The protocol asked of :func:`new_context` (Nim's ``SslProtVersion``).

    ``TLSV1`` and ``SSLV23`` both give TLS 1.2 or newer; ``SSLV2`` and ``SSLV3`` are refused.
    """

    SSLV2 = 0
    SSLV3 = 1
    TLSV1 = 2
    SSLV23 = 3


class SslHandshakeType(enum.Enum):
    """The role taken by ``wrap_connected_socket`` (Nim's ``SslHandshakeType``)."""

    CLIENT = 0
    SERVER = 1


class SslAcceptResult(enum.Enum):
    """Nim's ``SslAcceptResult``, kept for parity (nothing in Nim or duonet returns it)."""

    NO_CLIENT = 0
    NO_HANDSHAKE = 1
    SUCCESS = 2


class SslContext:
    """A TLS context for both roles, client and server (Nim's ``SslContext``).

    Usually made by :func:`new_context`. ``SslContext(context)`` wraps an ``ssl.SSLContext`` of
    your own as it is; it then serves the roles its protocol allows (a ``PROTOCOL_TLS_CLIENT``
    context cannot accept).

    Args:
        context: The ``ssl.SSLContext`` to use for every connection made with this context.
    """

    def __init__(self, context: ssl.SSLContext) -> None:
        if not isinstance(context, ssl.SSLContext):
            raise TypeError(f"expected an ssl.SSLContext, got {type(context).__name__}")
        self._context = context
        self._extra_data: dict[int, object] = {}
        self._client_psk: SslClientGetPskFunc | None = None
        self._server_psk: SslServerGetPskFunc | None = None
        self._psk_identity_hint: str | None = None
        self._session_id_context = ""
        self._destroyed = False
        #: Seconds a TLS listener gives each client to complete its handshake (duonet's
        #: addition; Nim has no limit), counted while an ``accept`` drives it (not while the
        #: server is busy between two calls). A client that takes longer is dropped by
        #: ``accept`` (or its ``SslError`` raised, without ``SAFE_DISCONN``).
        self.handshake_timeout: float = 30.0

    @property
    def context(self) -> ssl.SSLContext:
        """The underlying ``ssl.SSLContext``, shared by the client and the server role.

        Changes made to it apply to every later connection, in the role they concern:
        ``load_verify_locations`` adds trusted CAs (for checking servers and clients alike),
        ``load_cert_chain`` sets the certificate this side presents, and
        ``verify_mode = ssl.CERT_REQUIRED`` makes a server require a client certificate (a client
        verifies the server's chain under ``CERT_OPTIONAL`` and ``CERT_REQUIRED`` alike).
        """
        return self._context

    def _ssl_context_for(self, server_side: bool) -> ssl.SSLContext:
        """The ``ssl.SSLContext`` the core wraps a connection with, in either role.

        Both roles share :attr:`context`. Wrap it with ``server_side=True`` and no
        ``server_hostname`` on a server, with ``server_side=False`` and
        ``server_hostname=hostname or None`` on a client (an empty host name checks the chain
        only).
        """
        del server_side  # one context serves both roles
        return self._context

    # -- extra data (Nim's getExtraData / setExtraData) ------------------------------------

    def get_extra_data(self, index: int) -> object:
        """Return the data stored under ``index`` by :meth:`set_extra_data`.

        Raises:
            SslError: Nothing is stored under ``index``.
        """
        index = operator.index(index)
        try:
            return self._extra_data[index]
        except KeyError:
            raise _error(f"No data with that index: {index}") from None

    def set_extra_data(self, index: int, data: object) -> None:
        """Store ``data`` under ``index`` (replacing what was there) until it is destroyed."""
        self._extra_data[operator.index(index)] = data

    # -- PSK (Python >= 3.13) --------------------------------------------------------------

    @property
    def client_get_psk_func(self) -> SslClientGetPskFunc | None:
        """The client's PSK function, ``f(hint: str | None) -> (identity: str, psk: bytes)``.

        ``hint`` is the server's identity hint, ``None`` when it sent none (always under TLS 1.3).
        Setting ``None`` removes the function. An exception raised by the function aborts the
        handshake; Python reports it through ``sys.unraisablehook``.

        Raises:
            NotImplementedError: On setting a function on Python older than 3.13.
        """
        return self._client_psk

    @client_get_psk_func.setter
    def client_get_psk_func(self, func: SslClientGetPskFunc | None) -> None:
        if func is not None and sys.version_info < (3, 13):
            raise NotImplementedError(_PSK_UNSUPPORTED.format("client"))
        self._client_psk = func
        install_client_psk(self._context, func)

    @property
    def server_get_psk_func(self) -> SslServerGetPskFunc | None:
        """The server's PSK function, ``g(identity: str) -> bytes`` (``b""`` rejects the client).

        Setting ``None`` removes the function. An exception raised by the function aborts the
        handshake; Python reports it through ``sys.unraisablehook``.

        Raises:
            NotImplementedError: On setting a function on Python older than 3.13.
        """
        return self._server_psk

    @server_get_psk_func.setter
    def server_get_psk_func(self, func: SslServerGetPskFunc | None) -> None:
        if func is not None and sys.version_info < (3, 13):
            raise NotImplementedError(_PSK_UNSUPPORTED.format("server"))
        self._server_psk = func
        install_server_psk(self._context, self._server_psk, self._psk_identity_hint)

    @property
    def psk_identity_hint(self) -> str | None:
        """The identity hint a server sends to PSK clients (TLS 1.2 only; TLS 1.3 sends none).

        It may be set before or after :attr:`server_get_psk_func`; it takes effect with the
        server's PSK function (so on Python 3.13 or newer). ``None`` sends no hint.
        """
        return self._psk_identity_hint

    @psk_identity_hint.setter
    def psk_identity_hint(self, hint: str | None) -> None:
        if hint is not None and not isinstance(hint, str):
            raise TypeError(f"psk_identity_hint must be a str or None, not {type(hint).__name__}")
        self._psk_identity_hint = hint
        install_server_psk(self._context, self._server_psk, self._psk_identity_hint)

    def _capture_psk_identity(self) -> contextlib.AbstractContextManager[list[str]]:
        """For the core: collect the PSK identities clients send during the ``with`` body.

        Wrap each ``do_handshake()`` call of a server-side handshake in it; after the handshake
        the last item (if any) is the identity the client sent (``get_psk_identity``). Without
        a server PSK function, or before Python 3.13, the list stays empty.
        """
        return capture_psk_identity()

    # -- session id context ----------------------------------------------------------------

    @property
    def session_id_context(self) -> str:
        """The session id context (Nim's ``sessionIdContext=``), at most 32 characters.

        Honestly: CPython's ``ssl`` module sets a fixed session id context (``"Python"``) on every
        ``ssl.SSLContext`` and has no way to change it, so duonet checks and records the value
        (it reads back as set) but OpenSSL never sees it. That changes nothing in practice:
        CPython keeps a server's session cache and ticket keys per ``ssl.SSLContext``, so a
        session is only ever resumed on the context that made it, which is what distinct session
        id contexts exist to ensure.

        Raises:
            SslError: On setting a value longer than 32 characters (32 bytes in UTF-8).
        """
        return self._session_id_context

    @session_id_context.setter
    def session_id_context(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"session_id_context must be a str, not {type(value).__name__}")
        size = len(value.encode("utf-8"))
        if size > _MAX_SID_CTX_LENGTH:
            raise _error(
                f"session_id_context must be at most {_MAX_SID_CTX_LENGTH} characters "
                f"(bytes in UTF-8), got {size}"
            )
        self._session_id_context = value

    def __repr__(self) -> str:
        ctx = self._context
        parts = [
            f"verify_mode={ctx.verify_mode.name}",
            f"check_hostname={ctx.check_hostname}",
            f"minimum_version={ctx.minimum_version.name}",
        ]
        if self._client_psk is not None or self._server_psk is not None:
            parts.append("psk")
        if self._destroyed:
            parts.append("destroyed")
        return f"<SslContext {' '.join(parts)}>"


def destroy_context(ctx: SslContext) -> None:
    """Release a context (Nim's ``destroyContext``): drop its extra data and PSK functions.

    Calling it twice is harmless. Sockets already wrapped keep working; wrap no new ones.
    """
    ctx._extra_data.clear()
    if ctx._client_psk is not None:
        ctx.client_get_psk_func = None
    if ctx._server_psk is not None:
        ctx.server_get_psk_func = None
    ctx._destroyed = True


# -- new_context ---------------------------------------------------------------------------


def new_context(
    prot_version: SslProtVersion = SslProtVersion.SSLV23,
    verify_mode: SslCVerifyMode = SslCVerifyMode.PEER,
    cert_file: str | os.PathLike[str] = "",
    key_file: str | os.PathLike[str] = "",
    cipher_list: str = CIPHERS_INTERMEDIATE,
    ca_dir: str | os.PathLike[str] = "",
    ca_file: str | os.PathLike[str] = "",
    ciphersuites: str = CIPHERS_MODERN,
) -> SslContext:
    """Create a TLS context for clients and servers alike (Nim's ``newContext``).

    The context allows TLS 1.2 and 1.3 only, whatever ``prot_version`` asks; TLS compression and
    renegotiation are off; a peer that closes without close_notify is reported (truncation is
    detectable).

    Args:
        prot_version: ``SSLV23`` (the default) or ``TLSV1``: both mean TLS 1.2 or newer.
        verify_mode: ``PEER`` (the default) verifies the peer: the chain, and on a client the
            host name or IP address given to ``connect`` / ``wrap_connected_socket``; a server
            requests a client certificate and verifies one that is sent, but does not require one
            (set ``ctx.context.verify_mode = ssl.CERT_REQUIRED`` for that). ``PEER_USE_ENV_VARS``
            also takes its default CAs from ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set.
            ``NONE`` checks nothing (neither the chain nor the name).
        cert_file: This side's certificate (PEM, a full chain allowed), e.g. a server's.
        key_file: Its private key (PEM, unencrypted); ``""`` means it is in ``cert_file``.
        cipher_list: OpenSSL cipher string for TLS 1.2 (TLS 1.3 names in it are ignored).
        ca_dir: A directory of hashed CA certificates (``c_rehash``) to trust instead of the
            default CAs.
        ca_file: A PEM file of CA certificates to trust instead of the default CAs.
        ciphersuites: TLS 1.3 ciphersuites. CPython cannot choose them: TLS 1.3 always offers the
            runtime's defaults, which on OpenSSL are those of ``CIPHERS_MODERN`` (in OpenSSL's
            order). ``""`` disables TLS 1.3. See Raises for lists that cannot be honoured.

    The default CAs, used unless ``ca_file`` or ``ca_dir`` is given, are certifi's bundle; under
    ``PEER_USE_ENV_VARS`` those of ``SSL_CERT_FILE`` (a PEM file) and ``SSL_CERT_DIR`` (hashed or
    plain PEM files) instead, when set. ``NONE`` loads no default CAs.

    Returns:
        The new :class:`SslContext`; its ``.context`` is the ``ssl.SSLContext``.

    Raises:
        SslError: ``SSLV2``/``SSLV3`` ("no longer secure"); ``cert_file`` or ``key_file`` missing
            ("... could not be found: <file>"), unreadable, not PEM, encrypted or not matching
            each other (naming both files and the reason); ``ca_file``/``ca_dir`` unusable
            (naming them); no usable CA certificates from ``SSL_CERT_FILE``/``SSL_CERT_DIR``
            ("No SSL/TLS CA certificates found."); an invalid ``cipher_list`` (naming it); a
            ``ciphersuites`` list with an unknown name, or leaving out a suite this runtime
            offers anyway (duonet will not silently offer a suite you excluded).
        TypeError: ``prot_version`` or ``verify_mode`` is not a member of its enum.
    """
    if not isinstance(prot_version, SslProtVersion):
        raise TypeError(f"prot_version must be an SslProtVersion, not {prot_version!r}")
    if not isinstance(verify_mode, SslCVerifyMode):
        raise TypeError(f"verify_mode must be an SslCVerifyMode, not {verify_mode!r}")
    if prot_version in (SslProtVersion.SSLV2, SslProtVersion.SSLV3):
        name = "SSLv2" if prot_version is SslProtVersion.SSLV2 else "SSLv3"
        raise _error(
            f"{name} is no longer secure and is not supported: use SslProtVersion.SSLV23 "
            f"(TLS 1.2 or newer)"
        )
    cert_path, key_path = os.fspath(cert_file), os.fspath(key_file)
    ca_dir_path, ca_file_path = os.fspath(ca_dir), os.fspath(ca_file)

    context = generic_tls_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | getattr(ssl, "OP_NO_RENEGOTIATION", 0)
    # Python 3.10+ may set OP_IGNORE_UNEXPECTED_EOF (OpenSSL 3): a peer closing without
    # close_notify would then read as a clean EOF and truncation attacks would go unnoticed.
    context.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    set_ciphers(context, cipher_list)
    if ssl.HAS_TLSv1_3:
        apply_ciphersuites(context, ciphersuites)

    if verify_mode is SslCVerifyMode.NONE:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        # CERT_OPTIONAL: a client still fails on a bad server chain (OpenSSL ignores
        # FAIL_IF_NO_PEER_CERT on clients); a server asks for, but does not require, a client
        # certificate. check_hostname applies to the client role only.
        context.verify_mode = ssl.CERT_OPTIONAL
        context.check_hostname = True

    load_certificates(context, cert_path, key_path)

    if ca_file_path or ca_dir_path:
        load_ca_locations(context, ca_file_path, ca_dir_path)
    elif verify_mode is SslCVerifyMode.PEER_USE_ENV_VARS and load_env_cas(context):
        pass
    elif verify_mode is not SslCVerifyMode.NONE:  # as Nim, NONE loads no default CAs
        load_certifi(context)
    return SslContext(context)
