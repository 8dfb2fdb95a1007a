"""A tiny, obviously-correct reference model of duonet's receive stream (SPEC ``recv_line`` rules).

It mirrors :class:`duonet._buffer.ReadBuffer`'s interface on a plain ``bytearray``, byte by byte,
with no cleverness: tests compare every result of the real buffer (or of a real socket) with it.

Rules (SPEC ``recv_line`` / "Pinned details"):

* ``\\r\\n``, ``\\n`` and a lone ``\\r`` end a line. A lone ``\\r`` ends it at once, even as the
  last byte available so far; a ``\\n`` arriving right after it, even in a later feed, belongs to
  that terminator and is skipped by whatever read comes next (here: dropped as it is fed).
* An empty line reads as ``b"\\r\\n"``.
* A line longer than ``max_length`` comes out in pieces of exactly ``max_length`` bytes.
* ``take_line`` returns ``None`` (consuming nothing) when no full line or piece is buffered.
* At EOF, ``take_rest_line`` returns the unterminated rest in ``max_length`` pieces, then ``b""``.
"""

from __future__ import annotations

CR = 13
LF = 10
EMPTY_LINE = b"\r\n"
MAX_LINE_LENGTH = 1_000_000


class LineModel:
    """The bytes received and not yet consumed, plus the pending-``\\n`` flag and EOF."""

    def __init__(self, data: bytes = b"", eof: bool = False) -> None:
        self.buf = bytearray()
        self.skip_lf = False  # a lone \r ended the last line as the last byte available
        self.eof = False
        #: the raw bytes (terminator included) the last take_line consumed
        self.last_consumed = b""
        self.feed(data)
        if eof:
            self.feed_eof()

    # -- filling --

    def feed(self, data: bytes) -> None:
        for byte in data:
            if self.skip_lf:
                self.skip_lf = False
                if byte == LF:
                    continue  # the \n of a \r\n whose \r already ended a line
            self.buf.append(byte)

    def feed_eof(self) -> None:
        self.eof = True
        self.skip_lf = False

    # -- inspecting --

    def __len__(self) -> int:
        return len(self.buf)

    def __bool__(self) -> bool:
        return bool(self.buf)

    def peek(self) -> bytes:
        return bytes(self.buf)

    # -- lines --

    def take_line(self, max_length: int) -> bytes | None:
        buf = self.buf
        for i, byte in enumerate(buf):
            if byte == LF:
                used = i + 1
            elif byte == CR:
                if i + 1 < len(buf):
                    used = i + 2 if buf[i + 1] == LF else i + 1
                else:  # the last byte so far: ends the line now, its \n may follow later
                    used = i + 1
                    self.skip_lf = not self.eof
            elif i == max_length:  # max_length + 1 bytes and no terminator: a full piece
                piece = bytes(buf[:max_length])
                self.last_consumed = piece
                del buf[:max_length]
                return piece
            else:
                continue
            line = bytes(buf[:i])
            self.last_consumed = bytes(buf[:used])
            del buf[:used]
            return line or EMPTY_LINE
        return None

    def take_rest_line(self, max_length: int) -> bytes:
        line = self.take_line(max_length)
        if line is not None:
            return line
        piece = bytes(self.buf[:max_length])
        self.last_consumed = piece
        del self.buf[:max_length]
        return piece

    # -- bytes --

    def take(self, size: int) -> bytes:
        out = bytes(self.buf[:size])
        del self.buf[:size]
        return out

    def take_exact(self, size: int) -> bytes | None:
        """Exactly ``size`` bytes if that many are buffered, else ``None`` (nothing consumed)."""
        return self.take(size) if len(self.buf) >= size else None

    def take_into(self, target: memoryview) -> int:
        n = min(len(target), len(self.buf))
        target[:n] = self.buf[:n]
        del self.buf[:n]
        return n

    def discard(self, size: int) -> int:
        n = min(size, len(self.buf))
        del self.buf[:n]
        return n

    def unread(self, data: bytes) -> None:
        """Give back what the last ``take_line`` consumed: the state before it (a lone ``\\r``
        that ended the line is back in the buffer, so no ``\\n`` is pending any more)."""
        if data:
            self.buf[:0] = data
            self.skip_lf = False

    # -- what a socket fed the whole stream (then EOF) must answer --

    def read_line_nowait(self) -> tuple[str, bytes]:
        """``read_line_nowait`` once everything has arrived: kind name and bytes."""
        line = self.take_line(MAX_LINE_LENGTH)
        if line is not None:
            return "FULL_LINE", line
        if self.eof:
            rest = self.take_rest_line(MAX_LINE_LENGTH)
            if rest:
                return "PARTIAL_LINE", rest
            return "DISCONNECTED", b""
        return "NONE", b""


def split_lines(data: bytes, max_length: int = MAX_LINE_LENGTH) -> list[bytes]:
    """Every line of a complete stream (then EOF), as ``recv_line`` must return them."""
    model = LineModel(data, eof=True)
    lines = []
    while line := model.take_rest_line(max_length):
        lines.append(line)
    return lines
