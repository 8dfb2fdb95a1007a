"""Scenario 7 — many waiters: N threads, each blocked reading a line from its own socket.

The peer opens N connections to a stdlib server process and starts N threads, each blocked in a
line read. Once the process has gone idle (every thread is parked), the server sends one line on
every connection; the timer runs from that command until every thread has its line. Reported
beside the time: the peak thread count, as Python sees it (``threading.active_count()``) and as
the OS does (``/proc/self/task``).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from functools import partial
from typing import Protocol

import duonet
from duonet import _portal

from ._harness import (
    HOST,
    Config,
    Peer,
    Sample,
    ServerProcess,
    Stopwatch,
    Table,
    check,
    count_hops,
    run_rounds,
    thread_counts,
    use_portal,
    wait_idle,
)
from ._server import line

EXPECTED = line(0)[:-1]


class LineReader(Protocol):
    def read_line(self) -> bytes: ...
    def close(self) -> None: ...


class StdlibReader:
    """A stdlib socket with its ``makefile("rb")``: ``read_line`` is ``readline``."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection((HOST, port))
        self.file = self.sock.makefile("rb")
        self.read_line = self.file.readline

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def _measure(
    server: ServerProcess,
    count: int,
    connect: Callable[[], LineReader],
    *,
    duonet_blocking: bool = False,
) -> Sample:
    server.send(f"EXPECT {count}")
    readers = [connect() for _ in range(count)]
    results: list[bytes | None] = [None] * count
    started = threading.Semaphore(0)

    def worker(index: int) -> None:
        started.release()
        results[index] = readers[index].read_line()

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(count)]
    # The hops happen when the readers block, before the timer: count them from here.
    hops, restore = count_hops() if duonet_blocking else (None, None)
    try:
        server.expect("READY")
        for thread in threads:
            thread.start()
        for _ in range(count):
            started.acquire()
        wait_idle()  # every reader is now parked in its read
        python_threads, os_threads = thread_counts()
        with Stopwatch() as sw:
            server.send("GO")
            for thread in threads:
                thread.join(60)
        server.expect("SENT")
        if hops is not None:
            sw.sample.hops = next(hops)
        sw.sample.extra.update(py_threads=python_threads, os_threads=os_threads)
        check(all(r is not None and r.rstrip(b"\n") == EXPECTED for r in results), "lost lines")
        return sw.sample
    finally:
        if restore is not None:
            restore()
        for reader in readers:
            reader.close()
        server.command("CLOSE", "CLOSED")


def stdlib(server: ServerProcess, count: int) -> Sample:
    _portal.reset()  # no idle duonet thread in this peer's thread count
    return _measure(server, count, partial(StdlibReader, server.port))


def duonet_blocking(server: ServerProcess, count: int, portal: str) -> Sample:
    use_portal(portal)
    return _measure(server, count, partial(duonet.dial, HOST, server.port), duonet_blocking=True)


def run(cfg: Config) -> Table:
    count = 1000
    with ServerProcess("waiters") as server:
        peers = [
            Peer("stdlib makefile().readline", partial(stdlib, server, count)),
            *(
                Peer(f"duonet read_line ({p} portal)", partial(duonet_blocking, server, count, p))
                for p in ("uvloop", "asyncio", "trio")
            ),
        ]
        rows, rounds = run_rounds(
            peers,
            cfg,
            "waiters",
            rounds=cfg.n_rounds(full=5, quick=2),
            budget=cfg.time_budget(full=180, quick=10),
        )
    return Table(
        key="waiters",
        title=f"7. many waiters — {count} threads blocked in a line read, then all served",
        description="Time from the server's go to the last thread holding its line (op = 1 "
        "waiter); py_threads/os_threads = peak thread count of the benchmark process "
        "(threading.active_count(), /proc/self/task).",
        ops=count,
        op="waiter",
        reference="stdlib makefile().readline",
        rows=rows,
        rounds=rounds,
    )
