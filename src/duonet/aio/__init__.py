"""duonet.aio: Nim's ``std/net`` for Python, awaited, on asyncio and trio (through anyio).

The same API as :mod:`duonet`, with ``AsyncSocket``/``new_async_socket`` in place of
``Socket``/``new_socket``; I/O methods are awaited. Types, enums and errors are the same objects
as in :mod:`duonet`. Names are imported on first use, as in :mod:`duonet`.
"""

from __future__ import annotations

import builtins

from .. import _exports

# typing.TYPE_CHECKING without importing typing (and re), which would double the import time.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from .._core._server import Server as Server
    from .._core._server import serve as serve
    from .._core._server import serve_unix as serve_unix
    from .._core._socket import AsyncSocket as AsyncSocket
    from .._core._socket import dial as dial
    from .._core._socket import new_async_socket as new_async_socket
    from .._core._tls import wrap_connected_socket as wrap_connected_socket
    from .._core._tls import wrap_socket as wrap_socket
    from .._enums import BUFFER_SIZE as BUFFER_SIZE
    from .._enums import MAX_LINE_LENGTH as MAX_LINE_LENGTH
    from .._enums import Certificate as Certificate
    from .._enums import IpAddressFamily as IpAddressFamily
    from .._enums import Port as Port
    from .._enums import ReadLineResult as ReadLineResult
    from .._enums import SOBool as SOBool
    from .._enums import SocketFlag as SocketFlag
    from .._errors import BusyError as BusyError
    from .._errors import SocketClosedError as SocketClosedError
    from .._errors import SslError as SslError
    from .._errors import is_disconnection_error as is_disconnection_error
    from .._errors import raise_ssl_error as raise_ssl_error
    from .._ip import IpAddress as IpAddress
    from .._ip import from_sock_addr as from_sock_addr
    from .._ip import get_primary_ip_addr as get_primary_ip_addr
    from .._ip import ipv4_any as ipv4_any
    from .._ip import ipv4_broadcast as ipv4_broadcast
    from .._ip import ipv4_loopback as ipv4_loopback
    from .._ip import ipv6_any as ipv6_any
    from .._ip import ipv6_loopback as ipv6_loopback
    from .._ip import is_ip_address as is_ip_address
    from .._ip import parse_ip_address as parse_ip_address
    from .._ip import to_sock_addr as to_sock_addr
    from .._sslcontext import CIPHERS_INTERMEDIATE as CIPHERS_INTERMEDIATE
    from .._sslcontext import CIPHERS_MODERN as CIPHERS_MODERN
    from .._sslcontext import CIPHERS_OLD as CIPHERS_OLD
    from .._sslcontext import SslAcceptResult as SslAcceptResult
    from .._sslcontext import SslContext as SslContext
    from .._sslcontext import SslCVerifyMode as SslCVerifyMode
    from .._sslcontext import SslHandshakeType as SslHandshakeType
    from .._sslcontext import SslProtVersion as SslProtVersion
    from .._sslcontext import destroy_context as destroy_context
    from .._sslcontext import new_context as new_context
else:
    # Each name is imported on first use (PEP 562); type checkers see the imports above.
    __getattr__ = _exports.lazy(__name__, globals())
del TYPE_CHECKING

#: The builtin :class:`TimeoutError`: what every timed-out call raises.
TimeoutError = builtins.TimeoutError

__all__ = (
    "SslContext",
    "new_context",
    "destroy_context",
    "SslCVerifyMode",
    "SslProtVersion",
    "SslHandshakeType",
    "SslAcceptResult",
    "CIPHERS_INTERMEDIATE",
    "CIPHERS_MODERN",
    "CIPHERS_OLD",
    "wrap_socket",
    "wrap_connected_socket",
    "BUFFER_SIZE",
    "MAX_LINE_LENGTH",
    "AsyncSocket",
    "BusyError",
    "Certificate",
    "IpAddress",
    "IpAddressFamily",
    "Port",
    "ReadLineResult",
    "SOBool",
    "SocketClosedError",
    "SocketFlag",
    "SslError",
    "TimeoutError",
    "dial",
    "from_sock_addr",
    "get_primary_ip_addr",
    "ipv4_any",
    "ipv4_broadcast",
    "ipv4_loopback",
    "ipv6_any",
    "ipv6_loopback",
    "is_disconnection_error",
    "is_ip_address",
    "new_async_socket",
    "parse_ip_address",
    "raise_ssl_error",
    "to_sock_addr",
    "Server",
    "serve",
    "serve_unix",
)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
