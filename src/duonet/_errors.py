"""duonet's exceptions, and the one place where OS and TLS errors become them.

The tree (every class extends what socket users already catch)::

    OSError
     ├── TimeoutError (builtin)        a call's timeout expired; nothing received was lost
     ├── SocketClosedError             *you* closed this socket (errno EBADF)
     └── ConnectionError, ...          the peer or the network broke it: the kernel's own
                                       subclasses, re-raised with the address in the message
    ssl.SSLError
     └── SslError                      every TLS failure, with the reason in the message
    RuntimeError
     └── BusyError                     two tasks or threads used one direction of a socket at once

``is_disconnection_error`` is Nim's rule for which errno counts as "the peer went away";
``with_address`` / ``os_error_at`` put the address into an ``OSError`` (or say the socket was
closed); ``ssl_error_from`` turns what a TLS handshake raised into an :class:`SslError` whose
message says the reason in words; ``tls_read_error`` / ``tls_send_error`` say what an error of
a TLS read (the end of the stream, or which exception) or send means.
"""

from __future__ import annotations

import errno
import re
import ssl
from collections.abc import Iterable
from typing import Final

from ._enums import SocketFlag

__all__ = (
    "BusyError",
    "SocketClosedError",
    "SslError",
    "is_disconnection_error",
    "os_error_at",
    "raise_ssl_error",
    "ssl_error_from",
    "tls_read_error",
    "tls_send_error",
    "with_address",
)

# POSIX disconnection errnos, as Nim's isDisconnectionError (ECONNABORTED is added: Linux reports a
# client that vanished between SYN and accept with it, and skipping such a client is the point of
# SAFE_DISCONN in accept).
_DISCONNECTION_ERRNOS = frozenset(
    {errno.ECONNRESET, errno.EPIPE, errno.ENETRESET, errno.ECONNABORTED}
    | ({errno.ESHUTDOWN} if hasattr(errno, "ESHUTDOWN") else set())
)


class SslError(ssl.SSLError):
    """Every TLS failure: handshake, verification, protocol, truncation, bad context settings.

    The message names the reason (``certificate verify failed: unable to get local issuer
    certificate``, ``hostname mismatch``, ``truncated`` ...); the original exception, if any, is
    chained as ``__cause__``.
    """

    def __str__(self) -> str:
        # ssl.SSLError prints its args tuple unless strerror is set: print the message itself.
        if isinstance(self.strerror, str):
            return self.strerror
        if len(self.args) == 1:
            return str(self.args[0])
        return super().__str__()


class SocketClosedError(OSError):
    """The socket was closed by this program (possibly from another thread or task) before or
    during the call. ``errno`` is ``EBADF``, as the stdlib reports for a closed socket."""

    def __init__(self, what: str = "socket") -> None:
        super().__init__(errno.EBADF, f"{what} is closed")


class BusyError(RuntimeError):
    """Two threads or tasks tried to read (or to write) one socket at the same time.

    duonet refuses instead of interleaving bytes: give each reader its own socket, or serialise.
    """


def is_disconnection_error(flags: SocketFlag | Iterable[SocketFlag], last_error: int) -> bool:
    """Tell whether ``last_error`` (an errno) counts as a disconnection under ``flags``.

    True only when ``SocketFlag.SAFE_DISCONN`` is in ``flags`` and the errno means the peer went
    away (``ECONNRESET``, ``EPIPE``, ``ENETRESET``, ``ECONNABORTED``, ``ESHUTDOWN``).
    ``flags`` may be a :class:`SocketFlag` value or any iterable of them (Nim passes a set).
    """
    if not isinstance(flags, SocketFlag):
        combined = SocketFlag(0)
        for flag in flags:
            combined |= flag
        flags = combined
    return SocketFlag.SAFE_DISCONN in flags and last_error in _DISCONNECTION_ERRNOS


def raise_ssl_error(msg: str = "") -> None:
    """Raise :class:`SslError` with ``msg`` (Nim's ``raiseSSLError``).

    Without a message, the text is ``"No error reported."`` (duonet has no OpenSSL error queue to
    read: every TLS failure is already raised with its reason where it happens).
    """
    raise SslError(msg or "No error reported.")


def with_address(exc: OSError, action: str, address: object) -> OSError:
    """Return an exception of ``exc``'s own class whose message says what failed and where.

    ``with_address(ConnectionRefusedError(111, "Connection refused"), "connect to", "127.0.0.1:9")``
    gives ``ConnectionRefusedError(111, "Connection refused (connect to 127.0.0.1:9)")``. The
    original is meant to be chained (``raise new from exc``).
    """
    if isinstance(exc, (TimeoutError, SocketClosedError, SslError)):
        return exc
    reason = exc.strerror or str(exc) or type(exc).__name__
    message = f"{reason} ({action} {address})"
    try:
        if exc.errno is not None:
            return type(exc)(exc.errno, message)
        return type(exc)(message)
    except Exception:  # an OSError subclass with a constructor of its own
        return OSError(exc.errno, message)


