"""Sans-I/O tests of ``duonet._buffer.ReadBuffer`` against the reference model in ``linemodel``.

Every result of the real buffer is compared with :class:`linemodel.LineModel`, which applies the
SPEC's line rules byte by byte on a plain ``bytearray``. ``DUONET_STRESS=1`` multiplies the number
of hypothesis examples by 20 (run it with ``-o timeout=0``: some tests then take over 60 s).
"""

from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from duonet import _buffer
from duonet._buffer import ReadBuffer
from linemodel import EMPTY_LINE, LineModel, split_lines

STRESS = 20 if os.environ.get("DUONET_STRESS") == "1" else 1

ALPHABET = b"ab\r\n\x00"
TERMINATORS = [b"\n", b"\r\n", b"\r"]

raw_bytes = st.lists(st.sampled_from(ALPHABET), max_size=24).map(bytes)
lines_blob = st.lists(
    st.tuples(
        st.lists(st.sampled_from(b"ab\x00"), max_size=8).map(bytes), st.sampled_from(TERMINATORS)
    ),
    max_size=40,
).map(lambda parts: b"".join(body + term for body, term in parts))
long_run = st.integers(15, 60).map(lambda n: b"x" * n)
chunks = st.one_of(raw_bytes, raw_bytes, lines_blob, long_run)
max_lengths = st.one_of(st.integers(1, 20), st.just(1_000_000))
sizes = st.integers(0, 30)


def feed_all(buf: ReadBuffer, model: LineModel, data: bytes) -> None:
    buf.feed(data)
    model.feed(data)


# -- the stateful property ---------------------------------------------------------------------


class BufferMachine(RuleBasedStateMachine):
    """Random feeds and reads of a ``ReadBuffer``, every answer checked against the model."""

    def __init__(self) -> None:
        super().__init__()
        self.buf = ReadBuffer()
        self.model = LineModel()

    @precondition(lambda self: not self.model.eof)
    @rule(data=chunks)
    def feed(self, data: bytes) -> None:
        feed_all(self.buf, self.model, data)

    @precondition(lambda self: not self.model.eof)
    @rule(data=chunks, cut=st.integers(0, 24))
    def feed_memoryview_and_bytearray(self, data: bytes, cut: int) -> None:
        # The core feeds what the kernel gave; any buffer type must do.
        self.buf.feed(memoryview(data)[:cut])
        self.buf.feed(bytearray(data[cut:]))
        self.model.feed(data)

    @precondition(lambda self: not self.model.eof)
    @rule()
    def feed_eof(self) -> None:
        self.buf.feed_eof()
        self.model.feed_eof()
        assert self.buf.eof

    @rule(max_length=max_lengths)
    def take_line(self, max_length: int) -> None:
        before = len(self.model)
        expected = self.model.take_line(max_length)
        assert self.buf.take_line(max_length) == expected
        if expected is None:
            assert len(self.model) == before  # nothing consumed

    @rule(max_length=max_lengths)
    def take_line_then_unread(self, max_length: int) -> None:
        expected = self.model.take_line(max_length)
        assert self.buf.take_line(max_length) == expected
        if expected is not None:
            raw = self.model.last_consumed
            self.buf.unread(raw)
            self.model.unread(raw)

    @rule(max_length=max_lengths, n=st.integers(1, 50))
    def take_many_lines(self, max_length: int, n: int) -> None:
        # Lines in a row: the batch path pops stored entries.
        for _ in range(n):
            expected = self.model.take_line(max_length)
            assert self.buf.take_line(max_length) == expected
            if expected is None:
                break

    @precondition(lambda self: self.model.eof)
    @rule(max_length=max_lengths)
    def take_rest_line(self, max_length: int) -> None:
        assert self.buf.take_rest_line(max_length) == self.model.take_rest_line(max_length)

    @rule(size=sizes)
    def take(self, size: int) -> None:
        assert self.buf.take(size) == self.model.take(size)

    @rule(size=st.integers(1, 30))
    def take_exact(self, size: int) -> None:
        before = len(self.model)
        expected = self.model.take_exact(size)
        assert self.buf.take_exact(size) == expected
        if expected is None:
            assert len(self.model) == before  # nothing consumed

    @rule(size=st.integers(-2, 0))
    def take_exact_below_one_is_not_a_read(self, size: int) -> None:
        before = len(self.model)
        assert self.buf.take_exact(size) is None
        assert len(self.buf) == len(self.model) == before

    @rule(max_length=max_lengths, size=st.integers(1, 30))
    def header_then_body(self, max_length: int, size: int) -> None:
        # The protocol pattern: a line, then an exact read (RESP, HTTP bodies).
        assert self.buf.take_line(max_length) == self.model.take_line(max_length)
        assert self.buf.take_exact(size) == self.model.take_exact(size)

    @rule(size=sizes)
    def take_then_unread(self, size: int) -> None:
        got = self.buf.take(size)
        assert got == self.model.take(size)
        self.buf.unread(got)
        self.model.unread(got)
        assert self.buf.peek() == self.model.peek()  # putting back what was taken restores it

    @rule(size=sizes, offset=st.integers(0, 3), unread=st.booleans())
    def take_into(self, size: int, offset: int, unread: bool) -> None:
        target = bytearray(b"\xee" * (size + 2 * offset))
        expected = bytearray(target)
        view = memoryview(target)[offset : offset + size]
        with memoryview(expected)[offset : offset + size] as expected_view:
            want = self.model.take_into(expected_view)
        got = self.buf.take_into(view)
        view.release()
        assert got == want
        assert target == expected  # the bytes written, and nothing outside them
        if unread:
            taken = bytes(target[offset : offset + got])
            self.buf.unread(taken)
            self.model.unread(taken)
            assert self.buf.peek() == self.model.peek()

    @rule(size=sizes)
    def discard(self, size: int) -> None:
        assert self.buf.discard(size) == self.model.discard(size)

    @rule()
    def peek(self) -> None:
        assert self.buf.peek() == self.model.peek()

    @invariant()
    def sizes_agree(self) -> None:
        assert len(self.buf) == len(self.model)
        assert bool(self.buf) == bool(self.model)
        assert self.buf.eof == self.model.eof


