"""Servers in the core: ``duonet.aio.serve`` / ``serve_unix``, and what both faces share.

Theory of operation
-------------------
A server is a listening :class:`~duonet.aio.AsyncSocket` and an accept loop that hands each
client to the user's handler, with four rules the two faces (this module for ``duonet.aio``,
``duonet._server`` for the blocking face) keep alike:

* **Back-pressure before accepting.** A slot (``max_clients`` of them) is taken *before*
  ``accept``: while every slot is busy nothing is accepted, so further clients wait in the
  kernel's backlog instead of piling up in the server.
* **TLS per client.** The listener is plain; each client's TLS handshake runs in that client's
  own task (thread, on the blocking face) under ``handshake_timeout``. A client that stalls or
  fails its handshake delays no one, and the accept loop never waits for a handshake.
* **Failures are logged, the server goes on.** A handler's exception and a failed handshake are
  logged on the ``logging.getLogger("duonet")`` logger with the peer's address (also given as
  the record's ``peer`` attribute). An accept that fails for lack of resources (``EMFILE``, ...)
  is logged and retried after a short pause, as trio's ``serve_listeners`` does.
* **The server owns its clients.** A client socket is closed when its handler returns or raises;
  shutting the server down closes every client still open.

Arguments are checked at the call, before anything is bound (``check_*`` below).
"""

from __future__ import annotations

import errno
import logging
import math
import operator
import os
import socket
import stat
import sys
from collections.abc import Awaitable, Callable

import anyio
import anyio.abc
import anyio.lowlevel

from .._args import check_address, check_port
from .._args import check_timeout as _check_timeout
from .._enums import IpAddressFamily, SOBool
from .._errors import SocketClosedError, SslError
from .._ip import IpAddress, parse_ip_address
from .._sslcontext import SslContext, SslHandshakeType
from ._resolve import endpoint
from ._socket import AsyncSocket
from ._tls import wrap_connected_socket

__all__ = (
    "AsyncHandler",
    "Server",
    "UnixFile",
    "check_options",
    "check_tcp_args",
    "logger",
    "open_tcp_listener",
    "open_unix_listener",
    "peer_name",
    "serve",
    "serve_unix",
)

#: Where servers report failed handlers, failed handshakes and failed accepts.
logger = logging.getLogger("duonet")

#: accept() errors that mean "out of resources right now": log, pause, try again.
RETRY_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("EMFILE", "ENFILE", "ENOMEM", "ENOBUFS")
    if hasattr(errno, name)
)
#: Seconds to wait before accepting again after such an error.
RETRY_DELAY = 0.1
#: An async server lets other tasks run after this many clients accepted without a wait.
_BURST = 32

AsyncHandler = Callable[[AsyncSocket], Awaitable[object]]


# -- argument checks (the same for both faces) ----------------------------------------------------


def check_tcp_args(port: object, address: object) -> None:
    """Check ``serve``'s ``port`` and ``address``: ``TypeError`` / ``ValueError`` naming them."""
    check_port(port)
    check_address(address)


def check_options(
    handler: object,
    ssl_context: object,
    max_clients: object,
    handshake_timeout: object,
    backlog: object,
) -> tuple[int, float | None, int]:
    """Check the options every ``serve`` takes; return ``max_clients``, the handshake timeout
    (``None``: no limit) and ``backlog`` as the server uses them."""
    if not callable(handler):
        raise TypeError(f"handler must be callable, not {type(handler).__name__}")
    if ssl_context is not None and not isinstance(ssl_context, SslContext):
        raise TypeError(
            "ssl_context must be an SslContext (see new_context) or None, "
            f"not {type(ssl_context).__name__}"
        )
    if isinstance(max_clients, bool) or not hasattr(max_clients, "__index__"):
        raise TypeError(f"max_clients must be an int >= 1, not {type(max_clients).__name__}")
    clients = operator.index(max_clients)
    if clients < 1:
        raise ValueError(f"max_clients must be an int >= 1, not {clients}")
    limit = check_timeout(handshake_timeout, "handshake_timeout")
    if isinstance(backlog, bool) or not hasattr(backlog, "__index__"):
        raise TypeError(f"backlog must be an int, not {type(backlog).__name__}")
    return clients, limit, operator.index(backlog)