def os_error_at(exc: OSError, action: str, peer: str, closed: bool) -> OSError:
    """The error to raise for ``exc`` met while doing ``action`` with ``peer``: the socket was
    closed by this program (``closed``, or the kernel says it is no socket), or ``exc`` with the
    address (:func:`with_address`)."""
    if closed or exc.errno in (errno.EBADF, errno.ENOTSOCK):
        return SocketClosedError(f"socket {peer}")
    return with_address(exc, action, peer)


def tls_read_error(exc: OSError, flags: SocketFlag, peer: str, closed: bool) -> OSError | None:
    """What an error of a TLS read (``ssl`` or socket) means: ``None`` for the end of the
    stream, or the error to raise (chained: ``raise error from exc``).

    The end: the peer's close_notify answering ours (OpenSSL reports it as
    ``SSLZeroReturnError`` instead of the empty read it gives when the peer closes first), and
    under ``SAFE_DISCONN`` a close without close_notify or a disconnection errno. Otherwise a
    truncation is ``SslError("... truncated ...")``, a socket error keeps its class with the
    address, and a TLS failure is an ``SslError`` naming the reason.
    """
    if isinstance(exc, ssl.SSLZeroReturnError):
        return None
    if isinstance(exc, ssl.SSLEOFError) or (
        isinstance(exc, ssl.SSLError) and "UNEXPECTED_EOF" in str(exc)
    ):
        if SocketFlag.SAFE_DISCONN in flags:
            return None
        return SslError(
            f"TLS connection with {peer} truncated: the peer closed without close_notify"
        )
    if not isinstance(exc, ssl.SSLError):
        if is_disconnection_error(flags, exc.errno or 0) and not closed:
            return None
        return os_error_at(exc, "receiving from", peer, closed)
    if closed:
        return SocketClosedError(f"socket {peer}")
    return SslError(f"TLS error receiving from {peer}: {exc}")


def tls_send_error(exc: OSError, peer: str, closed: bool) -> OSError:
    """The error to raise for what a TLS send raised (``ssl`` or socket), chained to it: a
    socket error keeps its class with the address, a TLS failure is an ``SslError`` naming the
    reason (``SocketClosedError`` if this program closed the socket)."""
    if not isinstance(exc, ssl.SSLError):
        return os_error_at(exc, "sending to", peer, closed)
    if closed:
        return SocketClosedError(f"socket {peer}")
    return SslError(f"TLS error sending to {peer}: {exc}")


def _error(message: str) -> SslError:
    """An :class:`SslError` whose ``str()`` is ``message``.

    ``ssl.SSLError.__str__`` shows ``strerror``, or else the whole ``args`` tuple
    (``"('message',)"``), so a one-argument ``SslError`` needs ``strerror`` set as well.
    """
    error = SslError(message)
    error.strerror = message
    return error


def _words(exc: BaseException) -> str:
    """An ``ssl.SSLError``'s text without the ``[LIB: REASON]`` prefix and ``(_ssl.c:N)`` tail."""
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    elif len(exc.args) == 1:  # set_ciphers: SSLError("No cipher can be selected.")
        text = str(exc.args[0])
    else:
        text = str(exc)
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)
    text = re.sub(r"\s*\(_ssl\.c:\d+\)$", "", text)
    return text or type(exc).__name__


# -- error translation ---------------------------------------------------------------------

# Hints added to OpenSSL's verification messages (X509_V_ERR_* codes).
_VERIFY_HINTS: Final = {
    2: "unknown CA",  # unable to get issuer certificate
    19: "unknown CA",  # self-signed certificate in certificate chain
    20: "unknown CA",  # unable to get local issuer certificate
    21: "unknown CA",  # unable to verify the first certificate
}
_HOSTNAME_MISMATCH: Final = 62
_IP_ADDRESS_MISMATCH: Final = 64

