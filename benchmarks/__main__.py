"""``python -m benchmarks [--quick] [--only lines,bulk] [--rounds N] [--output FILE]``."""

from __future__ import annotations

import argparse
import faulthandler
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from . import (
    accept,
    bulk,
    kv,
    lines,
    load,
    pingpong,
    portal,
    sendfile,
    tls,
    tlsproto,
    values,
    waiters,
)
from . import serve as serve_scenario
from ._harness import Config, Table, close_all_servers, pin_cpus, render

SCENARIOS: dict[str, Callable[[Config], Table | list[Table]]] = {
    "lines": lines.run,
    "bulk": bulk.run,
    "pingpong": pingpong.run,
    "accept": accept.run,
    "tls": tls.run,
    "portal": portal.run,
    "waiters": waiters.run,
    "pipelined": kv.run_pipelined,
    "values": values.run,
    "reqresp": kv.run_reqresp,
    "tlsconn": tlsproto.run_connections,
    "starttls": tlsproto.run_starttls,
    "sendfile": sendfile.run,
    "load": load.run,
    "serve": serve_scenario.run,
}


def parse(argv: list[str]) -> tuple[Config, list[str], str | None]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small workloads (< 60 s in all)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {list(SCENARIOS)}")
    parser.add_argument("--rounds", type=int, help="rounds per scenario (default: 5, quick: 3-5)")
    parser.add_argument("--budget", type=float, help="seconds per scenario before rounds stop")
    parser.add_argument(
        "--pin",
        choices=("cross", "same", "none"),
        default="cross",
        help="CPU placement: this process on one CPU and the servers on another (cross, the "
        "default), all on one CPU (same), or unpinned (none)",
    )
    parser.add_argument("--output", help="also write the Markdown report to this file")
    parser.add_argument(
        "--profile",
        metavar="PEER",
        help="instead of timing, profile (cProfile, caller and portal threads) one run of each "
        "peer whose name contains PEER (case-insensitive)",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}")
    cfg = Config(
        quick=args.quick,
        rounds=args.rounds,
        budget=args.budget,
        profile=args.profile,
        pin=args.pin,
    )
    return cfg, names, args.output


def header(cfg: Config, placement: str) -> str:
    """What was measured, where and when: the first lines of the report."""
    versions = ", ".join(f"{name} {_version(name)}" for name in ("anyio", "trio", "uvloop"))
    try:
        load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "?"
    return (
        f"# duonet benchmarks ({'quick' if cfg.quick else 'full'} run, "
        f"{time.strftime('%Y-%m-%d %H:%M')})\n\n"
        f"duonet {_version('duonet')} at {_revision()}; Python {platform.python_version()}, "
        f"{versions}; {platform.machine()}, {os.cpu_count()} CPUs, load average at start {load}. "
        "anyio's asyncio backend is the stdlib loop (uvloop only where a row says so). "
        "Loopback (127.0.0.1) only; every server (or connecting client) is a separate stdlib "
        f"process; {placement}.\n"
    )


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def _revision() -> str:
    """The git commit of the tree measured (``+dirty`` if src/ has uncommitted changes)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--", "src"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "an unknown revision"
    return f"commit {head}{'+dirty' if dirty else ''}"


def main(argv: list[str]) -> int:
    cfg, names, output = parse(argv)
    placement = pin_cpus(cfg.pin)
    report = [header(cfg, placement)]
    if not cfg.profile:
        print(report[0], flush=True)
    tables: list[Table] = []
    start = time.monotonic()
    try:
        for name in names:
            # A hard stop for a scenario that hangs: dump every thread's stack and exit (the
            # server processes exit when our end of their stdin closes).
            faulthandler.dump_traceback_later(120 if cfg.quick else 900, exit=True)
            result = SCENARIOS[name](cfg)
            faulthandler.cancel_dump_traceback_later()
            for table in result if isinstance(result, list) else [result]:
                tables.append(table)
                if not cfg.profile:
                    report.append(render(table))
                    print(report[-1], flush=True)
    finally:
        close_all_servers()
    if cfg.profile:
        return 0
    report.append(summary(tables, time.monotonic() - start))
    print(report[-1], flush=True)
    if output:
        with open(output, "w", encoding="utf-8") as file:
            file.write("\n".join(report))
    return 0


def summary(tables: list[Table], elapsed: float) -> str:
    lines = [
        "### Targets",
        "",
        "| scenario | peer | target | measured | met? |",
        "|---|---|---|---|---|",
    ]
    for table in tables:
        for row, speed, met in table.verdicts():
            target = row.peer.target
            assert target is not None
            shown = "n/a" if speed is None else f"{speed:.2f}"
            verdict = "n/a" if met is None else ("yes" if met else "**NO**")
            lines.append(f"| {table.key} | {row.peer.name} | {target.text} | {shown} | {verdict} |")
    lines += ["", f"Total time {elapsed:.0f} s.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