def check_timeout(value: object, name: str) -> float | None:
    """A timeout read as everywhere in duonet: ``None``, negative or ``inf`` is no limit
    (``None``), ``0`` is no wait; NaN and non-numbers are refused."""
    _check_timeout(value, name)
    if value is None or value < 0 or math.isinf(value):  # type: ignore[operator, arg-type]
        return None
    return float(value)  # type: ignore[arg-type]


# -- listeners ----------------------------------------------------------------------------------


def _family_of(address: str | IpAddress, port: int) -> int:
    if isinstance(address, IpAddress):
        return socket.AF_INET6 if address.family is IpAddressFamily.IPV6 else socket.AF_INET
    if not address:
        return socket.AF_INET  # "" listens on every IPv4 address
    try:
        ip = parse_ip_address(address)
    except ValueError:  # a host name: listen on its first address
        try:
            infos = socket.getaddrinfo(
                address, port, socket.AF_UNSPEC, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
            )
        except socket.gaierror as exc:
            raise socket.gaierror(exc.errno, f"{exc.strerror} (resolving {address!r})") from exc
        return int(infos[0][0])
    return socket.AF_INET6 if ip.family is IpAddressFamily.IPV6 else socket.AF_INET


def open_tcp_listener(port: int, address: str | IpAddress, backlog: int) -> AsyncSocket:
    """Bind (with ``REUSE_ADDR``) and listen; the family follows ``address``."""
    listener = AsyncSocket(_family_of(address, port))
    try:
        listener.set_sock_opt(SOBool.REUSE_ADDR, True)
        listener.bind_addr(port, address)
        listener.listen(backlog)
    except BaseException:
        listener._close_now()
        raise
    return listener


class UnixFile:
    """The socket file of a Unix server: removed on close if it is still the one we bound."""

    def __init__(self, path: str | bytes) -> None:
        self.path = path
        self._inode: tuple[int, int] | None = None
        if _is_abstract(path):
            return
        try:
            info = os.stat(path)
        except OSError:
            return
        self._inode = (info.st_dev, info.st_ino)

    def remove(self) -> None:
        """Remove the file (idempotent; never removes a file another server put there since)."""
        inode, self._inode = self._inode, None
        if inode is None:
            return
        try:
            info = os.stat(self.path)
            if (info.st_dev, info.st_ino) == inode:
                os.unlink(self.path)
        except OSError:
            pass


def _is_abstract(path: str | bytes) -> bool:
    return path[:1] in ("\0", b"\0")  # Linux's abstract namespace: no file


def open_unix_listener(path: object, backlog: int) -> tuple[AsyncSocket, UnixFile, str]:
    """Bind a Unix socket at ``path`` and listen; a stale socket file there is replaced.

    Returns the listener, its file (to remove on close) and the path as text.
    """
    if not hasattr(socket, "AF_UNIX"):
        raise OSError(errno.EAFNOSUPPORT, "Unix sockets are not available on this platform")
    if not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"path must be a str, bytes or os.PathLike, not {type(path).__name__}")
    where: str | bytes = os.fspath(path)
    if not where:
        raise ValueError("path must not be empty")
    if not _is_abstract(where):
        try:  # a socket file left by a server that died: replace it (asyncio does the same)
            if stat.S_ISSOCK(os.stat(where).st_mode):
                os.unlink(where)
        except OSError:
            pass
    listener = AsyncSocket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind_unix(where)
        file = UnixFile(where)
        try:
            listener.listen(backlog)
        except BaseException:
            file.remove()
            raise
    except BaseException:
        listener._close_now()
        raise
    text = where.decode(errors="replace") if isinstance(where, bytes) else where
    return listener, file, text


def local_address(listener: AsyncSocket) -> tuple[str, int]:
    """What a server reports as ``.address`` and ``.port``."""
    host, port = listener.get_local_addr()
    return host, port


def peer_name(client: AsyncSocket, address: str, where: str) -> str:
    """The client as logs name it: ``host:port``, or for Unix its path (or "a client of P")."""
    if client._family == getattr(socket, "AF_UNIX", None):
        return address or f"unnamed client of {where}"
    return client._describe()


