"""The blocking servers: ``duonet.serve``, ``duonet.serve_unix`` and their :class:`Server`.

Theory of operation
-------------------
A thread per client, as ``socketserver.ThreadingTCPServer``, over duonet's blocking sockets:

* one *accept thread* (``duonet-serve-<address>``) takes a slot (``max_clients`` of them, a
  condition variable), then waits for a client in a ``select`` of its own, on a **plain**
  listener and on a wake-up socket, takes the client with the core's no-wait accept, and starts
  a *client thread* (``duonet-serve-<address>-<peer>``) for it. Waiting there rather than in
  duonet's event loop thread keeps that thread, which serves every blocking socket of the
  program, out of the accept path, and lets ``close()`` stop the accept thread without a call
  into it;
* the client thread does the TLS handshake when there is one (so a stalled or failing handshake
  delays no one), runs ``handler(client)``, closes the client, gives its slot back and ends: a
  server gains no thread that outlives its client;
* ``close()`` wakes the accept thread and joins it, closes the listener, waits up to ``timeout``
  for the handlers, then closes the clients still open (a handler blocked on its client returns
  with an error) and joins every thread of the server.

The accept and client threads block ``SIGINT``, so Ctrl-C reaches the main thread (and
:meth:`Server.serve_forever`). The rules shared with the async face (argument checks, listeners,
logging) live in ``duonet._core._server``; the clients' I/O is the blocking ``Socket``'s.
"""

from __future__ import annotations

import selectors
import signal
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType

from ._blocking import Socket, wrap_connected_socket
from ._core import _fastpath
from ._core._resolve import endpoint
from ._core._server import (
    RETRY_DELAY,
    BoundAddress,
    UnixFile,
    accept_failed,
    check_options,
    check_tcp_args,
    check_timeout,
    handler_failed,
    handshake_failed,
    local_address,
    logger,
    open_tcp_listener,
    open_unix_listener,
    peer_name,
)
from ._core._socket import AsyncSocket
from ._enums import SocketFlag
from ._errors import SslError
from ._ip import IpAddress
from ._portal import IN_LOOP_MESSAGE, in_event_loop
from ._sslcontext import SslContext, SslHandshakeType

__all__ = ("Server", "serve", "serve_unix")

Handler = Callable[[Socket], object]
SAFE_DISCONN = SocketFlag.SAFE_DISCONN

#: After this many seconds, a handler that has not returned once its client was closed is
#: reported (close() goes on waiting for it).
_STUCK_REPORT = 5.0


