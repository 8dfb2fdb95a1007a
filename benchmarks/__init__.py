"""duonet's benchmarks: each scenario runs duonet beside the stdlib, asyncio, anyio and trio.

Run ``python -m benchmarks`` (``--quick`` for a run under a minute); see ``README.md``.
"""
