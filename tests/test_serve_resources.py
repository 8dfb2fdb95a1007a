"""A server that runs out of file descriptors keeps serving: ``accept`` failing with ``EMFILE``
is logged and retried (after ``RETRY_DELAY``), and every client waiting in the backlog is served
once handlers have closed theirs.

The server runs in a child process whose descriptor limit is lowered just above what it already
has open, so that only a few clients can be accepted at once; this process (with its own
limits) is the clients. Each handler holds its client until the client says "go", so the
server cannot free a descriptor before the test lets it.
"""

from __future__ import annotations

import queue
import socket
import subprocess
import sys
import textwrap
import threading
import time
from typing import IO

import pytest

_SERVER = textwrap.dedent(
    """
    import logging, os, resource, socket, sys
    face = sys.argv[1]
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)

    def limit_fds():
        # a handful of descriptors left: the limit is just above what is open now
        in_use = len(os.listdir("/proc/self/fd"))
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (in_use + 3, hard))

    if face == "blocking":
        import duonet

        def handler(client):
            line = client.recv_line(timeout=20)
            client.recv_line(timeout=20)  # "go": hold the descriptor until the client says so
            client.send(line + b" ok\\n")

        server = duonet.serve(handler, 0, "127.0.0.1")
        with duonet.dial("127.0.0.1", server.port) as warm:  # (dial starts the portal)
            warm.send(b"warm\\ngo\\n")
            warm.recv_line()
        limit_fds()
        print(server.port, flush=True)
        sys.stdin.read()
        server.close()
    else:
        import anyio
        import duonet.aio

        async def handler(client):
            line = await client.recv_line(timeout=20)
            await client.recv_line(timeout=20)  # "go"
            await client.send(line + b" ok\\n")

        async def main():
            async with anyio.create_task_group() as tg:
                server = await tg.start(duonet.aio.serve, handler, 0, "127.0.0.1")
                limit_fds()
                print(server.port, flush=True)
                await anyio.to_thread.run_sync(sys.stdin.read)
                tg.cancel_scope.cancel()

        anyio.run(main, backend=face)
    """
)


@pytest.mark.parametrize("face", ["blocking", "asyncio", "trio"])
def test_a_server_out_of_descriptors_retries_and_serves_every_client(face: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER, face],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    log: queue.Queue[bytes] = queue.Queue()

    def read_log(stream: IO[bytes]) -> None:
        for line in stream:
            log.put(line)
        log.put(b"")  # the end

    threading.Thread(target=read_log, args=(proc.stderr,), daemon=True).start()
    clients: list[socket.socket] = []
    try:
        port = int(proc.stdout.readline())
        for i in range(40):  # far more than the server has descriptors for
            client = socket.create_connection(("127.0.0.1", port), timeout=20)
            client.sendall(b"client %d\n" % i)
            clients.append(client)
        # Every handler holds its client: the server runs out and says so (and retries).
        first = log.get(timeout=20)
        assert b"Too many open files" in first, first
        assert b"retrying" in first, first
        for i, client in enumerate(clients):
            client.sendall(b"go\n")
            reader = client.makefile("rb")
            assert reader.readline() == b"client %d ok\n" % i
            reader.close()
            client.close()
    finally:
        for client in clients:
            client.close()
        time.sleep(0.1)
        proc.communicate(b"", timeout=20)
    assert proc.returncode == 0
    rest = b"".join(iter(lambda: log.get(timeout=5), b""))  # the reader ends with the pipe
    assert b"Traceback" not in rest, rest.decode(errors="replace")
