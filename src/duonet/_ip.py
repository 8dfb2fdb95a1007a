"""IP addresses: parse, format and convert (Nim's ``IpAddress`` and friends).

Pure code: nothing here touches the network except :func:`get_primary_ip_addr`, which makes one UDP
socket and sends nothing.

Theory of operation
-------------------

An :class:`IpAddress` is a family plus its packed bytes (4 or 16, network order), immutable and
hashable. The parser is hand-written rather than borrowed from :mod:`ipaddress` or
:func:`socket.inet_pton`, because SPEC pins a grammar that neither implements exactly:

* IPv4 is strict RFC 6943 §3.1.1: exactly four decimal parts, each 0-255, no leading zeros (a lone
  ``0`` is fine), so no octal, hex, short (``127.1``) or integer (``2130706433``) forms, no sign and
  no whitespace. ``inet_pton`` agrees but older :mod:`ipaddress` versions accept leading zeros.
* IPv6 is RFC 4291 §2.2: eight groups of 1-4 hex digits (either case), at most one ``::`` which
  stands for at least one zero group, and an optional dotted IPv4 tail (strict as above) as the last
  32 bits. No zone ids (``%eth0``), brackets or ports. Nim also accepts over-long groups such as
  ``00000001::``; SPEC's 1-4 digits win and reject them. :mod:`ipaddress` accepts zone ids.
* Only ASCII is accepted: every character is checked against an explicit set before any
  :func:`int` call, because ``int()`` and ``str.isdigit`` take other scripts' digits (U+0661),
  surrounding whitespace and ``_``.

``str()`` is Nim's ``$`` for IPv4 and RFC 5952 for IPv6: lower case, no leading zeros, the first
longest run of two or more zero groups becomes ``::`` (a single zero group stays ``0``, where Nim
compresses it) and IPv4-mapped addresses (``::ffff:0:0/96``) end in dotted decimal (RFC 5952 §5).
The output is the same on every Python version (the stdlib prints IPv4-mapped addresses dotted only
from 3.13 on).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any, Final, NoReturn, final, overload

from ._enums import IpAddressFamily

__all__ = (
    "IpAddress",
    "from_sock_addr",
    "get_primary_ip_addr",
    "ipv4_any",
    "ipv4_broadcast",
    "ipv4_loopback",
    "ipv6_any",
    "ipv6_loopback",
    "is_ip_address",
    "parse_ip_address",
    "to_sock_addr",
)

_IPV4_CHARS: Final = frozenset("0123456789.")
_HEX_DIGITS: Final = frozenset("0123456789abcdefABCDEF")
_IPV6_CHARS: Final = _HEX_DIGITS | frozenset(":.")
_V4_MAPPED_PREFIX: Final = bytes(10) + b"\xff\xff"
#: Error messages show at most this many characters of the input.
_MAX_SHOWN: Final = 100
_MAX_PORT: Final = 0xFFFF


class _Invalid(Exception):
    """Internal: why a string is not an address (becomes a :class:`ValueError` quoting it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _shown(text: str) -> str:
    """Return ``text`` quoted for an error message, shortened when very long."""
    if len(text) <= _MAX_SHOWN:
        return repr(text)
    return f"{text[:_MAX_SHOWN]!r}... ({len(text)} characters)"


def _bad_char(char: str) -> NoReturn:
    if char == "%":
        raise _Invalid("zone ids ('%...') are not supported")
    if char in "[]":
        raise _Invalid("brackets are not allowed (give the address alone)")
    if char.isspace():
        raise _Invalid(f"whitespace ({char!r}) is not allowed")
    raise _Invalid(f"invalid character {char!r}")


def _parse_ipv4(text: str) -> bytes:
    """Parse strict dotted decimal (RFC 6943 §3.1.1) into 4 bytes, or raise :class:`_Invalid`."""
    for char in text:
        if char not in _IPV4_CHARS:
            _bad_char(char)
    parts = text.split(".")
    if len(parts) != 4:
        raise _Invalid(f"expected 4 decimal parts separated by '.', found {len(parts)}")
    octets = bytearray()
    for part in parts:
        if not part:
            raise _Invalid("empty part (misplaced '.')")
        if len(part) > 1 and part[0] == "0":
            raise _Invalid("octal numbers are not allowed")
        # Only ASCII digits are left, so int() is exact here.
        if len(part) > 3 or int(part) > 255:
            raise _Invalid(f"part {part!r} is out of range (0-255)")
        octets.append(int(part))
    return bytes(octets)


def _ipv6_words(groups: list[str], dotted_allowed: bool) -> list[int]:
    """Convert the textual groups on one side of ``::`` into 16-bit words."""
    words: list[int] = []
    last = len(groups) - 1
    for index, group in enumerate(groups):
        if "." in group:
            if not dotted_allowed or index != last:
                raise _Invalid("an embedded IPv4 address may only stand for the last 32 bits")
            try:
                v4 = _parse_ipv4(group)
            except _Invalid as exc:
                raise _Invalid(f"embedded IPv4 part {group!r}: {exc.reason}") from None
            words += (v4[0] << 8 | v4[1], v4[2] << 8 | v4[3])
        elif len(group) > 4:
            raise _Invalid(f"group {group!r} has more than 4 hex digits")
        else:
            # Only ASCII hex digits are left (checked by the caller), so int() is exact here.
            words.append(int(group, 16))
    return words


def _parse_ipv6(text: str) -> bytes:
    """Parse RFC 4291 text (no zone id) into 16 bytes, or raise :class:`_Invalid`."""
    for char in text:
        if char not in _IPV6_CHARS:
            _bad_char(char)
    if text.count(":") == 1 and "." in text.partition(":")[0]:
        raise _Invalid("ports are not allowed")
    if ":::" in text:
        raise _Invalid("':::' is not a valid separator")
    compressed = "::" in text
    if compressed:
        if text.count("::") > 1:
            raise _Invalid("at most one '::' is allowed")
        head, _, tail = text.partition("::")
        head_groups = head.split(":") if head else []
        tail_groups = tail.split(":") if tail else []
    else:
        head_groups, tail_groups = text.split(":"), []
    # With ':::' excluded, an empty group can only be a lone ':' at either end.
    groups = head_groups + tail_groups
    if groups and not groups[0]:
        raise _Invalid("an address may not start with a single ':'")
    if groups and not groups[-1]:
        raise _Invalid("an address may not end with a single ':'")
    head_words = _ipv6_words(head_groups, dotted_allowed=not compressed)
    tail_words = _ipv6_words(tail_groups, dotted_allowed=True)
    count = len(head_words) + len(tail_words)
    if compressed:
        if count > 7:
            raise _Invalid("too many groups ('::' must stand for at least one zero group)")
        words = head_words + [0] * (8 - count) + tail_words
    elif count > 8:
        raise _Invalid(f"too many groups ({count} instead of 8)")
    elif count < 8:
        raise _Invalid(f"too few groups ({count} instead of 8) and no '::'")
    else:
        words = head_words
    return b"".join(word.to_bytes(2, "big") for word in words)


def _format_ipv4(packed: bytes) -> str:
    return ".".join(str(octet) for octet in packed)


def _format_ipv6(packed: bytes) -> str:
    """Format 16 bytes per RFC 5952 (§4 and the IPv4-mapped form of §5)."""
    if packed[:12] == _V4_MAPPED_PREFIX:
        return "::ffff:" + _format_ipv4(packed[12:])
    words = [packed[i] << 8 | packed[i + 1] for i in range(0, 16, 2)]
    # The first longest run of at least two zero groups becomes '::' (RFC 5952 §4.2.2, §4.2.3).
    best_start, best_len = -1, 1
    run_start, run_len = -1, 0
    for index, word in enumerate(words):
        if word:
            run_len = 0
            continue
        if run_len == 0:
            run_start = index
        run_len += 1
        if run_len > best_len:
            best_start, best_len = run_start, run_len
    hextets = [f"{word:x}" for word in words]
    if best_start < 0:
        return ":".join(hextets)
    head = ":".join(hextets[:best_start])
    tail = ":".join(hextets[best_start + best_len :])
    return f"{head}::{tail}"


_FAMILY_SIZES: Final = {IpAddressFamily.IPV4: 4, IpAddressFamily.IPV6: 16}


@final
class IpAddress:
    """An IPv4 or IPv6 address (Nim's ``IpAddress``): immutable, hashable, comparable with ``==``.

    Build one from a family and its packed bytes in network order, or from text::

        IpAddress(IpAddressFamily.IPV4, b"\\x7f\\x00\\x00\\x01")   # 127.0.0.1
        IpAddress("::1")                                         # same as parse_ip_address("::1")

    Addresses of different families are never equal: ``127.0.0.1 != ::ffff:127.0.0.1``.
    ``str()`` gives the canonical text (see the module documentation), ``repr()`` gives
    ``IpAddress('::1')``.

    Args:
        family: The address family, or the address as text (then ``raw`` must be omitted).
        raw: The packed address: 4 bytes for IPv4, 16 for IPv6 (any bytes-like object).

    Raises:
        ValueError: ``raw`` has the wrong length for ``family``, or the text is not a valid
            address (the message quotes it).
        TypeError: The arguments have the wrong types.
    """

    __slots__ = ("_family", "_packed")

    _family: IpAddressFamily
    _packed: bytes

    @overload
    def __init__(self, family: IpAddressFamily, raw: bytes | bytearray | memoryview) -> None: ...

    @overload
    def __init__(self, family: str, raw: None = None) -> None: ...

    def __init__(
        self, family: IpAddressFamily | str, raw: bytes | bytearray | memoryview | None = None
    ) -> None:
        if isinstance(family, str):
            if raw is not None:
                raise TypeError("IpAddress(text) takes no raw bytes")
            parsed = parse_ip_address(family)
            family, packed = parsed._family, parsed._packed
        elif isinstance(family, IpAddressFamily):
            if not isinstance(raw, (bytes, bytearray, memoryview)):
                raise TypeError(f"IpAddress raw address must be bytes, not {type(raw).__name__}")
            packed = bytes(raw)
            size = _FAMILY_SIZES[family]
            if len(packed) != size:
                raise ValueError(
                    f"an {family.name} address has {size} bytes, got {len(packed)}: {packed!r}"
                )
        else:
            raise TypeError(
                f"IpAddress() takes an IpAddressFamily or a str, not {type(family).__name__}"
            )
        object.__setattr__(self, "_family", family)
        object.__setattr__(self, "_packed", packed)

    @classmethod
    def _make(cls, family: IpAddressFamily, packed: bytes) -> IpAddress:
        """Build without validation (``packed`` is known to be right for ``family``)."""
        self = object.__new__(cls)
        object.__setattr__(self, "_family", family)
        object.__setattr__(self, "_packed", packed)
        return self

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError(f"IpAddress is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError(f"IpAddress is immutable: cannot delete {name!r}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (IpAddress, (self._family, self._packed))

    def __copy__(self) -> IpAddress:
        return self

    def __deepcopy__(self, memo: object) -> IpAddress:
        return self

    @property
    def family(self) -> IpAddressFamily:
        """``IpAddressFamily.IPV4`` or ``IpAddressFamily.IPV6``."""
        return self._family

    @property
    def address_v4(self) -> bytes:
        """The 4 bytes of an IPv4 address, in network order.

        Raises:
            AttributeError: The address is IPv6 (Nim raises ``FieldDefect`` there).
        """
        if self._family is not IpAddressFamily.IPV4:
            raise AttributeError(f"address_v4 of an IPv6 address ({self}): use address_v6")
        return self._packed

    @property
    def address_v6(self) -> bytes:
        """The 16 bytes of an IPv6 address, in network order.

        Raises:
            AttributeError: The address is IPv4 (Nim raises ``FieldDefect`` there).
        """
        if self._family is not IpAddressFamily.IPV6:
            raise AttributeError(f"address_v6 of an IPv4 address ({self}): use address_v4")
        return self._packed

    @property
    def packed(self) -> bytes:
        """The address bytes in network order, whatever the family (4 or 16 bytes)."""
        return self._packed

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IpAddress):
            return NotImplemented
        return self._family is other._family and self._packed == other._packed

    def __hash__(self) -> int:
        return hash((self._family, self._packed))

    def __str__(self) -> str:
        if self._family is IpAddressFamily.IPV4:
            return _format_ipv4(self._packed)
        return _format_ipv6(self._packed)

    def __repr__(self) -> str:
        return f"IpAddress({str(self)!r})"

    def to_ipaddress(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """Return the same address as an :mod:`ipaddress` object."""
        if self._family is IpAddressFamily.IPV4:
            return ipaddress.IPv4Address(self._packed)
        return ipaddress.IPv6Address(self._packed)

    @classmethod
    def from_ipaddress(cls, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> IpAddress:
        """Convert an :mod:`ipaddress` address.

        An ``IPv4Interface``/``IPv6Interface`` gives its address (the network part is dropped).

        Raises:
            ValueError: ``address`` is a scoped IPv6 address (``fe80::1%eth0``): an
                :class:`IpAddress` has no zone id, and dropping it silently could change which
                host is meant. Convert ``ipaddress.IPv6Address(address.packed)`` to drop it.
            TypeError: ``address`` is not an ``IPv4Address`` or ``IPv6Address``.
        """
        if isinstance(address, ipaddress.IPv4Address):
            return cls._make(IpAddressFamily.IPV4, address.packed)
        if isinstance(address, ipaddress.IPv6Address):
            if address.scope_id is not None:
                raise ValueError(
                    f"cannot convert the scoped IPv6 address {str(address)!r}: IpAddress has no "
                    "zone id (convert ipaddress.IPv6Address(address.packed) to drop it)"
                )
            return cls._make(IpAddressFamily.IPV6, address.packed)
        raise TypeError(
            f"expected ipaddress.IPv4Address or IPv6Address, not {type(address).__name__}"
        )


def parse_ip_address(address_str: str) -> IpAddress:
    """Parse an IPv4 or IPv6 address (Nim's ``parseIpAddress``), strictly.

    IPv4: exactly four decimal parts 0-255 without leading zeros (RFC 6943 §3.1.1). IPv6: RFC 4291
    text with groups of 1-4 hex digits, at most one ``::`` (standing for at least one group) and an
    optional dotted IPv4 tail. No zone ids, brackets, ports or whitespace. A string with a ``:`` is
    parsed as IPv6, any other as IPv4.

    Args:
        address_str: The text to parse.

    Returns:
        The address.

    Raises:
        ValueError: ``address_str`` is not a valid address; the message quotes it and says why,
            e.g. ``invalid IP address '01.1.1.1': octal numbers are not allowed``.
        TypeError: ``address_str`` is not a :class:`str`.
    """
    if not isinstance(address_str, str):
        raise TypeError(f"parse_ip_address() takes a str, not {type(address_str).__name__}")
    try:
        if not address_str:
            raise _Invalid("the string is empty")
        if ":" in address_str:
            return IpAddress._make(IpAddressFamily.IPV6, _parse_ipv6(address_str))
        return IpAddress._make(IpAddressFamily.IPV4, _parse_ipv4(address_str))
    except _Invalid as exc:
        raise ValueError(f"invalid IP address {_shown(address_str)}: {exc.reason}") from None


def is_ip_address(address_str: object) -> bool:
    """Tell whether :func:`parse_ip_address` accepts ``address_str`` (Nim's ``isIpAddress``).

    Never raises: anything that is not a :class:`str` gives ``False``.
    """
    if not isinstance(address_str, str) or not address_str:
        return False
    try:
        if ":" in address_str:
            _parse_ipv6(address_str)
        else:
            _parse_ipv4(address_str)
    except _Invalid:
        return False
    return True


def ipv4_any() -> IpAddress:
    """Return ``0.0.0.0``."""
    return IpAddress._make(IpAddressFamily.IPV4, bytes(4))


def ipv4_loopback() -> IpAddress:
    """Return ``127.0.0.1``."""
    return IpAddress._make(IpAddressFamily.IPV4, b"\x7f\x00\x00\x01")


def ipv4_broadcast() -> IpAddress:
    """Return ``255.255.255.255``."""
    return IpAddress._make(IpAddressFamily.IPV4, b"\xff" * 4)


def ipv6_any() -> IpAddress:
    """Return ``::``."""
    return IpAddress._make(IpAddressFamily.IPV6, bytes(16))


def ipv6_loopback() -> IpAddress:
    """Return ``::1``."""
    return IpAddress._make(IpAddressFamily.IPV6, bytes(15) + b"\x01")


def to_sock_addr(address: IpAddress, port: int) -> tuple[str, int] | tuple[str, int, int, int]:
    """Make the socket address tuple of the stdlib :mod:`socket` module (Nim's ``toSockAddr``).

    Args:
        address: The IP address.
        port: The port, 0-65535.

    Returns:
        ``(host, port)`` for IPv4, ``(host, port, 0, 0)`` (flow info and scope id zero) for IPv6;
        ``host`` is ``str(address)``.

    Raises:
        ValueError: ``port`` is out of range.
        TypeError: ``address`` is not an :class:`IpAddress` or ``port`` not an :class:`int`.
    """
    if not isinstance(address, IpAddress):
        raise TypeError(f"to_sock_addr() takes an IpAddress, not {type(address).__name__}")
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, not {type(port).__name__}")
    if not 0 <= port <= _MAX_PORT:
        raise ValueError(f"port {port} is out of range 0-{_MAX_PORT}")
    if address.family is IpAddressFamily.IPV4:
        return (str(address), port)
    return (str(address), port, 0, 0)


def from_sock_addr(sockaddr: tuple[Any, ...]) -> tuple[IpAddress, int]:
    """Read a socket address tuple of the stdlib :mod:`socket` module (Nim's ``fromSockAddr``).

    Accepts ``(host, port)`` (IPv4, or IPv6 as :meth:`socket.socket.connect` also takes it) and
    ``(host, port, flowinfo, scope_id)`` (IPv6), as ``getsockname``, ``getpeername``,
    ``recvfrom``, ``accept`` and ``getaddrinfo`` return them. A ``%zone`` suffix on an IPv6 host
    (the stdlib adds one for link-local addresses) is dropped: the zone is in ``scope_id``.

    Returns:
        The address and the port.

    Raises:
        ValueError: ``sockaddr`` is neither an IPv4 nor an IPv6 socket address (a Unix path, a
            host name, a malformed tuple); the message quotes it.
    """
    prefix = f"Neither IPv4 nor IPv6 socket address: {sockaddr!r}"
    if not isinstance(sockaddr, tuple) or len(sockaddr) not in (2, 4):
        raise ValueError(f"{prefix} (expected (host, port) or (host, port, flowinfo, scope_id))")
    host, port = sockaddr[0], sockaddr[1]
    if not isinstance(host, str):
        raise ValueError(f"{prefix} (the host is not a str)")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= _MAX_PORT:
        raise ValueError(f"{prefix} (the port is not an int in 0-{_MAX_PORT})")
    if ":" in host:
        host = host.partition("%")[0]
    try:
        address = parse_ip_address(host)
    except ValueError as exc:
        raise ValueError(f"{prefix} ({exc})") from None
    if len(sockaddr) == 4 and address.family is not IpAddressFamily.IPV6:
        raise ValueError(f"{prefix} (a 4-tuple must hold an IPv6 address)")
    return address, port


_DEFAULT_DEST: Final = IpAddress._make(IpAddressFamily.IPV4, bytes((8, 8, 8, 8)))


def get_primary_ip_addr(dest: IpAddress = _DEFAULT_DEST) -> IpAddress:
    """Return the local address the system would use to reach ``dest`` (Nim's ``getPrimaryIPAddr``).

    Makes a UDP socket of ``dest``'s family and "connects" it to port 80 of ``dest``: a UDP connect
    only picks a route and a source address, it sends nothing. The socket is always closed.

    Args:
        dest: The destination whose route is asked; ``8.8.8.8`` by default (no packet goes there).

    Returns:
        The source address of that route.

    Raises:
        OSError: There is no route to ``dest`` (or that family is unavailable); the message names
            ``dest`` and the :attr:`~OSError.errno` is the system's.
    """
    if not isinstance(dest, IpAddress):
        raise TypeError(f"get_primary_ip_addr() takes an IpAddress, not {type(dest).__name__}")
    family = socket.AF_INET if dest.family is IpAddressFamily.IPV4 else socket.AF_INET6
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect(to_sock_addr(dest, 80))
            local = sock.getsockname()
    except OSError as exc:
        raise OSError(
            exc.errno, f"cannot find the primary IP address towards {dest}: {exc.strerror or exc}"
        ) from exc
    return from_sock_addr(local)[0]
