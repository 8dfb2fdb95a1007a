"""The receive buffer of a socket, and line splitting: pure, sans-I/O, byte-exact.

Theory of operation
-------------------
The core reads from the kernel in large chunks and :meth:`ReadBuffer.feed` s them here; every read
call of a socket (``recv``, ``recv_line``, ``skip`` ...) is answered from this buffer. The buffer is
the only place where received bytes live between calls, which is what makes reads cancel-safe: the
core appends as soon as a chunk arrives and consumes only when it returns.

Logically the buffer is one byte string. Physically it is in one of two modes:

**Head mode** (``_head`` not empty): everything buffered is ``_head[_hpos:]``, an immutable
``bytes`` (usually the very chunk the kernel gave) and a read position. This is the protocol
fast path: a ``\\r\\n`` line, an exact-size body, or a ``\\n`` line that ends the data (a reply)
is one ``bytes`` slice (one allocation, one copy) and a new position; nothing is moved. The
buffer enters this mode when a chunk arrives while it is empty, and keeps it while at most
``_HEAD_KEEP`` bytes are left over when the next chunk arrives (they are copied in front of it).
If more are left, and with the chunk they make ``_TAIL_FROM`` bytes or more (a large read under
way: a 1 MiB value after its header line), they become the first entry of ``_tail`` (a view of
the head: no copy) and the chunk the second; otherwise they move into ``_raw``. Any read the
head does not answer simply moves its bytes into ``_raw`` first (:meth:`_unhead`), and goes on
in the general mode.

**General mode**: three parts, in order:

* ``_lines``: lines already split out of earlier data, **last first** (so handing one out is a
  ``list.pop()``), each stored *without* the ``\\n`` that followed it (so every stored entry is
  followed by a ``\\n``); an entry may still contain ``\\r`` bytes, handled when handed out.
  While a batch holds no ``\\r`` (``_ready``), :meth:`take_line` pops its next entry in its first
  three lines: the hot path of ``\\n`` lines, and the blocking face's "answer from the buffer"
  step (``duonet._core._fastpath.line_from_buffer``).
* ``_raw``: a bytearray of everything after that, except:
* ``_tail``: chunks fed while ``_raw`` already held ``_TAIL_FROM`` bytes or more, or while the
  tail was not empty, or that left head mode as above (in order; no chunk is empty). A large
  exact read (a 1 MiB value) thus costs one copy, the ``join`` of its chunks, instead of a
  bytearray grown chunk by chunk (each growth a reallocation with fresh pages) and then copied
  out again. Line reads fold the tail into ``_raw`` first (:meth:`_gather`); byte reads take
  from it directly.

Memory: the buffer holds what is buffered and nothing more between reads. ``_raw`` is not kept
for reuse: CPython gives a ``bytearray``'s memory back whenever it shrinks below half (so a kept
one could not stay allocated anyway), and large values do not pass through it (above), so
repeated 1 MiB reads do not regrow it; what each such read allocates is its result.

Line reading is the hot path (a blocking ``recv_line`` should come close to the C speed of
``socket.makefile().readline()``), so lines are not found one ``find`` at a time: when a line is
asked for and ``_raw`` holds a ``\\n``, a whole batch of lines is cut out with one ``bytes.split``,
and later calls just pop entries. A byte-oriented read joins the unread entries back into
``_raw`` first (:meth:`_merge`); to bound that waste on protocols that alternate lines and bytes
(HTTP, RESP), the batch starts small and doubles only while lines are consumed uninterrupted.

Protocols mix lines and bytes (a header line, then an exact-size body: RESP, HTTP, SMTP's
DATA): :meth:`take_line` cuts a ``\\r\\n`` line from the head (or the front of ``_raw``) itself,
and :meth:`take_exact` answers an exact read in the same frame, so a header plus its body costs
the socket two calls into the buffer (it was six, helpers included) and two ``bytes`` slices.

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

_NO_LINES: list[bytes] = []  # `_ready` when no line is ready: always empty, never appended to
_MIN_BATCH = 4096
_MAX_BATCH = 1 << 18
#: Once ``_raw`` holds this many bytes, later chunks queue in ``_tail`` instead of being appended.
_TAIL_FROM = 1 << 16
#: Up to this size a slice is copied out with ``bytes(raw[:n])``; beyond, through a memoryview
#: (one copy instead of two, for the price of the view).
_VIEW_FROM = 1 << 12
#: A head keeps its mode across a feed while at most this many of its bytes are unread (they
#: are copied in front of the new chunk); beyond, the bytes move to ``_raw``, which grows in
#: place, so that a long line trickling in costs O(bytes), not O(bytes²).
_HEAD_KEEP = 1 << 12


class ReadBuffer:
    """Bytes received from a peer and not yet handed to the user.

    Not thread-safe: exactly one call at a time may use it (the socket enforces that).
    """

    __slots__ = (
        "_batch",
        "_cr",
        "_head",
        "_hpos",
        "_lf_hint",
        "_lines",
        "_merged",
        "_raw",
        "_ready",
        "_ready_max",
        "_scan",
        "_skip_lf",
        "_tail",
        "_tail_len",
        "eof",
        "last_term",
    )

    def __init__(self) -> None:
        self._lines: list[bytes] = []  # split lines, last first
        # The hot path of take_line: _lines while its entries need no further processing (a
        # batch with no \r in it; an empty entry is an empty line), else an always-empty list.
        # While it is not empty, last_term is b"\n" and no entry is longer than _ready_max.
        self._ready: list[bytes] = _NO_LINES
        self._ready_max = 0
        #: The terminator consumed with the last line ``take_line`` returned (``b""`` for a
        #: ``max_length`` piece), so that the exact bytes can be put back (:meth:`unread_line`).
        self.last_term = b""
        self._lf_hint = 0  # _raw[:_lf_hint] holds no \n
        self._merged = False  # were split lines merged back since the last split?
        self._cr = False  # does some entry of _lines contain b"\r"?
        self._head = b""  # head mode while not empty (see the module docstring)
        self._hpos = 0
        self._raw = bytearray()
        self._tail: list[bytes | memoryview] = []  # chunks after _raw (see the module docstring)
        self._tail_len = 0
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
                if not data:
                    return
        head = self._head
        if head:
            rest = len(head) - self._hpos
            if not rest:
                self._head = data if type(data) is bytes else bytes(data)
                self._hpos = 0
                return
            if rest <= _HEAD_KEEP:
                self._head = head[self._hpos :] + data
                self._hpos = 0
                return
            if rest + len(data) >= _TAIL_FROM:
                # A large read under way (a 1 MiB value after its header line, say): the head's
                # rest (a view: no copy) and the chunk start the tail; _raw stays empty. Moved
                # into _raw, they would regrow a bytearray for every such read, onto fresh pages.
                chunk = data if type(data) is bytes else bytes(data)
                self._tail = [memoryview(head)[self._hpos :], chunk]
                self._tail_len = rest + len(chunk)
                self._head = b""
                self._hpos = 0
                self._scan = self._lf_hint = 0
                return
            self._unhead()
        raw = self._raw
        if not raw and not self._lines and not self._tail:  # empty: the chunk becomes the head
            self._head = data if type(data) is bytes else bytes(data)
            self._hpos = 0
            self._scan = self._lf_hint = 0
        elif self._tail or len(raw) >= _TAIL_FROM:
            chunk = data if type(data) is bytes else bytes(data)
            self._tail.append(chunk)
            self._tail_len += len(chunk)
        else:
            raw += data

    def _unhead(self) -> None:
        # Leave head mode: the head's unread bytes become _raw (empty until now).
        head = self._head
        if head:
            with memoryview(head) as view:
                self._raw += view[self._hpos :]
            self._head = b""
            self._hpos = 0
            self._scan = self._lf_hint = 0

    def _gather(self) -> None:
        # Fold the tail into _raw (before a line search, which needs contiguous bytes).
        raw = self._raw
        for chunk in self._tail:
            raw += chunk
        self._tail = []
        self._tail_len = 0

    def feed_eof(self) -> None:
        """Record that the peer closed: nothing more will arrive."""
        self.eof = True
        self._skip_lf = False

    # -- inspecting -------------------------------------------------------------------------

    def __len__(self) -> int:
        """The number of buffered bytes."""
        if self._head:
            return len(self._head) - self._hpos
        lines = self._lines
        if lines:
            return sum(map(len, lines)) + len(lines) + len(self._raw) + self._tail_len
        return len(self._raw) + self._tail_len

    @property
    def direct_ok(self) -> bool:
        """True if the next bytes may bypass the buffer (empty, and no ``\\n`` to skip)."""
        return (
            len(self._head) <= self._hpos
            and not self._raw
            and not self._lines
            and not self._tail
            and not self._skip_lf
            and not self.eof
        )

    def __bool__(self) -> bool:
        if self._head:
            return len(self._head) > self._hpos
        return bool(self._lines) or bool(self._raw) or bool(self._tail)

    def peek(self) -> bytes:
        """A copy of every buffered byte, without consuming (for tests and diagnostics)."""
        self._unhead()
        self._merge()
        self._gather()
        return bytes(self._raw)

    # -- lines ------------------------------------------------------------------------------

    def take_line(self, max_length: int) -> bytes | None:
        """Consume and return the next line (or a ``max_length`` piece of it), if buffered.

        Returns ``None`` when no complete line (and no full ``max_length`` piece) is buffered yet;
        nothing is consumed then. An empty line is ``b"\\r\\n"``. ``max_length`` must be >= 1.
        """
        ready = self._ready
        if ready and self._ready_max <= max_length:  # the hot path (last_term is b"\n")
            return ready.pop() or EMPTY_LINE
        lines = self._lines
        if lines:  # (then the buffer is not in head mode)
            if self._cr:
                return self._take_stored_cr_line(max_length)
            line = lines.pop()  # a batch with no \r in it
            if len(line) > max_length:
                lines.append(line[max_length:])
                self._ready = _NO_LINES  # the hot path would leave last_term wrong
                self.last_term = b""
                return line[:max_length]
            self.last_term = b"\n"
            return line or EMPTY_LINE
        head = self._head
        if head:
            # The protocol fast path: a \r\n line, sliced out of the head.
            pos = self._hpos
            limit = pos + max_length + 1
            lf = head.find(b"\n", pos, limit)
            if lf > pos:
                end = head.find(b"\r", pos, lf)
                if end == lf - 1:  # the first \r is the one right before the \n
                    self._hpos = lf + 1
                    self.last_term = b"\r\n"
                    return head[pos:end] if end > pos else EMPTY_LINE
                if end == -1 and lf + 1 == len(head):  # a \n line that ends the data (a
                    self._hpos = lf + 1  # reply, say): no batch of lines to cut
                    self.last_term = b"\n"
                    return head[pos:lf]
            elif lf == -1:
                size = len(head)
                if pos == size:
                    return None  # all of it taken: nothing is buffered (the miss before a wait)
                if size < limit and head.find(b"\r", pos) == -1:
                    return None  # no terminator yet, and not a max_length piece: wait for more
            self._unhead()  # anything else takes the general path
        raw = self._raw
        if not raw and not self._tail:
            return None  # nothing is buffered
        if not self._scan and not self._lf_hint:
            # The protocol fast path: a \r\n line at the front of _raw, cut here. (A line that
            # needs more care, or an unfinished one, goes on to _take_raw_line.)
            lf = raw.find(b"\n", 0, max_length + 1)
            if lf > 0:
                end = raw.find(b"\r", 0, lf)
                if end == lf - 1:  # the first \r is the one right before the \n
                    line = bytes(raw[:end]) if end else EMPTY_LINE
                    del raw[: lf + 1]
                    self.last_term = b"\r\n"
                    return line
            elif lf == -1 and not self._tail:
                self._lf_hint = min(len(raw), max_length + 1)  # searched: no \n there
        return self._take_raw_line(max_length)

    def take_rest_line(self, max_length: int) -> bytes:
        """At EOF: the unterminated last line (or its next ``max_length`` piece), or ``b""``."""
        self._unhead()
        line = self.take_line(max_length)
        if line is not None:
            return line
        self._gather()
        piece = bytes(self._raw[:max_length])
        self._drop(len(piece))
        self.last_term = b""
        return piece

    def unread_line(self, line: bytes) -> None:
        """Put back the line :meth:`take_line` just returned, with the terminator it consumed."""
        self.unread((b"" if line == EMPTY_LINE else line) + self.last_term)

    def _drop(self, size: int) -> None:
        # Consume `size` bytes from the front of _raw, keeping the search marks valid.
        del self._raw[:size]
        self._scan = 0
        if self._lf_hint:
            self._lf_hint = max(0, self._lf_hint - size)

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
            self.last_term = b""
            return line[:max_length]
        if rest is not None:
            lines.append(rest)
            self.last_term = b"\r"
        else:
            self.last_term = line[end:] + b"\n"
        return line[:end] or EMPTY_LINE

    def _take_raw_line(self, max_length: int) -> bytes | None:
        if self._tail:
            self._gather()
        raw = self._raw
        size = len(raw)
        if not size:
            return None
        limit = min(size, max_length + 1)  # a terminator beyond this cannot end this piece
        start = self._scan
        # The \n search starts where the last one stopped: a stream of lone-\r lines does not
        # rescan the same megabyte for a \n on every line.
        lf = raw.find(b"\n", max(start, self._lf_hint), limit)
        self._lf_hint = limit if lf == -1 else lf
        cr = raw.find(b"\r", start, limit if lf == -1 else lf)
        if cr != -1:
            # \r first: \r\n, or a lone \r (which ends the line at once, even at the very end)
            line = bytes(raw[:cr])
            if cr + 1 < size:
                crlf = raw[cr + 1] == 10
                self.last_term = b"\r\n" if crlf else b"\r"
                self._drop(cr + (2 if crlf else 1))
            else:
                self.last_term = b"\r"
                self._drop(cr + 1)
                self._skip_lf = not self.eof
            return line or EMPTY_LINE
        if lf != -1:
            if lf < size - 1:
                return self._split_batch(lf, max_length)
            line = bytes(raw[:lf])
            self._drop(lf + 1)
            self.last_term = b"\n"
            return line or EMPTY_LINE
        if size > max_length:
            piece = bytes(raw[:max_length])
            self._drop(max_length)
            self.last_term = b""
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
        self._drop(last_lf + 1)
        lines = chunk.split(b"\n")
        lines.reverse()
        self._lines = lines
        self._cr = cr = b"\r" in chunk
        self._ready = _NO_LINES if cr else lines
        self._ready_max = last_lf
        self.last_term = b"\n"  # (what the hot path of take_line leaves; _cr lines set theirs)
        return self.take_line(max_length)

    def _merge(self) -> None:
        # Put unread line entries back in front of _raw before a byte-oriented read.
        lines = self._lines
        if lines:
            lines.reverse()
            lines.append(b"")
            self._raw[:0] = b"\n".join(lines)
            self._lines = []
            self._ready = _NO_LINES
            self._merged = True
        self._scan = 0
        self._lf_hint = 0

    # -- bytes ------------------------------------------------------------------------------

    def take(self, size: int) -> bytes:
        """Consume and return up to ``size`` buffered bytes (fewer if fewer are buffered)."""
        head = self._head
        if head:
            pos = self._hpos
            end = min(pos + size, len(head))
            self._hpos = end
            return head[pos:end]
        if self._lines:
            self._merge()
        raw = self._raw
        if size < len(raw):
            if size < _VIEW_FROM:
                out = bytes(raw[:size])
            else:
                with memoryview(raw) as view:
                    out = bytes(view[:size])
            del raw[:size]
            self._scan = 0
            if self._lf_hint:
                self._lf_hint = max(0, self._lf_hint - size)
            return out
        self._scan = self._lf_hint = 0
        if not self._tail:
            out = bytes(raw)
            raw.clear()
            return out
        self._raw = bytearray()
        return b"".join([raw, *self._take_tail(size - len(raw))])  # the one copy

    def take_exact(self, size: int) -> bytes | None:
        """Consume and return exactly ``size`` bytes if buffered; else ``None``.

        The exact read of a protocol body in one call: nothing is consumed when fewer than
        ``size`` bytes are buffered, or when ``size`` is below 1 (not a read of the buffer).
        """
        if size < 1:
            return None
        head = self._head
        if head:  # everything is in the head
            pos = self._hpos
            end = pos + size
            if end > len(head):
                return None
            self._hpos = end
            return head[pos:end]
        raw = self._raw
        if size < len(raw) and size < _VIEW_FROM and not self._lines:
            out = bytes(raw[:size])  # the common case (a body within _raw), inlined
            del raw[:size]
            self._scan = 0
            if self._lf_hint:
                self._lf_hint = max(0, self._lf_hint - size)
            return out
        if len(self) < size:
            return None
        return self.take(size)

    def _take_tail(self, size: int) -> list[bytes | memoryview]:
        # Consume `size` bytes from the tail's front (_raw is empty): the whole chunks and a
        # view of a split one, whose rest becomes _raw; the next chunk moves into an empty _raw.
        tail = self._tail
        parts: list[bytes | memoryview] = []
        used = 0
        for chunk in tail:
            if size <= 0:
                break
            used += 1
            if len(chunk) <= size:
                parts.append(chunk)
                size -= len(chunk)
            else:
                with memoryview(chunk) as view:
                    parts.append(view[:size])
                    self._raw += view[size:]
                size = 0
        del tail[:used]
        if not self._raw and tail:
            self._raw += tail.pop(0)
        self._tail_len = sum(map(len, tail))
        return parts

    def take_into(self, target: memoryview) -> int:
        """Consume up to ``len(target)`` buffered bytes into ``target``; return how many."""
        head = self._head
        if head:
            pos = self._hpos
            n = min(len(target), len(head) - pos)
            if n:
                with memoryview(head) as view:
                    target[:n] = view[pos : pos + n]
                self._hpos = pos + n
            return n
        if self._lines:
            self._merge()
        raw = self._raw
        size = len(target)
        n = len(raw)
        if size < n:
            with memoryview(raw) as view:
                target[:size] = view[:size]
            self._drop(size)
            return size
        if n:
            target[:n] = raw
            raw.clear()
        self._scan = self._lf_hint = 0
        if self._tail and n < size:
            for part in self._take_tail(size - n):
                target[n : n + len(part)] = part
                n += len(part)
        return n

    def discard(self, size: int) -> int:
        """Drop up to ``size`` buffered bytes; return how many were dropped."""
        head = self._head
        if head:
            pos = self._hpos
            n = min(size, len(head) - pos)
            self._hpos = pos + n
            return n
        if self._lines:
            self._merge()
        raw = self._raw
        n = len(raw)
        if size < n:
            self._drop(size)
            return size
        raw.clear()
        self._scan = self._lf_hint = 0
        if self._tail and n < size:
            n += sum(map(len, self._take_tail(size - n)))
        return n

    def unread(self, data: bytes) -> None:
        """Put ``data`` back in front of the buffer (a result the caller could not take)."""
        if data:
            self._unhead()
            self._merge()
            self._raw[:0] = data
            # A pending \n-skip belonged to a lone \r that is now back in the buffer (it only
            # exists while the buffer is empty): the \r will be parsed again.
            self._skip_lf = False

    def clear(self) -> None:
        """Drop everything (the socket was closed)."""
        self._lines = []
        self._ready = _NO_LINES
        self._head = b""
        self._hpos = 0
        self._raw = bytearray()
        self._tail = []
        self._tail_len = 0
        self._scan = self._lf_hint = 0
        self._skip_lf = False