class Server(BoundAddress):
    """A blocking server running in threads of its own; made by :func:`serve`/:func:`serve_unix`.

    ``with serve(...) as server:`` closes it on exit. :meth:`serve_forever` blocks until it is
    closed.
    """

    _listener: Socket
    _where: str  # the address (host:port, or the path) as logs and thread names give it
    _handler: Handler
    _ssl_context: SslContext | None
    _max_clients: int
    _handshake_timeout: float | None
    _unix_file: UnixFile | None
    _lock: threading.Lock
    _changed: threading.Condition  # a slot was freed, or closing began
    _active: int  # slots taken: clients being accepted or served
    _clients: dict[threading.Thread, Socket]  # client threads running, and their client
    _ended: list[threading.Thread]  # client threads that have finished (or nearly)
    _closing: bool
    _closers: set[threading.Thread]  # threads inside close()
    _full: bool  # the accept thread waits for a free slot
    _stopping: threading.Event  # closing began: cuts the pause after an accept error
    _closed: threading.Event  # close() has completed
    _error: OSError | None  # why the accept thread stopped on its own
    _acceptor: threading.Thread
    _selector: selectors.BaseSelector  # what the accept thread waits on
    _wake_r: socket.socket  # close() writes to _wake_w to wake the accept thread
    _wake_w: socket.socket

    def __init__(self) -> None:
        raise TypeError("Server objects are made by duonet.serve() and duonet.serve_unix()")

    @classmethod
    def _start(
        cls,
        listener: Socket,
        where: str,
        address: str,
        port: int,
        handler: Handler,
        ssl_context: SslContext | None,
        max_clients: int,
        handshake_timeout: float | None,
        unix_file: UnixFile | None,
    ) -> Server:
        """Serve on ``listener`` from now on, in threads of the server's own."""
        self = cls.__new__(cls)
        self._listener = listener
        self._where = where
        self._address = address
        self._port = port
        self._handler = handler
        self._ssl_context = ssl_context
        self._max_clients = max_clients
        self._handshake_timeout = handshake_timeout
        self._unix_file = unix_file
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._active = 0
        self._clients = {}
        self._ended = []
        self._closing = False
        self._closers = set()
        self._full = False
        self._stopping = threading.Event()
        self._closed = threading.Event()
        self._error = None
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener.aio._sock, selectors.EVENT_READ)
        self._selector.register(self._wake_r, selectors.EVENT_READ)
        self._acceptor = threading.Thread(
            target=self._accept_loop, name=f"duonet-serve-{where}", daemon=True
        )
        self._acceptor.start()
        return self

    # -- what the user sees -----------------------------------------------------------------------

    @property
    def clients(self) -> int:
        """How many clients are being served right now."""
        with self._lock:
            return len(self._clients)

    def serve_forever(self) -> None:
        """Block until the server is closed (by :meth:`close` from another thread or a handler).

        ``KeyboardInterrupt`` (Ctrl-C) closes the server and propagates.

        Raises:
            OSError: the server stopped accepting because ``accept`` failed (it was logged, and
                the server is closed).
            RuntimeError: called from inside a running event loop (which it would block).
        """
        if in_event_loop():
            raise RuntimeError(IN_LOOP_MESSAGE)
        try:
            # Short waits: a Ctrl-C delivered to another thread of the program is acted on in
            # the main thread only between two bytecodes.
            while not self._closed.wait(0.25):
                if self._error is not None and not self._acceptor.is_alive():
                    self.close()
        except BaseException:  # KeyboardInterrupt: close, then let it go on
            self.close()
            raise
        if self._error is not None:
            raise self._error

    def close(self, timeout: float | None = 5.0) -> None:
        """Stop accepting, wait up to ``timeout`` seconds for running handlers, then close.

        Closes the listener (a Unix server also removes its socket file), waits for the running
        handlers (``None`` or negative: as long as they take; ``0``: not at all), then closes
        the clients still open, so that a handler blocked on its client returns with an error,
        and returns once no thread of the server is left. Idempotent; safe from any thread,
        a handler included (which then waits for every thread but its own and those of other
        handlers closing the server at the same time).

        Raises:
            TypeError, ValueError: ``timeout`` is not a number of seconds or ``None``.
            RuntimeError: called from inside a running event loop (which it would block).
        """
        limit = check_timeout(timeout, "timeout")
        if in_event_loop():
            raise RuntimeError(IN_LOOP_MESSAGE)
        me = threading.current_thread()
        with self._lock:
            first = not self._closing
            self._closing = True
            self._closers.add(me)
            self._changed.notify_all()
        try:
            if first:
                self._stopping.set()
                self._wake()  # the accept thread leaves its wait and returns
            self._acceptor.join()
            if first:
                # Only now: the accept thread no longer uses them.
                self._listener.close()
                self._selector.close()
                self._wake_r.close()
                self._wake_w.close()
                if self._unix_file is not None:
                    self._unix_file.remove()
            self._finish_clients(me, limit)
        finally:
            with self._lock:
                self._closers.discard(me)
        self._closed.set()

    def _finish_clients(self, me: threading.Thread, limit: float | None) -> None:
        """close(): wait for the handlers, close their clients, join their threads.

        A handler that closes the server waits for every other thread but those of handlers
        that are closing it too (two of them would otherwise wait for each other forever).
        """
        deadline = None if limit is None else time.monotonic() + limit
        with self._lock:
            in_handler = me in self._clients

            def skip(thread: threading.Thread) -> bool:
                return thread is me or (in_handler and thread in self._closers)

            while any(not skip(thread) for thread in self._clients):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                self._changed.wait(left)
            leftover = [(t, c) for t, c in self._clients.items() if not skip(t)]
            ended = [t for t in self._ended if not skip(t)]
        for _thread, client in leftover:
            client.close()  # a handler blocked on it returns with SocketClosedError
        for thread, client in leftover:
            thread.join(_STUCK_REPORT)
            if thread.is_alive():
                logger.warning(
                    "server on %s: the handler for %s has not returned %g s after its client "
                    "was closed; close() waits for it",
                    self._where,
                    client.aio._describe(),
                    _STUCK_REPORT,
                )
                thread.join()
        for thread in ended:
            thread.join()

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closing else f"{self.clients} clients"
        tls = " tls" if self._ssl_context is not None else ""
        return f"<Server {self._where}{tls}, {state}>"

    # -- the accept thread --------------------------------------------------------------------

    def _accept_loop(self) -> None:
        _block_sigint()  # client threads inherit the mask
        lock, changed = self._lock, self._changed
        while True:
            with lock:
                while self._active >= self._max_clients and not self._closing:
                    self._full = True
                    changed.wait()
                    self._full = False
                if self._closing:
                    return
                self._active += 1  # the slot of the client accepted next
            try:
                accepted = self._accept()
            except OSError as exc:
                self._free_slot()
                if not accept_failed(self._where, exc):
                    self._error = exc
                    self._stopping.set()  # wakes serve_forever, which closes the server
                    return
                self._stopping.wait(RETRY_DELAY)
                continue
            if accepted is None:  # close() woke us
                self._free_slot()
                return
            core, address = accepted
            client = Socket._wrap(core)
            peer = peer_name(core, address, self._where)
            thread = threading.Thread(
                target=self._client_main,
                args=(client, peer),
                name=f"duonet-serve-{self._where}-{peer}",
                daemon=True,
            )
            with lock:
                if self._closing:  # close() came during accept: it will not see this client
                    self._active -= 1
                    client.close()
                    return
                self._clients[thread] = client
                if len(self._ended) > 64:
                    self._ended = [t for t in self._ended if t.is_alive()]
            # Outside the lock (finishing clients need it); close() joins this thread only
            # after this one, so it never meets a client thread not yet started.
            thread.start()

    def _accept(self) -> tuple[AsyncSocket, str] | None:
        """The next client, or None once close() has begun.

        The accept thread waits in its own ``select`` (on the listener and on close()'s wake-up
        socket), not in duonet's event loop thread: the loop, which serves every blocking socket
        of the program, takes no part in accepting, and close() needs no call into it. The
        accept itself is the core's no-wait twin (``SAFE_DISCONN``: a client that vanished is
        skipped).
        """
        core = self._listener.aio
        while not self._closing:
            accepted = _fastpath.accept_addr(core, SAFE_DISCONN, False)
            if accepted is not None:
                return accepted
            self._selector.select()
        return None

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:  # its buffer is full: the accept thread has been woken already
            pass

    def _free_slot(self) -> None:
        with self._lock:
            self._active -= 1
            if self._full:
                self._changed.notify_all()

    # -- a client thread ----------------------------------------------------------------------

    def _client_main(self, client: Socket, peer: str) -> None:
        try:
            ctx = self._ssl_context
            if ctx is not None:
                try:
                    wrap_connected_socket(
                        ctx, client, SslHandshakeType.SERVER, "", self._handshake_timeout
                    )
                except (SslError, OSError) as exc:  # TimeoutError included
                    handshake_failed(peer, exc, self._handshake_timeout, self._closing)
                    return
            try:
                self._handler(client)
            except Exception:
                handler_failed(peer, self._closing)
        finally:
            try:
                client.close()
            finally:
                me = threading.current_thread()
                with self._lock:
                    self._clients.pop(me, None)
                    self._ended.append(me)
                    self._active -= 1
                    if self._full or self._closing:  # the accept thread or close() waits
                        self._changed.notify_all()


