"""Argument checks at the public boundary: one function per kind of argument.

Every public call of the core (and so of both faces: the blocking fast paths call the same core
functions) checks its arguments here *before* any I/O, so a refused call sends nothing, reads
nothing and leaves the receive buffer as it was. A wrong type is a ``TypeError``, a wrong value of
the right type a ``ValueError``; each message names the parameter and the value given.

Each check starts with the common case as one cheap test (``type(x) is int`` ...), so the per-line
hot paths pay a few tens of nanoseconds. Pure: no sockets, no anyio.
"""

from __future__ import annotations

import math
import operator
import os
from typing import Any, NoReturn

from ._enums import SocketFlag
from ._ip import IpAddress

__all__ = (
    "DataLike",
    "check_address",
    "check_bytes_view",
    "check_flags",
    "check_index",
    "check_max_length",
    "check_msg_flags",
    "check_path",
    "check_port",
    "check_size",
    "check_timeout",
    "describe",
)

DataLike = str | bytes | bytearray | memoryview

#: The widest value to quote in a message (a huge string would flood a log line).
_QUOTE = 60


def _quote(value: object) -> str:
    """``type value`` for a message, e.g. ``str '80'``, shortened when long."""
    try:
        text = repr(value)
    except Exception:  # a hostile __repr__ must not hide the real error
        text = "<unprintable>"
    if len(text) > _QUOTE:
        text = text[: _QUOTE - 3] + "..."
    return f"{type(value).__name__} {text}"


def _type_error(name: str, wanted: str, value: object) -> NoReturn:
    raise TypeError(f"{name} must be {wanted}, not {_quote(value)}")


def check_port(port: object, name: str = "port") -> int:
    """An ``int`` (not ``bool``) in 0..65535; never wrapped modulo 65536."""
    if type(port) is not int:
        if not isinstance(port, int) or isinstance(port, bool):
            _type_error(name, "an int in 0..65535", port)
        port = int(port)
    if not 0 <= port <= 65535:
        raise ValueError(f"{name} must be in 0..65535, not {port}")
    return port


def check_address(address: object, name: str = "address") -> str | IpAddress:
    """A ``str`` or :class:`IpAddress`; a ``str`` must not hold a NUL (it would be cut there)."""
    if type(address) is str:
        if "\0" in address:
            raise ValueError(f"{name} must not contain a NUL character: {address!r}")
        return address
    if isinstance(address, IpAddress):
        return address
    if isinstance(address, str):
        return check_address(str(address), name)
    _type_error(name, "a str (host name or IP) or an IpAddress", address)


def check_path(path: object, name: str = "path") -> str | bytes:
    """A Unix socket path: ``str``, ``bytes`` or ``os.PathLike`` (a leading NUL is Linux's
    abstract namespace, so NUL is allowed)."""
    if isinstance(path, str | bytes):
        return path
    if isinstance(path, os.PathLike):
        fspath: str | bytes = os.fspath(path)
        return fspath
    _type_error(name, "a str, bytes or os.PathLike path", path)


def check_timeout(timeout: object, name: str = "timeout") -> None:
    """``None``, or an ``int``/``float`` (not ``bool``, not NaN); negative or ``inf`` = no limit."""
    if timeout is None:
        return
    kind = type(timeout)
    if kind is float:
        if timeout != timeout:  # NaN
            raise ValueError(f"{name} must be a number of seconds or None, not NaN")
        return
    if kind is int:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        _type_error(name, "None or a number of seconds (int or float)", timeout)
    if math.isnan(timeout):
        raise ValueError(f"{name} must be a number of seconds or None, not NaN")


def check_index(value: object, name: str) -> int:
    """An integer: an ``int`` or anything with ``__index__`` (``float`` and ``str`` are not)."""
    if type(value) is int:
        return value
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        _type_error(name, "an integer", value)


def check_size(value: object, name: str = "size") -> int:
    """An integer >= 0."""
    size = value if type(value) is int else check_index(value, name)
    if size < 0:
        raise ValueError(f"{name} must be >= 0, not {size}")
    return size


def check_max_length(value: object) -> int:
    """An integer >= 1 (the longest piece of a line returned)."""
    max_length = value if type(value) is int else check_index(value, "max_length")
    if max_length < 1:
        raise ValueError(f"max_length must be at least 1, not {max_length}")
    return max_length


def check_flags(flags: object, method: str) -> None:
    """A :class:`SocketFlag` (members combined with ``|``, or ``SocketFlag(0)``)."""
    if type(flags) is SocketFlag:
        return
    hint = ""
    if isinstance(flags, int | float) and not isinstance(flags, bool):
        hint = f" (to give a timeout, pass it by keyword: {method}(..., timeout={flags!r}))"
    raise TypeError(
        f"flags of {method}() must be a SocketFlag (e.g. SocketFlag.SAFE_DISCONN or "
        f"SocketFlag(0)), not {_quote(flags)}{hint}"
    )


def check_msg_flags(flags: object) -> int:
    """``send_to``'s flags: the OS's ``MSG_*`` integer flags, as in Nim."""
    if type(flags) is int:
        return flags
    if isinstance(flags, bool) or not isinstance(flags, int):
        _type_error("flags of send_to()", "an int of MSG_* flags", flags)
    return int(flags)


def check_bytes_view(data: object, method: str) -> memoryview:
    """``data`` as a flat byte view: ``str`` is encoded as UTF-8; any bytes-like object is used
    as it is."""
    if isinstance(data, str):
        return memoryview(data.encode())
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"{method}() takes str (sent as UTF-8) or a bytes-like object as data, "
            f"not {_quote(data)}"
        ) from None
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def describe(value: Any) -> str:
    """The ``type value`` text the checks use, for callers with checks of their own."""
    return _quote(value)
