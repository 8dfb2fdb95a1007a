"""``AsyncSocket.send_file``: a file (or part of it) to a stream socket.

Plain TCP and Unix sockets use the kernel's zero-copy ``os.sendfile`` in a non-blocking loop that
waits for the socket to be writable; TLS sockets, and files without a usable descriptor (a
``BytesIO``, a pipe), are read and sent in chunks. Either way the count of bytes the kernel took is
updated synchronously after every syscall, so whatever ends the call (its end, a timeout, a
cancellation, an error), a file object's position is then set just past the last byte sent: a
second call with ``offset=file.tell()`` continues exactly there.

On TLS a chunk counts as sent once it is encrypted: its records are then committed to the stream
(their sequence numbers are used), and what the kernel did not take yet is kept by the socket's
:class:`~duonet._core._tlschannel.TlsChannel` and sent first by whatever writes next.
"""

from __future__ import annotations

import errno
import io
import os
import socket
import ssl
import stat
from typing import IO, TYPE_CHECKING

from .._args import check_size, check_timeout
from .._errors import SslError

if TYPE_CHECKING:
    from ._state import SocketState

__all__ = ("send_file",)

_CHUNK = 1 << 16
#: The most one ``os.sendfile`` call is asked to send (Linux takes at most ~2 GiB anyway).
_SENDFILE_MAX = 1 << 30
#: errnos with which ``os.sendfile`` says "not for these descriptors": fall back to chunks.
_NO_SENDFILE = {
    getattr(errno, name)
    for name in ("EINVAL", "ENOSYS", "ENOTSUP", "EOPNOTSUPP", "ENOTSOCK")
    if hasattr(errno, name)
}


def _check_count(name: str, value: object) -> int:
    return check_size(value, name)


def _open(file: object) -> tuple[IO[bytes], bool]:
    """The file object to read, and whether this call opened it (and must close it)."""
    if isinstance(file, (str, bytes, os.PathLike)):
        return open(file, "rb"), True  # closed by send_file
    mode = getattr(file, "mode", "b")
    if isinstance(file, io.TextIOBase) or (isinstance(mode, str) and "b" not in mode):
        raise TypeError(
            f"send_file needs a file opened in binary mode or a path, not the text file {file!r}"
        )
    if not callable(getattr(file, "read", None)):
        raise TypeError(
            f"send_file needs a binary file object or a path, not {type(file).__name__}"
        )
    return file, False  # type: ignore[return-value]


#: File objects whose bytes are those of their descriptor. Others (``gzip.GzipFile`` ...) may
#: have a ``fileno()`` whose bytes are not what ``read()`` gives: they are read, not sendfile'd.
_PLAIN_FILES = (io.FileIO, io.BufferedReader, io.BufferedRandom)


def _fileno(file: IO[bytes]) -> int | None:
    """The descriptor of a plain regular file, or None (read and send in chunks then)."""
    if not isinstance(file, _PLAIN_FILES):
        return None
    try:
        fd = file.fileno()
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
        pass
    return None


async def send_file(
    sock: SocketState,
    file: object,
    offset: int = 0,
    count: int | None = None,
    timeout: float | None = None,
) -> int:
    """The core of ``SocketState.send_file`` (see its docstring)."""
    offset = _check_count("offset", offset)
    if count is not None:
        count = _check_count("count", count)
    check_timeout(timeout)
    fobj, opened = _open(file)
    try:
        if sock._type != socket.SOCK_STREAM:
            raise OSError(
                errno.EOPNOTSUPP,
                f"send_file needs a stream socket (TCP or Unix), not {sock._describe()}",
            )
        progress = [0]
        started = False
        sock._begin_write()
        try:
            sock._require_connected()
            if sock._eof_sent:
                sock._refuse_after_eof()
            started = True
            with sock._deadline(timeout, "send_file"):
                fd = _fileno(fobj)
                done = False
                if sock._tls is None and fd is not None and hasattr(os, "sendfile"):
                    done = await _zero_copy(sock, fd, offset, count, progress)
                if not done:
                    left = None if count is None else count - progress[0]
                    await _chunks(sock, fobj, offset + progress[0], left, progress)
        finally:
            sock._writing = False
            if started and not opened:
                try:
                    fobj.seek(offset + progress[0])
                except (OSError, ValueError, AttributeError):
                    pass  # not seekable: no position to leave
        return progress[0]
    finally:
        if opened:
            fobj.close()


