"""A line-echo server with duonet.aio, on asyncio or trio (same code: anyio underneath).

Run: python examples/echo_server_async.py [asyncio|trio] [--selftest]
"""

from __future__ import annotations

import sys

import anyio

from duonet import aio


async def handle(client: aio.AsyncSocket) -> None:
    """Runs in a task of its own for each client; serve closes the client when it returns."""
    async for line in client.lines(timeout=60):  # ends when the client closes
        await client.send((b"" if line == b"\r\n" else line) + b"\n")


async def main(selftest: bool) -> None:
    async with anyio.create_task_group() as tg:
        server = await tg.start(aio.serve, handle, 0, "127.0.0.1")
        print(f"echo server on 127.0.0.1:{server.port}", flush=True)
        if selftest:
            async with await aio.dial("127.0.0.1", server.port, timeout=5) as client:
                await client.send("ping\n")
                reply = await client.recv_line(timeout=5)
            print(reply)
            assert reply == b"ping", reply
            tg.cancel_scope.cancel()  # stops the server: its listener and clients are closed


if __name__ == "__main__":
    backend = next((a for a in sys.argv[1:] if a in ("asyncio", "trio")), "asyncio")
    anyio.run(main, "--selftest" in sys.argv, backend=backend)
