"""Property tests of ``duonet._ip`` against the stdlib :mod:`ipaddress` module.

Where SPEC and the stdlib differ, the difference is written out here, never papered over:

* **IPv4-mapped addresses** (``::ffff:0:0/96``) print as ``::ffff:1.2.3.4`` in duonet (RFC 5952
  §5) on every Python; :mod:`ipaddress` prints them that way only from 3.13 on.
* **Zone ids**: :mod:`ipaddress` accepts ``fe80::1%eth0``; SPEC rejects every ``%``.
* **Leading zeros in IPv4** (``01.2.3.4``): rejected by SPEC (RFC 6943 §3.1.1) and by
  :mod:`ipaddress` since 3.9.5, but accepted before; detected at import time and excluded if the
  running stdlib accepts them.

Everything else (1-4 hex digit groups, one ``::`` standing for at least one group, a dotted tail
only as the last 32 bits, ASCII only) is the same grammar, so the verdicts must agree.
"""

from __future__ import annotations

import ipaddress
import re

from hypothesis import example, given, settings
from hypothesis import strategies as st

from duonet._enums import IpAddressFamily
from duonet._ip import IpAddress, is_ip_address, parse_ip_address

SETTINGS = settings(max_examples=300, deadline=None)

V4_MAPPED_PREFIX = bytes(10) + b"\xff\xff"
JUNK_ALPHABET = "0123456789abcdefABCDEF:.%[] x"
# RFC 6943 §3.1.1 strict dotted decimal (each part must also be <= 255, checked apart).
STRICT_IPV4 = re.compile(r"(0|[1-9][0-9]{0,2})(\.(0|[1-9][0-9]{0,2})){3}")


def _stdlib_accepts_leading_zeros() -> bool:
    try:
        ipaddress.IPv4Address("01.2.3.4")
    except ValueError:
        return False
    return True  # pragma: no cover - Python < 3.9.5


STDLIB_ACCEPTS_LEADING_ZEROS = _stdlib_accepts_leading_zeros()


def strict_ipv4_ok(text: str) -> bool:
    """The RFC 6943 rule, written independently of the code under test."""
    return STRICT_IPV4.fullmatch(text) is not None and all(
        int(part) <= 255 for part in text.split(".")
    )


def has_leading_zero_octet(text: str) -> bool:
    """Whether a dotted part (IPv4, or an IPv6 tail) has a leading zero, like ``01``."""
    dotted = text.rpartition(":")[2]
    return any(len(part) > 1 and part.startswith("0") for part in dotted.split("."))