def handler_failed(peer: str, closing: bool) -> None:
    """Log the exception being handled: a handler for ``peer`` raised it."""
    if closing and isinstance(sys.exc_info()[1], SocketClosedError):
        logger.debug("server closed the client %s under its handler", peer, extra={"peer": peer})
        return
    logger.exception("handler for client %s failed", peer, extra={"peer": peer})


def handshake_failed(peer: str, exc: BaseException, limit: float | None, closing: bool) -> None:
    """Log a failed (or timed out) TLS handshake with ``peer``: the client is dropped."""
    if closing:
        logger.debug(
            "TLS handshake with %s ended by the server's close", peer, extra={"peer": peer}
        )
    elif isinstance(exc, TimeoutError) and limit is not None:
        logger.warning(
            "TLS handshake with %s took longer than handshake_timeout=%g s: client dropped",
            peer,
            limit,
            extra={"peer": peer},
        )
    elif peer in str(exc):  # an SslError already says "TLS handshake with <peer> failed: ..."
        logger.warning("%s: client dropped", exc, extra={"peer": peer})
    else:
        logger.warning(
            "TLS handshake with %s failed: %s: client dropped", peer, exc, extra={"peer": peer}
        )


def accept_failed(where: str, exc: OSError) -> bool:
    """Log a failed accept on ``where``; True if it is worth retrying after a pause."""
    if exc.errno in RETRY_ERRNOS:
        logger.warning(
            "server on %s could not accept a client (%s): retrying in %g s",
            where,
            exc,
            RETRY_DELAY,
        )
        return True
    logger.error("server on %s stops accepting: %s", where, exc, exc_info=exc)
    return False


# -- the async server ---------------------------------------------------------------------------


class BoundAddress:
    """What both faces' servers say about where they listen (``.port`` and ``.address``)."""

    __slots__ = ()

    _address: str
    _port: int

    @property
    def port(self) -> int:
        """The bound port (also when ``port=0`` was asked); ``0`` for a Unix socket."""
        return self._port

    @property
    def address(self) -> str:
        """The bound address as text (``"0.0.0.0"`` for ``address=""``); the path for Unix."""
        return self._address


class Server(BoundAddress):
    """A running :func:`serve` or :func:`serve_unix`, as ``task_group.start(...)`` gives it.

    Cancel the task (or the task group) that runs ``serve`` to stop it: the listener is
    closed, running handlers are cancelled and their clients closed.
    """

    __slots__ = ("_address", "_clients", "_port", "_tls")

    _tls: bool
    _clients: int

    def __init__(self) -> None:
        raise TypeError("Server objects are made by duonet.aio.serve() and duonet.aio.serve_unix()")

    @classmethod
    def _make(cls, address: str, port: int, tls: bool) -> Server:
        self = cls.__new__(cls)
        self._address = address
        self._port = port
        self._tls = tls
        self._clients = 0
        return self

    @property
    def clients(self) -> int:
        """How many clients are being served right now."""
        return self._clients

    def __repr__(self) -> str:
        where = endpoint(self._address, self._port) if self._port else self._address
        tls = " tls" if self._tls else ""
        return f"<Server {where}{tls}, {self._clients} clients>"