def _block_sigint() -> None:
    if hasattr(signal, "pthread_sigmask"):
        try:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        except (OSError, ValueError):
            pass


def serve(
    handler: Handler,
    port: int,
    address: str | IpAddress = "",
    *,
    ssl_context: SslContext | None = None,
    max_clients: int = 1024,
    handshake_timeout: float | None = 10.0,
    backlog: int = socket.SOMAXCONN,
) -> Server:
    """Listen on ``address``:``port`` and serve each client with ``handler`` in a thread of its own.

    Binds (with ``REUSE_ADDR``) and listens, then serves in the background and returns the
    :class:`Server` (``.port`` is the port bound, also for ``port=0``). ``address=""`` listens on
    every IPv4 address, an IPv6 literal gives an IPv6 listener, a host name its first address.

    Each client (a :class:`~duonet.Socket`) is handed to ``handler(client)`` in a thread of its
    own, after its TLS handshake when ``ssl_context`` is given (done in that client's thread,
    under ``handshake_timeout`` seconds: a client that stalls or fails is dropped and delays no
    one). At most ``max_clients`` handlers run at once; further clients wait in the kernel's
    backlog. The client is closed when its handler returns or raises. A handler's exception and
    a failed handshake are logged on the ``"duonet"`` logger with the peer's address (the
    record's ``peer`` attribute too); the server goes on.

    Raises:
        TypeError, ValueError: a wrong argument (before anything is bound).
        OSError: binding or listening failed (the address is in the message).
    """
    check_tcp_args(port, address)
    clients, limit, backlog = check_options(
        handler, ssl_context, max_clients, handshake_timeout, backlog
    )
    core = open_tcp_listener(port, address, backlog)
    host, bound = local_address(core)
    return Server._start(
        Socket._wrap(core),
        endpoint(host, bound),
        host,
        bound,
        handler,
        ssl_context,
        clients,
        limit,
        None,
    )


def serve_unix(
    handler: Handler,
    path: str | bytes,
    *,
    ssl_context: SslContext | None = None,
    max_clients: int = 1024,
    handshake_timeout: float | None = 10.0,
    backlog: int = socket.SOMAXCONN,
) -> Server:
    """:func:`serve` over a Unix socket bound at ``path``; the socket file is removed when the
    server closes. A stale socket file already at ``path`` is replaced.

    Raises:
        TypeError, ValueError: a wrong argument (before anything is bound).
        OSError: binding or listening failed (the path is in the message).
    """
    clients, limit, backlog = check_options(
        handler, ssl_context, max_clients, handshake_timeout, backlog
    )
    core, file, text = open_unix_listener(path, backlog)
    return Server._start(
        Socket._wrap(core), text, text, 0, handler, ssl_context, clients, limit, file
    )
