"""Where each public name lives, loaded on first use, and shown under its public module.

``import duonet`` imports this module and nothing else of duonet: a script that only parses an IP
address never loads asyncio, anyio or certifi. A name is imported from its private module the first
time it is looked up (PEP 562 module ``__getattr__``), then cached in the public module's
namespace, so the lookup costs a dictionary access from then on.

Every public object says where users find it: ``duonet.SslError.__module__ == "duonet"``,
``duonet.aio.AsyncSocket.__module__ == "duonet.aio"`` (as trio's ``fixup_module_metadata`` does).
That shows in reprs, tracebacks (``duonet.SslError: ...``) and pickles, which then load through the
public module. Types, enums and errors are the same objects in both faces, so they say ``duonet``.
The rewrite runs each time a private module is loaded through here, over every name of the tables
whose module is loaded by then: an exception raised by a module that a public name pulled in (an
``SslError`` out of ``Socket.connect``) already has its public name.
"""

from __future__ import annotations

import importlib
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (and re)
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

#: Names shared by both faces (the same objects): name -> private module (relative to ``duonet``).
SHARED: dict[str, str] = {
    "BUFFER_SIZE": "_enums",
    "MAX_LINE_LENGTH": "_enums",
    "Certificate": "_enums",
    "IpAddressFamily": "_enums",
    "Port": "_enums",
    "ReadLineResult": "_enums",
    "SOBool": "_enums",
    "SocketFlag": "_enums",
    "BusyError": "_errors",
    "SocketClosedError": "_errors",
    "SslError": "_errors",
    "is_disconnection_error": "_errors",
    "raise_ssl_error": "_errors",
    "IpAddress": "_ip",
    "from_sock_addr": "_ip",
    "get_primary_ip_addr": "_ip",
    "ipv4_any": "_ip",
    "ipv4_broadcast": "_ip",
    "ipv4_loopback": "_ip",
    "ipv6_any": "_ip",
    "ipv6_loopback": "_ip",
    "is_ip_address": "_ip",
    "parse_ip_address": "_ip",
    "to_sock_addr": "_ip",
    "CIPHERS_INTERMEDIATE": "_sslcontext",
    "CIPHERS_MODERN": "_sslcontext",
    "CIPHERS_OLD": "_sslcontext",
    "SslAcceptResult": "_sslcontext",
    "SslContext": "_sslcontext",
    "SslCVerifyMode": "_sslcontext",
    "SslHandshakeType": "_sslcontext",
    "SslProtVersion": "_sslcontext",
    "destroy_context": "_sslcontext",
    "new_context": "_sslcontext",
    "wrap_socket": "_core._tls",
}

#: The names of ``duonet`` (blocking) that are not shared.
BLOCKING: dict[str, str] = {
    "Socket": "_blocking",
    "dial": "_blocking",
    "new_socket": "_blocking",
    "wrap_connected_socket": "_blocking",
    "configure": "_portal",
    "Server": "_server",
    "serve": "_server",
    "serve_unix": "_server",
}

#: The names of ``duonet.aio`` that are not shared.
ASYNC: dict[str, str] = {
    "AsyncSocket": "_core._socket",
    "dial": "_core._socket",
    "new_async_socket": "_core._socket",
    "wrap_connected_socket": "_core._tls",
    "Server": "_core._server",
    "serve": "_core._server",
    "serve_unix": "_core._server",
}

#: Each public module's names and where they come from.
TABLES: dict[str, dict[str, str]] = {
    "duonet": {**SHARED, **BLOCKING},
    "duonet.aio": {**SHARED, **ASYNC},
}

#: (public module, name) pairs whose object already shows its public module.
_fixed: set[tuple[str, str]] = set()


def _rename(obj: Any, public: str, private: str) -> None:
    """Show ``obj`` (defined in ``private``) under ``public``; constants and aliases are left."""
    if getattr(obj, "__module__", None) != private:
        return  # a constant, an alias of a builtin (Port is int), or already renamed
    try:
        obj.__module__ = public
    except (AttributeError, TypeError):
        pass


def fixup_loaded() -> None:
    """Give every public object whose private module is loaded by now its public module name.

    Shared names are done for ``duonet`` first, so they say ``duonet`` in both faces.
    """
    for public, table in TABLES.items():
        for name, private in table.items():
            key = (public, name)
            if key in _fixed:
                continue
            module = sys.modules.get(f"duonet.{private}")
            if module is None or name not in vars(module):
                continue
            _fixed.add(key)
            owner = "duonet" if name in SHARED else public
            _rename(vars(module)[name], owner, module.__name__)


def lazy(public: str, namespace: dict[str, Any]) -> Callable[[str], Any]:
    """The module ``__getattr__`` of ``public``, which caches what it loads in ``namespace``."""
    table = TABLES[public]

    def __getattr__(name: str) -> Any:
        private = table.get(name)
        if private is None:
            raise AttributeError(f"module {public!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"duonet.{private}"), name)
        fixup_loaded()
        namespace[name] = value
        return value

    return __getattr__
