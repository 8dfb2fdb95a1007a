"""The receive buffer of a socket, and line splitting: pure, sans-I/O, byte-exact.

Theory of operation
-------------------
The core reads from the kernel in large chunks and :meth:`ReadBuffer.feed` s them here; every read
call of a socket (``recv``, ``recv_line``, ``skip`` ...) is answered from this buffer. The buffer is
the only place where received bytes live between calls, which is what makes reads cancel-safe: the
core appends as soon as a chunk arrives and consumes only when it returns.

Logically the buffer is one byte string. Physically it has two parts, in order:

* ``_lines``: lines already split out of earlier data, **last first** (so handing one out is a
  ``list.pop()``), each stored *without* the ``\\n`` that followed it (so every stored entry is
  followed by a ``\\n``); an entry may still contain ``\\r`` bytes, handled when handed out.
* ``_raw``: a bytearray of everything after that.

Line reading is the hot path (a blocking ``recv_line`` should come close to the C speed of
``socket.makefile().readline()``), so lines are not found one ``find`` at a time: when a line is
asked for and ``_raw`` holds a ``\\n``, a whole batch of lines is cut out with one ``bytes.split``,
and later calls just pop entries. A byte-oriented read joins the unread entries back into
``_raw`` first (:meth:`_merge`); to bound that waste on protocols that alternate lines and bytes
(HTTP, RESP), the batch starts small and doubles only while lines are consumed uninterrupted.

Searching ``_raw`` for a terminator remembers how far it already looked (``_scan``), and never
looks further than ``max_length + 1`` bytes, so a long line trickling in byte by byte costs
O(bytes), not O(bytes²) (as h11's receive buffer).

Line rules (SPEC ``recv_line``): ``\\r\\n``, ``\\n`` and a lone ``\\r`` end a line. A lone ``\\r``
ends it at once; a ``\\n`` arriving right after it, even in a later chunk, belongs to the same
terminator and is skipped by whatever read comes next (``_skip_lf``). An empty line is returned as
``b"\\r\\n"``; ``b""`` is left to mean "the peer closed". A line longer than ``max_length`` comes
out in pieces of ``max_length`` bytes, nothing discarded.
"""

from __future__ import annotations

__all__ = ("EMPTY_LINE", "ReadBuffer")

#: What an empty line reads as (Nim's rule), so that ``b""`` always means "closed".
EMPTY_LINE = b"\r\n"

_MIN_BATCH = 4096
_MAX_BATCH = 1 << 18