def stdlib_accepts(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def spec_verdict_from_stdlib(text: str) -> bool | None:
    """What SPEC says about ``text`` according to the stdlib, or ``None`` where they differ."""
    if "%" in text:
        return False  # zone ids: the stdlib may accept them, SPEC never does
    if STDLIB_ACCEPTS_LEADING_ZEROS and has_leading_zero_octet(text):
        return None  # pragma: no cover - Python < 3.9.5
    return stdlib_accepts(text)


def expected_v6_text(packed: bytes) -> str:
    """RFC 5952 text of ``packed``, from the stdlib, with the IPv4-mapped exception written out."""
    if packed[:12] == V4_MAPPED_PREFIX:
        return "::ffff:" + str(ipaddress.IPv4Address(packed[12:]))
    # Not IPv4-mapped: every supported stdlib prints RFC 5952 text.
    return ipaddress.IPv6Address(packed).compressed


def pack_words(words: list[int]) -> bytes:
    return b"".join(word.to_bytes(2, "big") for word in words)


# Words biased towards zero, so that runs of zero groups (and ties between runs) are common.
word = st.one_of(st.just(0), st.integers(0, 0xF), st.integers(0, 0xFFFF))
words8 = st.lists(word, min_size=8, max_size=8)
v6_packed = st.one_of(
    st.binary(min_size=16, max_size=16),
    words8.map(pack_words),
    st.binary(min_size=4, max_size=4).map(lambda tail: V4_MAPPED_PREFIX + tail),
    st.binary(min_size=4, max_size=4).map(lambda tail: bytes(12) + tail),
)


def zero_runs(words: list[int], limit: int) -> list[tuple[int, int]]:
    """Every (start, length) span of consecutive zero words within ``words[:limit]``."""
    spans = []
    for start in range(limit):
        length = 0
        while start + length < limit and words[start + length] == 0:
            length += 1
            spans.append((start, length))
    return spans


@st.composite
def v6_text_variants(draw: st.DrawFn) -> tuple[str, bytes]:
    """Any valid spelling of an IPv6 address: padded or not, any case, any '::', dotted tail."""
    words = draw(words8)
    dotted = draw(st.booleans())
    hex_count = 6 if dotted else 8
    groups = []
    for value in words[:hex_count]:
        digits = f"{value:x}"
        width = draw(st.integers(len(digits), 4))
        digits = digits.rjust(width, "0")
        case = draw(st.sampled_from(["lower", "upper", "mixed"]))
        if case == "upper":
            digits = digits.upper()
        elif case == "mixed":
            digits = "".join(char.upper() if draw(st.booleans()) else char for char in digits)
        groups.append(digits)
    tail = []
    if dotted:
        tail = [".".join(str(octet) for octet in pack_words(words[6:]))]
    spans = zero_runs(words, hex_count)
    span = draw(st.sampled_from([None, *spans])) if spans else None
    if span is None:
        text = ":".join(groups + tail)
    else:
        start, length = span
        head = ":".join(groups[:start])
        rest = ":".join(groups[start + length :] + tail)
        text = f"{head}::{rest}"
    return text, pack_words(words)


@st.composite
def mutated_v6_text(draw: st.DrawFn) -> str:
    """A valid IPv6 text with one character inserted, deleted or replaced: near misses."""
    text, _ = draw(v6_text_variants())
    index = draw(st.integers(0, len(text)))
    char = draw(st.sampled_from(JUNK_ALPHABET))
    action = draw(st.sampled_from(["insert", "delete", "replace"]))
    if action == "insert":
        return text[:index] + char + text[index:]
    if action == "delete":
        return text[:index] + text[index + 1 :]
    return text[:index] + char + text[index + 1 :]


@st.composite
def v4_like_text(draw: st.DrawFn) -> str:
    """Dotted decimal, mostly well formed, with out-of-range parts and leading zeros mixed in."""
    count = draw(st.sampled_from([4, 4, 4, 3, 5]))
    parts = []
    for _ in range(count):
        value = draw(st.one_of(st.integers(0, 255), st.integers(0, 1000)))
        zeros = draw(st.sampled_from(["", "", "", "0", "00"]))
        parts.append(zeros + str(value))
    return ".".join(parts)


# --- IPv6 --------------------------------------------------------------------------------------


@SETTINGS
@given(v6_packed)
@example(bytes(16))
@example(V4_MAPPED_PREFIX + bytes(4))
@example(pack_words([1, 0, 0, 2, 0, 0, 3, 4]))
@example(pack_words([1, 0, 2, 3, 4, 5, 6, 7]))
def test_v6_format_matches_stdlib(packed: bytes) -> None:
    ip = IpAddress(IpAddressFamily.IPV6, packed)
    text = str(ip)
    if packed[:12] == V4_MAPPED_PREFIX:
        # The one intended difference from Python < 3.13: RFC 5952 §5 dotted form.
        assert text == "::ffff:" + ".".join(str(octet) for octet in packed[12:])
    else:
        assert text == ipaddress.IPv6Address(packed).compressed
    assert text == expected_v6_text(packed)
    assert parse_ip_address(text) == ip
    assert ipaddress.IPv6Address(text).packed == packed
    assert ip.to_ipaddress() == ipaddress.IPv6Address(packed)
    assert IpAddress.from_ipaddress(ip.to_ipaddress()) == ip


@SETTINGS
@given(v6_text_variants())
@example(("::", bytes(16)))
@example(("::ffff:1.2.3.4", V4_MAPPED_PREFIX + b"\x01\x02\x03\x04"))
@example(("0000:0000:0000:0000:0000:0000:0.0.0.0", bytes(16)))
def test_v6_text_variants_parse_like_stdlib(case: tuple[str, bytes]) -> None:
    text, packed = case
    assert is_ip_address(text)
    assert stdlib_accepts(text)
    ip = parse_ip_address(text)
    assert ip.family is IpAddressFamily.IPV6
    assert ip.address_v6 == packed == ipaddress.IPv6Address(text).packed
    assert str(ip) == expected_v6_text(packed)
    assert parse_ip_address(str(ip)) == ip
    assert hash(parse_ip_address(str(ip))) == hash(ip)


@SETTINGS
@given(st.one_of(st.text(JUNK_ALPHABET, max_size=45), mutated_v6_text()))
@example("fe80::1%eth0")
@example("::1%1")
@example("1::2:3:4:5:6:7:8")
@example("::ffff:01.2.3.4")
@example("1:2:3:4:5:6:7:1.2.3.4")
def test_is_ip_address_agrees_with_stdlib(text: str) -> None:
    expected = spec_verdict_from_stdlib(text)
    verdict = is_ip_address(text)
    if expected is not None:
        assert verdict is expected
    if ":" not in text:
        assert verdict is strict_ipv4_ok(text)
    if verdict:
        ip = parse_ip_address(text)
        assert ip.packed == ipaddress.ip_address(text).packed
        assert parse_ip_address(str(ip)) == ip


@SETTINGS
@given(st.text(max_size=50))
def test_is_ip_address_never_raises_on_any_text(text: str) -> None:
    verdict = is_ip_address(text)
    assert isinstance(verdict, bool)
    if verdict:
        assert text.isascii()
        assert parse_ip_address(text).packed == ipaddress.ip_address(text).packed


# --- IPv4 --------------------------------------------------------------------------------------


@SETTINGS
@given(st.one_of(st.text("0123456789.", max_size=20), v4_like_text(), st.text(JUNK_ALPHABET)))
@example("0.0.0.0")
@example("255.255.255.255")
@example("256.0.0.0")
@example("01.2.3.4")
@example("1.2.3.4\n")
def test_v4_follows_rfc_6943(text: str) -> None:
    valid = strict_ipv4_ok(text)
    if ":" not in text:
        assert is_ip_address(text) is valid
    if valid:
        ip = parse_ip_address(text)
        assert ip.family is IpAddressFamily.IPV4
        assert ip.address_v4 == bytes(int(part) for part in text.split("."))
        assert str(ip) == text  # a strict dotted quad is already canonical
        if not STDLIB_ACCEPTS_LEADING_ZEROS:
            assert ipaddress.IPv4Address(text).packed == ip.address_v4


@SETTINGS
@given(st.binary(min_size=4, max_size=4))
def test_v4_format_matches_stdlib(packed: bytes) -> None:
    ip = IpAddress(IpAddressFamily.IPV4, packed)
    assert str(ip) == str(ipaddress.IPv4Address(packed))
    assert parse_ip_address(str(ip)) == ip
    assert ip.to_ipaddress() == ipaddress.IPv4Address(packed)
    assert IpAddress.from_ipaddress(ip.to_ipaddress()) == ip
    # The same bytes as IPv6 are another address: families never compare equal.
    assert ip != IpAddress(IpAddressFamily.IPV6, V4_MAPPED_PREFIX + packed)
