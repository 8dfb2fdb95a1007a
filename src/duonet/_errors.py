"""duonet's exceptions, and the one place where OS errors become them.

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

``is_disconnection_error`` is Nim's rule for which errno counts as "the peer went away".
"""

from __future__ import annotations

import errno
import ssl
from collections.abc import Iterable

from ._enums import SocketFlag

__all__ = (
    "BusyError",
    "SocketClosedError",
    "SslError",
    "is_disconnection_error",
    "raise_ssl_error",
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