@pytest.fixture(params=["default", "small tail"])
def thresholds(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The buffer's size thresholds as shipped, or tiny, so that random tests of a few dozen
    bytes also go through the tail of chunks, the memoryview copies, and a head that leaves
    head mode when a chunk arrives."""
    if request.param == "small tail":
        monkeypatch.setattr(_buffer, "_TAIL_FROM", 5)
        monkeypatch.setattr(_buffer, "_VIEW_FROM", 3)
        monkeypatch.setattr(_buffer, "_HEAD_KEEP", 2)
    return str(request.param)


def test_buffer_state_machine(thresholds: str) -> None:
    run_state_machine_as_test(
        BufferMachine,
        settings=settings(
            max_examples=300 * STRESS,
            stateful_step_count=60,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )


# -- a stateless property: one stream, random chunks, a random schedule of reads ----------------

ops = st.lists(
    st.one_of(
        st.tuples(st.just("line"), max_lengths),
        st.tuples(st.just("take"), sizes),
        st.tuples(st.just("exact"), st.integers(1, 30)),
        st.tuples(st.just("discard"), sizes),
        st.tuples(st.just("feed"), st.just(0)),
    ),
    max_size=60,
)


@settings(
    max_examples=300 * STRESS,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],  # constant per parameter
)
@given(
    data=st.lists(chunks, max_size=8).map(b"".join),
    cuts=st.lists(st.integers(0, 400), max_size=30),
    schedule=ops,
)
def test_random_chunking_and_reads(
    thresholds: str, data: bytes, cuts: list[int], schedule: list[tuple[str, int]]
) -> None:
    points = sorted({c for c in cuts if c < len(data)} | {0, len(data)})
    pieces = [data[a:b] for a, b in itertools.pairwise(points)]
    buf, model = ReadBuffer(), LineModel()
    for op, arg in schedule:
        if op == "feed":
            if pieces:
                feed_all(buf, model, pieces.pop(0))
        elif op == "line":
            assert buf.take_line(arg) == model.take_line(arg)
        elif op == "take":
            assert buf.take(arg) == model.take(arg)
        elif op == "exact":
            assert buf.take_exact(arg) == model.take_exact(arg)
        else:
            assert buf.discard(arg) == model.discard(arg)
        assert len(buf) == len(model)
    for piece in pieces:
        feed_all(buf, model, piece)
    buf.feed_eof()
    model.feed_eof()
    while True:
        line = buf.take_rest_line(7)
        assert line == model.take_rest_line(7)
        if not line:
            break
    assert not buf
    assert len(buf) == 0


@settings(max_examples=200 * STRESS, deadline=None)
@given(data=st.lists(chunks, max_size=8).map(b"".join), max_length=max_lengths)
def test_whole_vs_byte_by_byte(data: bytes, max_length: int) -> None:
    """Chunking never changes the lines (the model itself is checked against the split rules)."""
    expected = split_lines(data, max_length)
    whole = ReadBuffer()
    whole.feed(data)
    whole.feed_eof()
    assert drain(whole, max_length) == expected
    trickle = ReadBuffer()
    got = []
    for i in range(len(data)):
        trickle.feed(data[i : i + 1])
        while (line := trickle.take_line(max_length)) is not None:
            got.append(line)
    trickle.feed_eof()
    assert got + drain(trickle, max_length) == expected


def drain(buf: ReadBuffer, max_length: int = 1_000_000) -> list[bytes]:
    out = []
    while line := buf.take_rest_line(max_length):
        out.append(line)
    return out


# -- explicit cases ---------------------------------------------------------------------------

E = EMPTY_LINE

# (input, the lines it holds, what stays buffered); no case ends inside a \r\n
H11_CASES = [
    (b"", [], b""),
    (b"a\n", [b"a"], b""),
    (b"a\r\n", [b"a"], b""),
    (b"a\r", [b"a"], b""),
    (b"\n", [E], b""),
    (b"\r\n", [E], b""),
    (b"\r", [E], b""),
    (b"\r\r", [E, E], b""),
    (b"\n\r", [E, E], b""),
    (b"\n\n", [E, E], b""),
    (b"\r\n\r\n", [E, E], b""),
    (b"a\r\r\nb\n", [b"a", E, b"b"], b""),
    (b"a\n\rb", [b"a", E], b"b"),
    (b"ab\r\ncd\ref\ngh", [b"ab", b"cd", b"ef"], b"gh"),
    (b"\x00\r\n\x00", [b"\x00"], b"\x00"),
    (b"a\r\n\r\n\r\nb", [b"a", E, E], b"b"),
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody", [b"GET / HTTP/1.1", b"Host: x", E], b"body"),
]


def lines_and_rest(pieces: list[bytes], max_length: int = 1_000_000) -> tuple[list[bytes], bytes]:
    buf = ReadBuffer()
    lines = []
    for piece in pieces:
        buf.feed(piece)
        while (line := buf.take_line(max_length)) is not None:
            lines.append(line)
    return lines, buf.peek()


@pytest.mark.parametrize(("data", "lines", "rest"), H11_CASES)
def test_three_ways(data: bytes, lines: list[bytes], rest: bytes) -> None:
    # whole input
    assert lines_and_rest([data]) == (lines, rest)
    # byte by byte
    assert lines_and_rest([data[i : i + 1] for i in range(len(data))]) == (lines, rest)
    # with trailing bytes that stay buffered
    assert lines_and_rest([data + b"xyz"]) == (lines, rest + b"xyz")
    assert lines_and_rest([data, b"xy", b"z"]) == (lines, rest + b"xyz")


def test_spec_example_every_split() -> None:
    data = b"a\r\r\nb\n"
    for i in range(len(data) + 1):
        for j in range(i, len(data) + 1):
            assert lines_and_rest([data[:i], data[i:j], data[j:]]) == ([b"a", E, b"b"], b"")


def test_crlf_heavy() -> None:
    data = (b"\r\n" * 500 + b"x\r\n" * 500 + b"\r\r\n\n\r" * 200 + b"yy\r\n") * 3
    expected = split_lines(data)
    assert expected.count(E) == 3 * (500 + 200 * 4)
    for size in (1, 2, 3, 7, 4096, len(data)):
        pieces = [data[i : i + size] for i in range(0, len(data), size)]
        assert lines_and_rest(pieces) == (expected, b"")
    # a batch holding \r (the stored-entry path) with small max_length pieces
    buf = ReadBuffer()
    buf.feed(data)
    model = LineModel(data)
    for k in range(len(expected) + 5):
        max_length = 1 + k % 3
        assert buf.take_line(max_length) == model.take_line(max_length)


def test_lone_cr_at_feed_boundary() -> None:
    buf = ReadBuffer()
    buf.feed(b"a\r")
    assert buf.take_line(100) == b"a"
    assert len(buf) == 0
    assert not buf
    buf.feed(b"")  # an empty feed does not end the pending \r\n
    buf.feed(b"\nb\r\n")
    assert len(buf) == 3
    assert buf.take_line(100) == b"b"
    assert not buf


@pytest.mark.parametrize(
    ("read", "expected"),
    [
        (lambda buf: buf.take(10), b"xy"),
        (lambda buf: buf.peek(), b"xy"),
        (lambda buf: buf.discard(10), 2),
        (lambda buf: buf.take_line(100), None),
        (len, 2),
    ],
)
def test_lone_cr_then_lf_skipped_by_every_read(read, expected) -> None:  # type: ignore[no-untyped-def]
    buf = ReadBuffer()
    buf.feed(b"a\r")
    assert buf.take_line(100) == b"a"
    buf.feed(b"\nxy")
    assert read(buf) == expected


def test_lone_cr_then_other_bytes() -> None:
    buf = ReadBuffer()
    buf.feed(b"a\r")
    assert buf.take_line(100) == b"a"
    buf.feed(b"\r\n")  # a new empty line, not the end of the first
    assert buf.take_line(100) == E
    buf.feed(b"b\r")
    assert buf.take_line(100) == b"b"
    buf.feed(b"c\n")
    assert buf.take_line(100) == b"c"
    buf.feed(b"d\r")
    assert buf.take_line(100) == b"d"
    buf.feed_eof()  # the \n can no longer come
    assert buf.take_rest_line(100) == b""


def test_lone_cr_then_unread_line() -> None:
    # What the blocking face does when a Ctrl-C races a completed recv_line.
    buf = ReadBuffer()
    buf.feed(b"a\r")
    line = buf.take_line(100)
    assert line == b"a"
    buf.unread_line(line)  # puts back b"a\r" exactly: the late \n then completes it
    buf.feed(b"\nb\n")
    assert buf.take_line(100) == b"a"
    assert buf.take_line(100) == b"b"


@pytest.mark.parametrize(
    ("stream", "max_length"),
    [(b"abc\r\ndef", 100), (b"abc\ndef", 100), (b"abcdef\n", 3), (b"abc\rdef\n", 100)],
)
def test_unread_line_restores_exact_bytes(stream: bytes, max_length: int) -> None:
    buf = ReadBuffer()
    buf.feed(stream)
    line = buf.take_line(max_length)
    assert line is not None
    buf.unread_line(line)
    assert buf.peek() == stream


def test_lone_cr_lines_are_linear() -> None:
    # 400k lines ended by a lone \r: the \n search must not rescan the buffer for each line.
    buf = ReadBuffer()
    buf.feed(b"x\r" * 400_000)
    count = 0
    while buf.take_line(1_000_000) is not None:
        count += 1
    assert count == 400_000


def test_max_length_edges() -> None:
    buf = ReadBuffer()
    buf.feed(b"abc")
    assert buf.take_line(3) is None  # the terminator may still come: not a piece yet
    assert buf.peek() == b"abc"
    buf.feed(b"\r")
    assert buf.take_line(3) == b"abc"
    buf.feed(b"\nabcd")
    assert buf.take_line(3) == b"abc"
    assert buf.take_line(3) is None
    buf.feed(b"\n")
    assert buf.take_line(3) == b"d"
    buf.feed(b"abcdefg\n")
    assert [buf.take_line(2) for _ in range(5)] == [b"ab", b"cd", b"ef", b"g", None]
    buf.feed(b"abcdefg")
    buf.feed_eof()
    assert [buf.take_rest_line(3) for _ in range(4)] == [b"abc", b"def", b"g", b""]


def test_none_consumes_nothing() -> None:
    buf = ReadBuffer()
    for byte in b"abc\x00ab":
        buf.feed(bytes([byte]))
        before = buf.peek()
        assert buf.take_line(100) is None
        assert buf.peek() == before


@pytest.mark.parametrize("reply", [b"a\r\n", b"a\n", b"a\r"])
def test_empty_buffer_misses_then_reads_on(reply: bytes) -> None:
    # The miss before every wait: a fresh buffer, and one whose head was taken whole (the
    # early returns of take_line), answer None and then read the next chunk as usual.
    buf = ReadBuffer()
    assert buf.take_line(10) is None
    for _ in range(3):
        buf.feed(reply)
        assert buf.take_line(10) == b"a"
        assert buf.take_line(10) is None
        assert not buf
        assert len(buf) == 0
    buf.feed(b"\nbc")  # after a lone \r its \n is skipped, else it is an empty line
    assert buf.take_line(10) == (None if reply.endswith(b"\r") else b"\r\n")
    assert buf.take_exact(2) == b"bc"
    assert buf.take_line(1) is None
    buf.feed(b"xyz")
    assert buf.take_line(1) == b"x"  # a max_length piece is no miss


def short_lines(n: int, terminator: bytes = b"\n") -> bytes:
    return b"".join(b"L%d" % i + terminator for i in range(n))


@pytest.mark.parametrize("terminator", [b"\n", b"\r\n"])
def test_batch_fast_path(terminator: bytes) -> None:
    n = 100_000
    data = short_lines(n, terminator)
    buf = ReadBuffer()
    buf.feed(data)
    assert len(buf) == len(data)
    lines = [buf.take_line(1_000_000) for _ in range(n)]
    assert lines == [b"L%d" % i for i in range(n)]
    assert buf.take_line(1_000_000) is None
    assert not buf


@pytest.mark.parametrize("terminator", [b"\n", b"\r\n", b"\r"])
def test_batch_interleaved_with_bytes(terminator: bytes) -> None:
    n = 100_000
    data = short_lines(n, terminator) + b"tail"
    buf = ReadBuffer()
    buf.feed(data)
    model = LineModel(data)
    for i in range(n):
        if i in (3, 50_000, 50_001, 77_777):
            assert buf.take(5) == model.take(5)
            assert len(buf) == len(model)
        if i == 60_000:
            assert buf.take_line(2) == model.take_line(2)  # a piece of a stored entry
        if i == 70_000:
            got = buf.take(7)
            buf.unread(got)
        if i == 80_000:
            assert buf.discard(3) == model.discard(3)
        assert buf.take_line(1_000_000) == model.take_line(1_000_000)
    assert buf.peek() == model.peek()
    buf.feed_eof()
    model.feed_eof()
    assert drain(buf) == split_lines(bytes(model.buf))


@pytest.mark.timeout(20)
@pytest.mark.parametrize("terminator", [b"\n", b"\r\n"])
def test_megabyte_line_byte_by_byte_is_linear(terminator: bytes) -> None:
    # O(bytes), not O(bytes^2): 1 MB in 1-byte feeds, each followed by a take_line.
    size = 1_000_000
    buf = ReadBuffer()
    one = b"z"
    take_line = buf.take_line
    feed = buf.feed
    for _ in range(size):
        feed(one)
        if take_line(1_000_000) is not None:
            raise AssertionError("a line before the terminator")
    for byte in terminator:
        feed(bytes([byte]))
        line = take_line(1_000_000)
        if line is not None:
            break
    assert line == one * size
    assert not buf


@pytest.mark.timeout(20)
def test_megabyte_line_in_pieces_byte_by_byte() -> None:
    buf = ReadBuffer()
    pieces = []
    for _ in range(1_000_000):
        buf.feed(b"z")
        piece = buf.take_line(1000)
        if piece is not None:
            pieces.append(piece)
    buf.feed(b"\n")
    pieces.append(buf.take_line(1000))
    assert pieces[-1] == b"z" * 1000
    assert len(pieces) == 1000
    assert all(p == b"z" * 1000 for p in pieces)


# -- the protocol paths: header line + exact body, and large values -----------------------------


def test_header_and_body_replies() -> None:
    bodies = [bytes([65 + i % 26]) * (i % 50) + b"\r\n\n\r" * (i % 3) for i in range(500)]
    stream = b"".join(b"$%d\r\n%s" % (len(b), b) for b in bodies)
    buf = ReadBuffer()
    for i in range(0, len(stream), 997):
        buf.feed(stream[i : i + 997])
    got = []
    for _ in bodies:
        header = buf.take_line(100)
        assert header is not None
        assert header.startswith(b"$")
        size = int(header[1:])
        body = buf.take_exact(size) if size else b""  # (take_exact(0) is not a read: None)
        assert body is not None
        got.append(body)
    assert got == bodies
    assert not buf
    assert len(buf) == 0


@pytest.mark.parametrize("into", [False, True])
def test_large_values_in_chunks(into: bool) -> None:
    # A 1 MiB value arriving in 64 KiB chunks after its header, followed by the next header:
    # the chunks queue in the tail (no bytearray growth) and come out exactly once.
    size = 1 << 20
    values = [bytes([i]) * 8 + os.urandom(size - 8) for i in range(3)]
    stream = b"".join(b"$%d\r\n%s" % (size, v) for v in values) + b"+OK\r\n"
    buf = ReadBuffer()
    chunk = 1 << 16
    fed = 0
    for value in values:
        while (header := buf.take_line(1000)) is None:
            buf.feed(stream[fed : fed + chunk])
            fed += chunk
        assert header == b"$%d" % size
        while len(buf) < size:
            assert buf.take_exact(size) is None  # nothing consumed
            buf.feed(stream[fed : fed + chunk])
            fed += chunk
        assert buf._tail  # the large value went through the tail
        if into:
            target = bytearray(size)
            assert buf.take_into(memoryview(target)) == size
            assert target == value
        else:
            assert buf.take_exact(size) == value
    buf.feed(stream[fed:])
    assert buf.take_line(1000) == b"+OK"
    assert not buf
    assert not buf._tail


def test_discard_and_unread_across_the_tail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_buffer, "_TAIL_FROM", 4)
    monkeypatch.setattr(_buffer, "_HEAD_KEEP", 0)
    buf = ReadBuffer()
    for piece in (b"abcd", b"efgh", b"ijkl", b"mn\r\nop"):
        buf.feed(piece)
    assert len(buf) == 18
    assert buf._tail
    assert buf.discard(6) == 6
    buf.unread(b"XY")
    assert buf.take(5) == b"XYghi"
    assert buf.take_line(100) == b"jklmn"
    assert buf.take_exact(2) == b"op"
    assert not buf


def test_head_mode_keeps_a_small_rest_and_leaves_for_a_large_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_buffer, "_HEAD_KEEP", 4)
    buf = ReadBuffer()
    buf.feed(b"$3\r\nabc$5\r\nde")  # arrives while empty: the chunk is the head
    assert buf._head
    assert buf.take_line(100) == b"$3"
    assert buf.take_exact(3) == b"abc"
    assert buf.take_line(100) == b"$5"
    assert buf.take_exact(5) is None  # not all there: nothing consumed
    buf.feed(b"fgh")  # 2 bytes left over (<= 4): still one head
    assert buf._head
    assert buf.take_exact(5) == b"defgh"
    buf.feed(b"partial line")
    assert buf.take_line(100) is None
    buf.feed(b" goes on")  # 12 bytes left over (> 4): they move to the bytearray
    assert not buf._head
    assert buf.take_line(100) is None
    buf.feed(b"\r\n")
    assert buf.take_line(100) == b"partial line goes on"
    assert not buf
