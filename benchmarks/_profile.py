"""``--profile PEER``: one run of each matching peer under cProfile, caller and portal threads.

The profiled region is the peer's timed region (its :class:`~benchmarks._harness.Stopwatch`).
On Python < 3.12 cProfile sees one thread only, so the portal thread gets a profiler of its own,
switched on and off from inside the portal (``duonet._portal.call``); from 3.12 one profiler
sees every thread.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
from typing import Any

from . import _harness

TOP = 25


async def _switch(profiler: cProfile.Profile, on: bool) -> None:
    if on:
        profiler.enable()
    else:
        profiler.disable()


class Profiler:
    def __init__(self) -> None:
        self.caller = cProfile.Profile()
        self.portal: cProfile.Profile | None = None

    def start(self, portal: bool) -> None:
        if portal and sys.version_info < (3, 12):
            from duonet import _portal

            self.portal = cProfile.Profile()
            _portal.call(_switch, self.portal, True)
        self.caller.enable()

    def stop(self) -> None:
        self.caller.disable()
        if self.portal is not None:
            from duonet import _portal

            _portal.call(_switch, self.portal, False)

    def report(self, title: str) -> str:
        parts = [self._stats(f"{title} — calling thread", self.caller)]
        if self.portal is not None:
            parts.append(self._stats(f"{title} — portal thread", self.portal))
        return "\n".join(parts)

    @staticmethod
    def _stats(title: str, profiler: cProfile.Profile) -> str:
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.strip_dirs().sort_stats("tottime").print_stats(TOP)
        return f"## {title} (sorted by own time)\n{out.getvalue()}"


def profile_rows(peers: list[Any], pattern: str, label: str) -> list[Any]:
    """Run each peer whose name contains ``pattern`` once, profiled; print the profile."""
    rows = []
    for peer in peers:
        if pattern.lower() not in peer.name.lower():
            continue
        profiler = Profiler()
        _harness._profiler = profiler
        try:
            sample = peer.run()
        finally:
            _harness._profiler = None
        print(profiler.report(f"[{label}] {peer.name}"), flush=True)
        rows.append(_harness.Row(peer, [sample]))
    return rows