async def serve(
    handler: AsyncHandler,
    port: int,
    address: str | IpAddress = "",
    *,
    ssl_context: SslContext | None = None,
    max_clients: int = 1024,
    handshake_timeout: float | None = 10.0,
    backlog: int = socket.SOMAXCONN,
    task_status: anyio.abc.TaskStatus[Server] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve TCP clients until cancelled: ``await handler(client)`` in a task per client.

    Binds ``address``:``port`` (with ``REUSE_ADDR``) and listens: ``address=""`` listens on
    every IPv4 address, an IPv6 literal gives an IPv6 listener, a host name its first address.
    ``server = await task_group.start(serve, handler, 0)`` returns once listening, with an
    :class:`Server` whose ``.port`` is the port bound.

    Each client (an :class:`~duonet.aio.AsyncSocket`) is handed to ``handler`` in a task of its
    own, after its TLS handshake when ``ssl_context`` is given (done in that task, under
    ``handshake_timeout`` seconds: a client that stalls or fails is dropped and delays no one).
    At most ``max_clients`` handlers run at once; further clients wait in the kernel's backlog.
    The client is closed when its handler returns or raises. A handler's exception and a failed
    handshake are logged on the ``"duonet"`` logger with the peer's address; the server goes on.

    Cancelling ``serve`` closes the listener, cancels the running handlers and closes their
    clients.

    Raises:
        TypeError, ValueError: a wrong argument (before anything is bound).
        OSError: binding or listening failed (the address is in the message).
    """
    check_tcp_args(port, address)
    clients, limit, backlog = check_options(
        handler, ssl_context, max_clients, handshake_timeout, backlog
    )
    listener = open_tcp_listener(port, address, backlog)
    host, bound = local_address(listener)
    server = Server._make(host, bound, ssl_context is not None)
    await _run(
        server,
        listener,
        None,
        endpoint(host, bound),
        handler,
        ssl_context,
        clients,
        limit,
        task_status,
    )


async def serve_unix(
    handler: AsyncHandler,
    path: str | bytes | os.PathLike[str] | os.PathLike[bytes],
    *,
    ssl_context: SslContext | None = None,
    max_clients: int = 1024,
    handshake_timeout: float | None = 10.0,
    backlog: int = socket.SOMAXCONN,
    task_status: anyio.abc.TaskStatus[Server] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """:func:`serve` over a Unix socket bound at ``path``; the socket file is removed when the
    server stops. A stale socket file already at ``path`` is replaced.

    Raises:
        TypeError, ValueError: a wrong argument (before anything is bound).
        OSError: binding or listening failed (the path is in the message).
    """
    clients, limit, backlog = check_options(
        handler, ssl_context, max_clients, handshake_timeout, backlog
    )
    listener, file, text = open_unix_listener(path, backlog)
    server = Server._make(text, 0, ssl_context is not None)
    await _run(server, listener, file, text, handler, ssl_context, clients, limit, task_status)


async def _run(
    server: Server,
    listener: AsyncSocket,
    file: UnixFile | None,
    where: str,
    handler: AsyncHandler,
    ctx: SslContext | None,
    max_clients: int,
    limit: float | None,
    task_status: anyio.abc.TaskStatus[Server],
) -> None:
    # The slots are a plain counter (server._clients) and an event the accept loop waits on
    # when they are all taken: unlike anyio.Semaphore, taking a free one costs no checkpoint.
    slot_freed: anyio.Event | None = None

    async def client_task(client: AsyncSocket, address: str) -> None:
        nonlocal slot_freed
        try:
            if ctx is not None:
                try:
                    await wrap_connected_socket(ctx, client, SslHandshakeType.SERVER, "", limit)
                except (SslError, OSError) as exc:  # TimeoutError included
                    handshake_failed(peer_name(client, address, where), exc, limit, False)
                    return
            try:
                await handler(client)
            except Exception:
                handler_failed(peer_name(client, address, where), False)
        finally:
            try:
                await client.close()
            except BaseException:  # close() does not wait; should that change, still close
                client._close_now()
                raise
            finally:
                server._clients -= 1
                if slot_freed is not None:
                    slot_freed.set()
                    slot_freed = None

    try:
        async with anyio.create_task_group() as tg:
            task_status.started(server)
            accepted = 0
            while True:
                if server._clients >= max_clients:
                    slot_freed = anyio.Event()
                    await slot_freed.wait()
                    continue
                try:
                    client, address = await listener.accept_addr()
                except SocketClosedError:
                    raise
                except OSError as exc:
                    if not accept_failed(where, exc):
                        raise
                    await anyio.sleep(RETRY_DELAY)
                    continue
                server._clients += 1
                tg.start_soon(client_task, client, address)
                accepted += 1
                if accepted % _BURST == 0:
                    # accept_addr() waits only when no client is waiting: in a burst of
                    # clients, let the handlers (and a cancellation) in now and then.
                    await anyio.lowlevel.checkpoint()
    finally:
        try:
            await listener.close()
        except BaseException:
            listener._close_now()
            raise
        if file is not None:
            file.remove()
