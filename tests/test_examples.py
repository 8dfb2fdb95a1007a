"""Every example runs (against loopback) and exits 0; so does the demo and the CLI basics."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


@pytest.mark.parametrize("example", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_runs(example: Path) -> None:
    extra = ["--selftest"] if example.stem.startswith("echo_server") else []
    result = _run(str(example), *extra)
    assert result.returncode == 0, result.stdout + result.stderr


def test_async_echo_example_on_trio() -> None:
    result = _run(str(ROOT / "examples" / "echo_server_async.py"), "trio", "--selftest")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "b'ping'" in result.stdout


def test_demo() -> None:
    result = _run("-m", "duonet", "demo")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "every step succeeded" in result.stdout
    for step in ("blocking", "asyncio", "trio", "nothing lost"):
        assert step in result.stdout


def test_cli_ip_parse() -> None:
    result = _run("-m", "duonet", "ip", "parse", "2001:DB8:0:0:0:0:0:1")
    assert result.returncode == 0
    assert result.stdout.strip() == "2001:db8::1 (IPV6)"
    bad = _run("-m", "duonet", "ip", "parse", "01.2.3.4")
    assert bad.returncode == 1
    assert "01.2.3.4" in bad.stderr


def test_cli_connect_refused_exit_code() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connecting is refused
        result = _run("-m", "duonet", "connect", "127.0.0.1", str(port), "--timeout", "5")
    assert result.returncode == 1
    assert "refused" in result.stderr.lower()
    assert str(port) in result.stderr
