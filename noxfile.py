"""nox sessions: tests on every Python 3.10-3.13 found, lint, typecheck, docs, package, bench,
stress. Get nox with the ``dev`` extra: ``.venv/bin/pip install -e '.[dev]'``, then run
``.venv/bin/nox``.

Missing interpreters are skipped, not failed. On machines with pyenv, every installed 3.10-3.13 is
made visible to nox (PYENV_VERSION), so ``nox -s tests`` runs them all.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import nox

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
nox.options.error_on_missing_interpreters = False
nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.default_venv_backend = "venv"


def _expose_pyenv_versions() -> None:
    pyenv = shutil.which("pyenv")
    if not pyenv or os.environ.get("PYENV_VERSION"):
        return
    try:
        out = subprocess.run(
            [pyenv, "versions", "--bare"], capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return
    chosen = []
    for minor in PYTHONS:
        found = [v for v in out if re.fullmatch(re.escape(minor) + r"\.\d+", v)]
        if found:
            chosen.append(max(found, key=lambda v: int(v.rsplit(".", 1)[1])))
    if chosen:
        os.environ["PYENV_VERSION"] = ":".join(chosen)


_expose_pyenv_versions()


def tests_impl(session: nox.Session, *args: str) -> None:
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", *args, *session.posargs)


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """The test suite (what the README runs), on each Python found."""
    tests_impl(session)


@nox.session(python="3.11")
def lowest(session: nox.Session) -> None:
    """The test suite against the lowest anyio that pyproject.toml allows (4.10)."""
    session.install("-e", ".[test]", "anyio==4.10.*")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python=PYTHONS[-1])
def stress(session: nox.Session) -> None:
    """Long property and reliability runs (DUONET_STRESS=1 multiplies the examples)."""
    session.env["DUONET_STRESS"] = "1"
    tests_impl(session, "-p", "no:cacheprovider", "--timeout=1800")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff==0.17.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the library."""
    session.install("-e", ".[test]", "mypy==2.4.1")
    session.run("mypy", "--strict", "src")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the docs with warnings as errors."""
    session.install("-e", ".[docs]")
    session.run("sphinx-build", "-W", "--keep-going", "-b", "html", "docs", "docs/_build/html")


@nox.session
def package(session: nox.Session) -> None:
    """Build the wheel and the sdist into dist/ and check them (metadata, README rendering)."""
    session.install("build", "twine")
    shutil.rmtree("dist", ignore_errors=True)
    session.run("python", "-m", "build")
    session.run("twine", "check", "--strict", *sorted(str(p) for p in Path("dist").iterdir()))


@nox.session
def bench(session: nox.Session) -> None:
    """Every benchmark scenario, side by side with the stdlib, asyncio, anyio and trio."""
    session.install("-e", ".[test,uvloop]")
    session.run("python", "-m", "benchmarks", *session.posargs)
