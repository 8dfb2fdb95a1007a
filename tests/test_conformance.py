"""The conformance suite (tests/scenarios.py) run from both faces, on each scenario's
transports (TCP, Unix sockets, TLS).

* the async face (``duonet.aio.AsyncSocket``) under both anyio backends (``anyio_backend``:
  asyncio and trio);
* the blocking face (``duonet.Socket``, driven through adapters that run each call in a worker
  thread) with duonet's portal on asyncio and on trio (``portal_backend``); the test's own loop
  is asyncio only, to keep the matrix small.

Every scenario runs on both faces except ``cancel_keeps_bytes`` (async only: a blocking call is
cancelled by KeyboardInterrupt, not by a cancel scope). Every scenario runs under a hang guard: a
bug fails the test instead of hanging the suite.
"""

from __future__ import annotations

import anyio
import pytest

from scenarios import SCENARIOS, AsyncFace, BlockingFace, scenario_params

#: No scenario takes more than a second or two when duonet works; this only catches hangs.
HANG_GUARD = 20.0


@pytest.mark.parametrize(("name", "transport"), scenario_params("async"))
async def test_async_face(name: str, transport: str, anyio_backend: str) -> None:
    with anyio.fail_after(HANG_GUARD):
        await SCENARIOS[name].func(AsyncFace(), transport)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize(("name", "transport"), scenario_params("blocking"))
async def test_blocking_face(name: str, transport: str, portal_backend: str) -> None:
    with anyio.fail_after(HANG_GUARD):
        await SCENARIOS[name].func(BlockingFace(), transport)
