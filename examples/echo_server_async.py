"""A line-echo server with duonet.aio, on asyncio or trio (same code: anyio underneath).

Run: python examples/echo_server_async.py [asyncio|trio] [--selftest]
"""

from __future__ import annotations

import sys

import anyio

from duonet import aio


async def handle(client: aio.AsyncSocket) -> None:
    async with client:
        while line := await client.recv_line(timeout=60):
            await client.send((b"" if line == b"\r\n" else line) + b"\n")


async def main(selftest: bool) -> None:
    listener = aio.new_async_socket()
    async with listener:
        listener.set_sock_opt(aio.SOBool.REUSE_ADDR, True)
        listener.bind_addr(0, "127.0.0.1")
        listener.listen()
        port = listener.get_local_addr()[1]
        print(f"echo server on 127.0.0.1:{port}", flush=True)
        async with anyio.create_task_group() as tg:

            async def accept_forever() -> None:
                while True:
                    client = await listener.accept()
                    tg.start_soon(handle, client)

            tg.start_soon(accept_forever)
            if selftest:
                async with await aio.dial("127.0.0.1", port, timeout=5) as client:
                    await client.send("ping\n")
                    reply = await client.recv_line(timeout=5)
                print(reply)
                assert reply == b"ping", reply
                tg.cancel_scope.cancel()


if __name__ == "__main__":
    backend = next((a for a in sys.argv[1:] if a in ("asyncio", "trio")), "asyncio")
    anyio.run(main, "--selftest" in sys.argv, backend=backend)
