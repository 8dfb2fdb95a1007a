"""Name resolution and happy-eyeballs connection attempts for the core."""

from __future__ import annotations

import asyncio
import functools
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

import anyio

from .._errors import with_address
from .._ip import IpAddress
from ._io import Waiter, connect_raw

__all__ = ("AddrInfo", "host_text", "resolve", "happy_eyeballs")

#: (family, type, proto, sockaddr)
AddrInfo = tuple[int, int, int, Any]

T = TypeVar("T")

#: RFC 8305's "Connection Attempt Delay".
ATTEMPT_DELAY = 0.25


def host_text(address: str | IpAddress) -> str:
    """The host as text for the resolver (an ``IpAddress`` prints in its canonical form)."""
    return str(address) if isinstance(address, IpAddress) else address


def endpoint(host: str, port: int) -> str:
    """``host:port``, with brackets around an IPv6 host."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def resolve(
    address: str | IpAddress, port: int, family: int, sock_type: int, proto: int
) -> list[AddrInfo]:
    """Resolve ``address`` for ``family`` (``AF_UNSPEC`` for any): a list, never empty.

    IP literals are converted without a worker thread. Raises ``socket.gaierror`` naming the host.
    """
    host = host_text(address)
    if not isinstance(host, str):
        raise TypeError(f"address must be str or IpAddress, not {type(address).__name__}")
    # An IPv6 socket reaches IPv4 hosts through mapped addresses (::ffff:a.b.c.d), used when a
    # name has no IPv6 address (as Nim does on Linux); an IPv4 literal is mapped too.
    flags = getattr(socket, "AI_V4MAPPED", 0) if family == socket.AF_INET6 else 0
    infos: list[tuple[Any, Any, int, str, Any]]
    try:
        try:
            infos = socket.getaddrinfo(
                host, port, family, sock_type, proto, socket.AI_NUMERICHOST | flags
            )
        except socket.gaierror:
            infos = await _in_own_thread(
                functools.partial(
                    socket.getaddrinfo, _idna(host), port, family, sock_type, proto, flags
                )
            )
    except socket.gaierror as exc:
        raise socket.gaierror(exc.errno, f"{exc.strerror} (resolving {host!r})") from exc
    except UnicodeError as exc:
        raise socket.gaierror(socket.EAI_NONAME, f"invalid host name {host!r}: {exc}") from exc
    result: list[AddrInfo] = [(fam, typ, pro, addr) for fam, typ, pro, _canon, addr in infos]
    if not result:
        raise socket.gaierror(socket.EAI_NONAME, f"no address of the right family for {host!r}")
    return result


async def _in_own_thread(func: Callable[[], T]) -> T:
    """Run ``func`` (a blocking ``getaddrinfo``) in a thread of its own that ends when it returns.

    Not anyio's worker threads: on asyncio an idle worker only ends when a later
    ``to_thread.run_sync`` call notices it, or when the loop's root task ends, which the
    blocking face's portal loop never does, so a resolved name would leave a thread behind for
    good. A cancelled wait abandons the thread, which still ends when ``getaddrinfo`` returns.
    """
    done = anyio.Event()
    wake = _waker(done)
    outcome: list[Any] = []

    def work() -> None:
        try:
            outcome.append((True, func()))
        except BaseException as exc:  # handed to the waiting task
            outcome.append((False, exc))
        try:
            wake()
        except RuntimeError:
            pass  # the loop has ended: nobody waits any more

    threading.Thread(target=work, name="duonet-resolver", daemon=True).start()
    await done.wait()
    ok, value = outcome[0]
    if not ok:
        raise value
    return cast(T, value)


def _waker(event: anyio.Event) -> Callable[[], None]:
    """A thread-safe, non-blocking ``event.set`` for the running loop (trio or asyncio)."""
    trio = sys.modules.get("trio")
    if trio is not None and trio.lowlevel.in_trio_run():
        token = trio.lowlevel.current_trio_token()
        return lambda: token.run_sync_soon(event.set)
    loop = asyncio.get_running_loop()

    def wake() -> None:
        loop.call_soon_threadsafe(event.set)

    return wake


def _idna(host: str) -> str:
    """The host as the resolver wants it: IDNA 2008 (UTS #46) for non-ASCII names."""
    try:
        host.encode("ascii")
    except UnicodeEncodeError:
        import idna  # anyio's own dependency

        return str(idna.encode(host, uts46=True), "ascii")
    return host


def interleave(infos: list[AddrInfo]) -> list[AddrInfo]:
    """Alternate address families, first family first (RFC 8305 §4)."""
    if not infos:
        return infos
    first = [i for i in infos if i[0] == infos[0][0]]
    other = [i for i in infos if i[0] != infos[0][0]]
    out: list[AddrInfo] = []
    for index in range(max(len(first), len(other))):
        out.extend(group[index] for group in (first, other) if index < len(group))
    return out


async def happy_eyeballs(infos: list[AddrInfo], what: str) -> tuple[socket.socket, Any, int]:
    """Connect to one of ``infos``, starting a new attempt every 250 ms until one succeeds.

    Returns the connected non-blocking socket, the address it connected to, and what
    :func:`connect_raw` returned (the errno of a reset right after the handshake, or 0); the
    others are closed. If all fail, raises the last failure with ``what`` (the name and port
    asked for) in its message.
    """
    winner: tuple[socket.socket, Any, int] | None = None
    errors: list[OSError] = []

    async def attempt(info: AddrInfo, failed: anyio.Event) -> None:
        nonlocal winner
        family, sock_type, proto, sockaddr = info
        sock = socket.socket(family, sock_type, proto)
        try:
            sock.setblocking(False)
            reset = await connect_raw(sock, sockaddr, Waiter(sock))
        except OSError as exc:
            errors.append(exc)
            failed.set()
            sock.close()
            return
        except BaseException:
            sock.close()
            raise
        if winner is None:
            winner = sock, sockaddr, reset
            tg.cancel_scope.cancel()
        else:
            sock.close()

    async with anyio.create_task_group() as tg:
        for info in interleave(infos):
            failed = anyio.Event()
            tg.start_soon(attempt, info, failed)
            with anyio.move_on_after(ATTEMPT_DELAY):
                await failed.wait()
    if winner is not None:
        return winner
    last = errors[-1] if errors else OSError("no address to connect to")
    raise with_address(last, "connecting to", what) from last
