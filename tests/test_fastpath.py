"""The blocking face's fast path (``duonet._core._fastpath``) mirrors the awaited methods.

Each fast-path function stands for the ``AsyncSocket`` method of the same name in the caller's
thread, so it must take exactly that method's parameters (after the socket), with the same names,
kinds and defaults: the blocking ``Socket`` passes one argument list to both.
"""

from __future__ import annotations

import inspect

import pytest

from duonet._core import _fastpath
from duonet.aio import AsyncSocket


@pytest.mark.parametrize("name", _fastpath.__all__)
def test_fast_path_takes_the_awaited_methods_parameters(name: str) -> None:
    fast = list(inspect.signature(getattr(_fastpath, name)).parameters.values())
    awaited = list(inspect.signature(getattr(AsyncSocket, name)).parameters.values())
    assert fast[0].name == "sock"
    assert awaited[0].name == "self"
    shape = [(p.name, p.kind, p.default) for p in fast[1:]]
    assert shape == [(p.name, p.kind, p.default) for p in awaited[1:]]


def test_every_fast_path_function_stands_for_an_awaited_method() -> None:
    for name in _fastpath.__all__:
        assert inspect.iscoroutinefunction(getattr(AsyncSocket, name)), name
        assert not inspect.iscoroutinefunction(getattr(_fastpath, name)), name


def test_the_module_states_the_thread_rule() -> None:
    doc = _fastpath.__doc__ or ""
    assert "thread rule" in doc
    assert "never wait" in doc
    assert "TLS" in doc