# OpenSSL reasons, in words.
_REASONS: Final = {
    "UNSUPPORTED_PROTOCOL": "unsupported protocol version",
    "TLSV1_ALERT_PROTOCOL_VERSION": "unsupported protocol version (the peer refused ours)",
    "WRONG_VERSION_NUMBER": "wrong version number (is the peer speaking TLS?)",
    "HTTP_REQUEST": "the peer sent a plain HTTP request",
    "NO_SHARED_CIPHER": "no shared cipher",
    "NO_CIPHERS_AVAILABLE": "no ciphers available",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "the peer aborted the handshake (handshake failure alert)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the peer rejected our certificate (bad certificate alert)",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the peer says our certificate has expired",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the peer rejected our certificate (certificate unknown)",
    "TLSV1_ALERT_UNKNOWN_CA": "the peer does not trust our certificate (unknown CA alert)",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the peer requires a certificate and we sent none",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "the peer sent no certificate, and one is required",
    "PSK_IDENTITY_NOT_FOUND": "unknown PSK identity",
    "TLSV1_ALERT_UNKNOWN_PSK_IDENTITY": "the peer does not know our PSK identity",
    "NO_SUITABLE_SIGNATURE_ALGORITHM": "no suitable signature algorithm (no certificate or PSK?)",
}


def _cause_of(exc: BaseException) -> BaseException:
    """Follow ``__cause__`` (then ``__context__``) from wrappers such as anyio's
    ``BrokenResourceError`` down to the ``ssl``/OS error that says what happened."""
    seen: set[int] = set()
    while not isinstance(exc, OSError) and id(exc) not in seen:
        seen.add(id(exc))
        inner = exc.__cause__ or exc.__context__
        if inner is None:
            break
        exc = inner
    return exc


def _reason_in_words(exc: BaseException, handshake: bool) -> str:
    import anyio  # here: ``import duonet`` must not load anyio

    during = "during the handshake" if handshake else "by the peer"
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        message = (exc.verify_message or _words(exc)).rstrip(".")
        if code in (_HOSTNAME_MISMATCH, _IP_ADDRESS_MISMATCH):
            head, _, tail = message.partition(", ")
            if head.startswith("Hostname"):  # "Hostname mismatch" -> "hostname mismatch"
                head = "h" + head[1:]
            return f"{head}: {tail}" if tail else message
        hint = _VERIFY_HINTS.get(code)
        return f"certificate verify failed: {message}" + (f" ({hint})" if hint else "")
    reason = getattr(exc, "reason", None) if isinstance(exc, ssl.SSLError) else None
    eof = isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError, anyio.EndOfStream))
    if eof or reason == "UNEXPECTED_EOF_WHILE_READING":
        if handshake:
            return "peer closed the connection during the handshake"
        return "peer closed the connection without close_notify (truncated)"
    if isinstance(exc, ssl.SSLError) and not isinstance(exc, ssl.SSLSyscallError):
        if isinstance(reason, str) and reason in _REASONS:
            return _REASONS[reason]
        return _words(exc)
    if isinstance(exc, ConnectionResetError):
        return f"connection reset {during}"
    if isinstance(exc, BrokenPipeError):
        return f"connection broken (broken pipe) {during}"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc) or type(exc).__name__
    if isinstance(exc, anyio.BrokenResourceError):
        return f"connection broken {during}"
    return str(exc) or type(exc).__name__


def ssl_error_from(exc: BaseException, peer: str, *, during: str = "handshake") -> SslError:
    """Translate an exception met during a TLS handshake (or read/write) into an :class:`SslError`.

    This is the one place where ``ssl.SSLError`` (``SSLCertVerificationError`` included),
    ``OSError`` and anyio's ``BrokenResourceError`` / ``EndOfStream`` (whose ``__cause__`` is
    followed) become duonet's error. The message says the reason in words and names the peer,
    e.g. ``TLS handshake with 127.0.0.1:4433 failed: certificate verify failed: unable to get
    local issuer certificate (unknown CA)`` or ``... failed: hostname mismatch: certificate is not
    valid for 'wrong.example'``. The original's ``reason``, ``library``, ``verify_code`` and
    ``verify_message`` are copied when it has them.

    Args:
        exc: The exception caught.
        peer: The peer, as it should appear in the message (``"host:port"``; ``""`` omits it).
        during: What was going on: ``"handshake"`` (the default), ``"read"``, ``"write"`` ...;
            an unexpected EOF outside the handshake is reported as ``truncated``.

    Returns:
        A new :class:`SslError`, to be raised by the caller with ``raise err from exc``.
    """
    if isinstance(exc, SslError):
        if isinstance(exc.strerror, str):
            message = exc.strerror
        elif len(exc.args) == 1 and isinstance(exc.args[0], str):
            message = exc.args[0]
        else:
            message = str(exc)
        error = _error(message)
        _copy_attributes(exc, error)
        return error
    cause = _cause_of(exc)
    reason = _reason_in_words(cause, during == "handshake")
    where = f"TLS {during} with {peer}" if peer else f"TLS {during}"
    error = _error(f"{where} failed: {reason}")
    _copy_attributes(cause, error)
    return error


def _copy_attributes(source: BaseException, target: SslError) -> None:
    for name in ("library", "reason", "verify_code", "verify_message"):
        value = getattr(source, name, None)
        if value is not None:
            setattr(target, name, value)