def _send_error(sock: SocketState, exc: OSError) -> OSError:
    return sock._os_error(exc, "sending a file to")


async def _zero_copy(
    sock: SocketState, fd: int, offset: int, count: int | None, progress: list[int]
) -> bool:
    """``os.sendfile`` until ``count`` bytes (or EOF); False if the kernel refuses these
    descriptors before anything was sent (the caller sends in chunks then)."""
    if count is None:
        count = max(0, os.fstat(fd).st_size - offset)
    out = sock._sock.fileno()
    while progress[0] < count:
        try:
            sent = os.sendfile(
                out, fd, offset + progress[0], min(count - progress[0], _SENDFILE_MAX)
            )
        except (BlockingIOError, InterruptedError):
            await sock._waiter.writable()
            continue
        except OSError as exc:
            if not progress[0] and exc.errno in _NO_SENDFILE and not sock._closed:
                return False
            raise _send_error(sock, exc) from exc
        if sent == 0:
            break  # the file ended before count bytes
        progress[0] += sent
    return True


async def _chunks(
    sock: SocketState, fobj: IO[bytes], offset: int, count: int | None, progress: list[int]
) -> None:
    """Read and send chunk by chunk (TLS, or a file without a usable descriptor)."""
    try:
        fobj.seek(offset)
    except (OSError, ValueError, AttributeError) as exc:
        if offset:
            raise ValueError(
                f"offset={offset} needs a seekable file, and {fobj!r} is not ({exc})"
            ) from exc
    while count is None or count > 0:
        chunk = fobj.read(_CHUNK if count is None else min(_CHUNK, count))
        if not chunk:
            return
        if count is not None:
            count -= len(chunk)
        if sock._tls is not None:
            await _send_tls_chunk(sock, bytes(chunk), progress)
        else:
            await _send_plain_chunk(sock, memoryview(chunk), progress)


async def _send_plain_chunk(sock: SocketState, view: memoryview, progress: list[int]) -> None:
    raw = sock._sock
    while view:
        try:
            sent = raw.send(view)
        except (BlockingIOError, InterruptedError):
            await sock._waiter.writable()
            continue
        except OSError as exc:
            raise _send_error(sock, exc) from exc
        progress[0] += sent
        view = view[sent:]


async def _send_tls_chunk(sock: SocketState, data: bytes, progress: list[int]) -> None:
    tls = sock._tls
    assert tls is not None
    if sock._peer_gone:
        raise BrokenPipeError(
            errno.EPIPE,
            f"TLS stream to {sock._describe()} is broken (an earlier send failed or was "
            "interrupted): close it",
        )
    try:
        encrypted = tls.encrypt(data)
    except ssl.SSLError as exc:
        raise SslError(f"TLS error sending a file to {sock._describe()}: {exc}") from exc
    if not encrypted:
        # The session wants to read first (a renegotiation): the channel's send does that.
        try:
            await tls.send(data)
        except (ssl.SSLError, OSError) as exc:
            raise _tls_error(sock, exc) from exc
        progress[0] += len(data)
        return
    progress[0] += len(data)  # encrypted: committed to the stream (see the module docstring)
    try:
        await tls.flush()
    except OSError as exc:
        raise _send_error(sock, exc) from exc


def _tls_error(sock: SocketState, exc: BaseException) -> BaseException:
    if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError):
        return _send_error(sock, exc)
    return SslError(f"TLS error sending a file to {sock._describe()}: {exc}")
