"""The public names: ``__all__`` of each public module, and SPEC's list (``check_spec.py``)."""

from __future__ import annotations

import importlib.util
import re
import types
from pathlib import Path
from typing import Any

import pytest

import duonet
import duonet.aio

MODULES = [duonet, duonet.aio]
#: What ``from __future__ import annotations`` leaves in a module's namespace.
FUTURE_FEATURE = type(importlib.import_module("__future__").annotations)
CHECK_SPEC = Path(__file__).resolve().parents[1].parent / "shared" / "tools" / "check_spec.py"


def public_names(module: types.ModuleType) -> set[str]:
    """Names a user sees: not private, not a module, not a ``from __future__`` feature."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and not isinstance(value, FUTURE_FEATURE)
    }


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_all_is_a_tuple_of_exactly_the_public_names(module: types.ModuleType) -> None:
    exported = module.__all__
    assert isinstance(exported, tuple)
    assert all(isinstance(name, str) for name in exported)
    assert len(set(exported)) == len(exported), "duplicates in __all__"
    assert set(exported) == public_names(module)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_star_import_gives_all(module: types.ModuleType) -> None:
    namespace: dict[str, Any] = {}
    exec(f"from {module.__name__} import *", namespace)
    namespace.pop("__builtins__")
    assert set(namespace) == set(module.__all__)


@pytest.fixture(scope="module")
def check_spec() -> types.ModuleType:
    if not CHECK_SPEC.is_file():
        pytest.skip(f"{CHECK_SPEC} is absent")
    spec = importlib.util.spec_from_file_location("check_spec", CHECK_SPEC)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("modname", "names", "cls", "methods"),
    [
        ("duonet", "BLOCKING", "Socket", "METHODS"),
        ("duonet.aio", "ASYNC", "AsyncSocket", "ASYNC_METHODS"),
    ],
)
def test_every_spec_name_is_present(
    check_spec: types.ModuleType, modname: str, names: str, cls: str, methods: str
) -> None:
    assert (
        check_spec.missing_in(
            modname, getattr(check_spec, names), cls, getattr(check_spec, methods)
        )
        == []
    )
    module = importlib.import_module(modname)
    assert set(getattr(check_spec, names)) <= set(module.__all__)


def test_common_spec_names_importable_from_both(check_spec: types.ModuleType) -> None:
    for name in check_spec.COMMON:
        for module in MODULES:
            namespace: dict[str, Any] = {}
            exec(f"from {module.__name__} import {name}", namespace)
            assert namespace[name] is getattr(module, name)


API_DOC = Path(__file__).resolve().parents[1] / "docs" / "api.rst"


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_every_public_name_is_in_the_api_reference(module: types.ModuleType) -> None:
    """The API page has a directive (``autoclass``, ``autofunction``, ...) for each name."""
    text = API_DOC.read_text(encoding="utf-8")
    missing = [
        name
        for name in module.__all__
        if not re.search(rf"^\.\. [\w:]+::\s+(duonet\.(aio\.)?)?{re.escape(name)}\s*$", text, re.M)
    ]
    assert missing == []


@pytest.mark.parametrize("cls", [duonet.Socket, duonet.aio.AsyncSocket], ids=lambda c: c.__name__)
def test_every_public_method_has_a_docstring(cls: type) -> None:
    """``:members:`` only lists what has a docstring: an undocumented method would vanish."""
    undocumented = [
        name
        for name, member in vars(cls).items()
        if not name.startswith("_") and callable(member) and not (member.__doc__ or "").strip()
    ]
    assert undocumented == []