class ReadBuffer:
    """Bytes received from a peer and not yet handed to the user.

    Not thread-safe: exactly one call at a time may use it (the socket enforces that).
    """

    __slots__ = ("_batch", "_cr", "_lines", "_merged", "_raw", "_scan", "_skip_lf", "eof")

    def __init__(self) -> None:
        self._lines: list[bytes] = []  # split lines, last first
        self._merged = False  # were split lines merged back since the last split?
        self._cr = False  # does some entry of _lines contain b"\r"?
        self._raw = bytearray()
        self._scan = 0  # _raw[:_scan] holds no terminator (valid until _raw's front changes)
        self._skip_lf = False  # a lone \r ended the last line at the very end of the data
        self._batch = _MIN_BATCH
        #: True once the peer closed (or reset) the stream: no more data will be fed.
        self.eof = False

    # -- filling ----------------------------------------------------------------------------

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append bytes received from the peer."""
        if not data:
            return
        if self._skip_lf:
            self._skip_lf = False
            if data[0] == 10:  # the \n of a \r\n split across chunks
                data = data[1:]
        self._raw += data

    def feed_eof(self) -> None:
        """Record that the peer closed: nothing more will arrive."""
        self.eof = True
        self._skip_lf = False

    # -- inspecting -------------------------------------------------------------------------

    def __len__(self) -> int:
        """The number of buffered bytes."""
        lines = self._lines
        if lines:
            return sum(map(len, lines)) + len(lines) + len(self._raw)
        return len(self._raw)

    @property
    def direct_ok(self) -> bool:
        """True if the next bytes may bypass the buffer (empty, and no ``\\n`` to skip)."""
        return not self._raw and not self._lines and not self._skip_lf and not self.eof

    def __bool__(self) -> bool:
        return bool(self._lines) or bool(self._raw)

    def peek(self) -> bytes:
        """A copy of every buffered byte, without consuming (for tests and diagnostics)."""
        self._merge()
        return bytes(self._raw)

    # -- lines ------------------------------------------------------------------------------

    def take_line(self, max_length: int) -> bytes | None:
        """Consume and return the next line (or a ``max_length`` piece of it), if buffered.

        Returns ``None`` when no complete line (and no full ``max_length`` piece) is buffered yet;
        nothing is consumed then. An empty line is ``b"\\r\\n"``. ``max_length`` must be >= 1.
        """
        lines = self._lines
        if lines:
            if self._cr:
                return self._take_stored_cr_line(max_length)
            line = lines.pop()  # the fast path: a batch with no \r in it
            if len(line) > max_length:
                lines.append(line[max_length:])
                return line[:max_length]
            return line or EMPTY_LINE
        return self._take_raw_line(max_length)

    def take_rest_line(self, max_length: int) -> bytes:
        """At EOF: the unterminated last line (or its next ``max_length`` piece), or ``b""``."""
        line = self.take_line(max_length)
        if line is not None:
            return line
        raw = self._raw
        piece = bytes(raw[:max_length])
        del raw[:max_length]
        self._scan = 0
        return piece

    def _take_stored_cr_line(self, max_length: int) -> bytes:
        # An entry of a batch that contained \r: the entry is followed by \n, so a \r at its very
        # end is half of \r\n; any other \r is a lone terminator.
        lines = self._lines
        line = lines.pop()
        j = line.find(b"\r")
        if j == -1:
            end, rest = len(line), None
        elif j == len(line) - 1:
            end, rest = j, None
        else:
            end, rest = j, line[j + 1 :]
        if end > max_length:
            lines.append(line[max_length:])
            return line[:max_length]
        if rest is not None:
            lines.append(rest)
        return line[:end] or EMPTY_LINE

    def _take_raw_line(self, max_length: int) -> bytes | None:
        raw = self._raw
        size = len(raw)
        if not size:
            return None
        limit = min(size, max_length + 1)  # a terminator beyond this cannot end this piece
        start = self._scan
        lf = raw.find(b"\n", start, limit)
        cr = raw.find(b"\r", start, limit if lf == -1 else lf)
        if cr != -1:
            # \r first: \r\n, or a lone \r (which ends the line at once, even at the very end)
            line = bytes(raw[:cr])
            if cr + 1 < size:
                del raw[: cr + (2 if raw[cr + 1] == 10 else 1)]
            else:
                del raw[: cr + 1]
                self._skip_lf = not self.eof
            self._scan = 0
            return line or EMPTY_LINE
        if lf != -1:
            if lf < size - 1:
                return self._split_batch(lf, max_length)
            line = bytes(raw[:lf])
            del raw[: lf + 1]
            self._scan = 0
            return line or EMPTY_LINE
        if size > max_length:
            piece = bytes(raw[:max_length])
            del raw[:max_length]
            self._scan = 0
            return piece
        self._scan = size
        return None

    def _split_batch(self, first_lf: int, max_length: int) -> bytes | None:
        # Cut every complete line of the first `_batch` bytes (at least the first line) at once.
        if self._merged:  # lines and bytes alternate: keep batches small
            self._merged = False
            self._batch = _MIN_BATCH
        elif self._batch < _MAX_BATCH:  # the last batch was read as lines: cut bigger ones
            self._batch *= 2
        raw = self._raw
        window = max(first_lf + 1, min(len(raw), self._batch))
        last_lf = raw.rfind(b"\n", first_lf, window)
        with memoryview(raw) as view:
            chunk = bytes(view[:last_lf])
        del raw[: last_lf + 1]
        self._scan = 0
        lines = chunk.split(b"\n")
        lines.reverse()
        self._lines = lines
        self._cr = b"\r" in chunk
        return self.take_line(max_length)

    def _merge(self) -> None:
        # Put unread line entries back in front of _raw before a byte-oriented read.
        lines = self._lines
        if lines:
            lines.reverse()
            lines.append(b"")
            self._raw[:0] = b"\n".join(lines)
            self._lines = []
            self._merged = True
        self._scan = 0

    # -- bytes ------------------------------------------------------------------------------

    def take(self, size: int) -> bytes:
        """Consume and return up to ``size`` buffered bytes (fewer if fewer are buffered)."""
        if self._lines:
            self._merge()
        raw = self._raw
        if size >= len(raw):
            out = bytes(raw)
            raw.clear()
        else:
            with memoryview(raw) as view:
                out = bytes(view[:size])
            del raw[:size]
        self._scan = 0
        return out

    def take_into(self, target: memoryview) -> int:
        """Consume up to ``len(target)`` buffered bytes into ``target``; return how many."""
        if self._lines:
            self._merge()
        raw = self._raw
        n = min(len(target), len(raw))
        if n:
            target[:n] = raw[:n] if n < len(raw) else raw
            del raw[:n]
            self._scan = 0
        return n

    def discard(self, size: int) -> int:
        """Drop up to ``size`` buffered bytes; return how many were dropped."""
        if self._lines:
            self._merge()
        n = min(size, len(self._raw))
        del self._raw[:n]
        self._scan = 0
        return n

    def unread(self, data: bytes) -> None:
        """Put ``data`` back in front of the buffer (a result the caller could not take)."""
        if data:
            self._merge()
            self._raw[:0] = data

    def clear(self) -> None:
        """Drop everything (the socket was closed)."""
        self._lines = []
        self._raw = bytearray()
        self._scan = 0
        self._skip_lf = False
