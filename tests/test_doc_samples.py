"""Every Python sample of README.md and docs/ runs as written, each in a fresh interpreter.

A sample is a ```` ```python ```` block (Markdown) or a ``.. code-block:: python`` block (reST).
Samples are self-contained: those that need a peer start one on loopback themselves (port 0).
A marker right before a block (blank lines between are fine) changes how it is treated:

* ``<!-- sample: fragment -->`` / ``.. sample: fragment``: a fragment on purpose (it reaches a
  public server, or it reads files the reader has): skipped, and checked for syntax only;
* ``<!-- sample: python>=3.13 -->`` / ``.. sample: python>=3.13``: runs on Python 3.13 and newer;
* ``.. sample: logs-tracebacks``: the sample shows what is logged, tracebacks included, so its
  stderr may hold them (it must still exit 0).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Seconds one sample may run.
TIMEOUT = 60
MARKER = re.compile(r"^(?:<!--\s*sample:\s*(?P<md>[^>]*?)\s*-->|\.\. sample:\s*(?P<rst>.+?))\s*$")
#: Names that only a non-loopback peer answers: a sample naming one must be a fragment.
PUBLIC_HOST = re.compile(r"""["'][\w.-]+\.(?:org|com|net|io)["']""")


@dataclass
class Sample:
    path: Path
    line: int
    code: str
    marker: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _marker_before(lines: list[str], index: int) -> str:
    """The marker on the last non-blank line before ``lines[index]``, or ``""``."""
    for line in reversed(lines[:index]):
        if line.strip():
            found = MARKER.match(line.strip())
            return (found.group("md") or found.group("rst")).strip() if found else ""
    return ""


def markdown_samples(path: Path) -> list[Sample]:
    lines = path.read_text(encoding="utf-8").splitlines()
    samples = []
    index = 0
    while index < len(lines):
        if lines[index].strip() == "```python":
            end = lines.index("```", index + 1)
            code = "\n".join(lines[index + 1 : end]) + "\n"
            samples.append(Sample(path, index + 1, code, _marker_before(lines, index)))
            index = end
        index += 1
    return samples


def rst_samples(path: Path) -> list[Sample]:
    lines = path.read_text(encoding="utf-8").splitlines()
    samples = []
    for index, line in enumerate(lines):
        if line.strip() != ".. code-block:: python":
            continue
        indent = len(line) - len(line.lstrip())
        body = []
        for following in lines[index + 1 :]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            body.append(following)
        code = textwrap.dedent("\n".join(body)).strip("\n") + "\n"
        samples.append(Sample(path, index + 1, code, _marker_before(lines, index)))
    return samples


def all_samples() -> list[Sample]:
    samples = markdown_samples(ROOT / "README.md")
    for path in sorted((ROOT / "docs").rglob("*.md")):
        samples += markdown_samples(path)
    for path in sorted((ROOT / "docs").rglob("*.rst")):
        samples += rst_samples(path)
    return samples


SAMPLES = all_samples()


def test_samples_were_found() -> None:
    """A guard on the extraction itself: the README and the guides have samples."""
    assert len(SAMPLES) >= 26
    assert any(s.path.name == "README.md" for s in SAMPLES)
    assert any(s.path.name == "quickstart.rst" for s in SAMPLES)
    assert {s.marker for s in SAMPLES} <= {"", "fragment", "python>=3.13", "logs-tracebacks"}


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda s: s.id)
def test_sample_runs(sample: Sample, tmp_path: Path) -> None:
    ast.parse(sample.code, filename=sample.id)  # even a fragment is valid Python
    if sample.marker == "fragment":
        pytest.skip("a fragment on purpose (marked in the source)")
    if sample.marker == "python>=3.13" and sys.version_info < (3, 13):
        pytest.skip("the sample needs Python 3.13")
    found = PUBLIC_HOST.search(sample.code)
    assert found is None, f"a runnable sample names {found.group()}: mark it a fragment"
    if re.search(r"^async def main\(", sample.code, re.M):
        runs = ("anyio.run(main", "asyncio.run(main())", "trio.run(main")
        assert any(run in sample.code for run in runs), "an async sample shows how it is run"
    script = tmp_path / "sample.py"
    script.write_text(sample.code, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, f"{sample.id}\n{result.stdout}\n{result.stderr}"
    if sample.marker != "logs-tracebacks":
        assert "Traceback" not in result.stderr, result.stderr
    else:
        assert "RuntimeError: this handler is broken" in result.stderr, result.stderr
