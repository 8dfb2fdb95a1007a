"""The public names: ``__all__`` of each public module against the code and against ``SPEC.md``.

``SPEC.md`` (at the repository's root) is the contract. Its name tables are read here: the first
column of each row names what the row pins (``name(...)``, ``Socket.method(...)``, ``aio.name``,
``ctx.attribute``, ``Enum.MEMBER, MEMBER``), and each such name must exist in the code.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import pickle
import re
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import anyio.abc
import pytest

import duonet
import duonet.aio

ROOT = Path(__file__).resolve().parents[1]
SPEC = ROOT / "SPEC.md"
MODULES = [duonet, duonet.aio]

#: SPEC names of the second release that this branch does not have yet: each is expected to be
#: missing (a strict xfail), so the test fails as soon as one appears. Empty it as they land.
NOT_YET: frozenset[str] = frozenset()

#: Names of one face only (the SPEC's tables list them once, with the blocking spelling).
ONLY = {
    "Socket": "duonet",
    "new_socket": "duonet",
    "configure": "duonet",
    "__version__": "duonet",
    "AsyncSocket": "duonet.aio",
    "new_async_socket": "duonet.aio",
}
#: Words that open a first-column span without naming a duonet name: keywords (``with`` /
#: ``async with``, ``for line in sock``) and what duonet's names are made of (``bytes``, ``enum``).
NOT_NAMES = {"with", "async", "for", "anyio", "bytes", "enum", "duonet"}


def _sections() -> dict[str, list[str]]:
    """SPEC.md's ``## `` sections: title -> the first cells of its table rows."""
    sections: dict[str, list[str]] = {}
    title = ""
    for line in SPEC.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            title = line[3:]
            sections[title] = []
        elif line.startswith("| ") and not line.startswith("|---"):
            first = re.split(r"(?<!\\)\|", line)[1].strip()
            if first not in ("Python", "method", "name", "argument"):
                sections[title].append(first)
    return sections


def _spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def spec_names() -> dict[str, set[str]]:
    """What SPEC.md pins: names per module, methods per class, enum members, ctx attributes."""
    found: dict[str, set[str]] = {
        "duonet": set(),
        "duonet.aio": set(),
        "Socket": set(),
        "AsyncSocket": set(),
        "SslContext": set(),
        "enum members": set(),
    }
    for title, cells in _sections().items():
        methods_table = title.startswith("`Socket`")
        if title.startswith("Arguments"):
            continue  # rows name parameters, not names
        for cell in cells:
            blocking_only = "(blocking)" in cell
            for span in _spans(cell):
                head = re.match(r"[A-Za-z_][\w.]*", span)
                if head is None:
                    continue
                path = head.group().rstrip(".").split(".")
                if path[0] in NOT_NAMES:
                    continue
                if path[0] in ("Socket", "AsyncSocket") and len(path) > 1:
                    found[path[0]].add(path[1])
                elif path[0] == "aio":
                    found["duonet.aio"].add(path[1])
                elif path[0] == "ctx":
                    found["SslContext"].add(path[1])
                elif methods_table:
                    for cls in ("Socket", "AsyncSocket"):
                        found[cls].add(path[0])
                else:
                    name = path[0]
                    faces = [ONLY[name]] if name in ONLY else ["duonet", "duonet.aio"]
                    if blocking_only:
                        faces = ["duonet"]
                    for face in faces:
                        found[face].add(name)
                    if len(path) > 1:  # Enum.MEMBER, MEMBER / .MEMBER
                        members = re.findall(r"\b[A-Z][A-Z0-9_]+\b", span.split(".", 1)[1])
                        found["enum members"] |= {f"{name}.{m}" for m in members}
    return found


SPEC_NAMES = spec_names()


def _expect(label: str, present: bool) -> None:
    if label in NOT_YET:
        if present:
            pytest.fail(f"{label} is implemented now: remove it from NOT_YET")
        pytest.xfail(f"{label}: second release, not on this branch yet")
    assert present, f"SPEC.md names {label}, which the code lacks"


def test_spec_tables_were_read() -> None:
    """A guard on the parser itself: a reformatted SPEC.md must not make every check vacuous."""
    assert {"Socket", "dial", "parse_ip_address", "SslError", "serve", "Server"} <= SPEC_NAMES[
        "duonet"
    ]
    assert {"AsyncSocket", "new_async_socket", "serve", "Server"} <= SPEC_NAMES["duonet.aio"]
    assert "Socket" not in SPEC_NAMES["duonet.aio"]
    assert {"recv_line", "read_line_nowait", "lines", "send_file"} <= SPEC_NAMES["Socket"]
    assert {"receive", "aclose", "send_eof"} <= SPEC_NAMES["AsyncSocket"]
    assert {"get_extra_data", "session_id_context"} <= SPEC_NAMES["SslContext"]
    assert {"SOBool.NO_DELAY", "SslCVerifyMode.PEER_USE_ENV_VARS"} <= SPEC_NAMES["enum members"]


@pytest.mark.parametrize(
    ("module", "name"),
    sorted((m, n) for m in ("duonet", "duonet.aio") for n in SPEC_NAMES[m]),
)
def test_every_spec_name_is_in_the_module(module: str, name: str) -> None:
    mod = importlib.import_module(module)
    _expect(f"{module}.{name}", hasattr(mod, name))
    assert name in mod.__all__ or name == "__version__"


@pytest.mark.parametrize(
    ("cls", "name"), sorted((c, n) for c in ("Socket", "AsyncSocket") for n in SPEC_NAMES[c])
)
def test_every_spec_method_is_on_the_class(cls: str, name: str) -> None:
    klass = duonet.Socket if cls == "Socket" else duonet.aio.AsyncSocket
    if name == "with":
        name = "__enter__" if cls == "Socket" else "__aenter__"
    _expect(f"{cls}.{name}", hasattr(klass, name))


@pytest.mark.parametrize(("cls", "name"), [("Socket", "__iter__"), ("AsyncSocket", "__aiter__")])
def test_iteration_over_lines(cls: str, name: str) -> None:
    klass = duonet.Socket if cls == "Socket" else duonet.aio.AsyncSocket
    _expect(f"{cls}.{name}", hasattr(klass, name))


def test_async_socket_is_an_anyio_byte_stream() -> None:
    _expect(
        "AsyncSocket is an anyio.abc.ByteStream",
        issubclass(duonet.aio.AsyncSocket, anyio.abc.ByteStream),
    )


@pytest.mark.parametrize("member", sorted(SPEC_NAMES["enum members"]))
def test_every_spec_enum_member(member: str) -> None:
    enum_name, name = member.split(".")
    assert hasattr(getattr(duonet, enum_name), name)


@pytest.mark.parametrize("name", sorted(SPEC_NAMES["SslContext"]))
def test_every_spec_context_attribute(name: str) -> None:
    ctx = duonet.new_context(verify_mode=duonet.SslCVerifyMode.NONE)
    assert hasattr(ctx, name)


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_every_public_name_is_in_the_spec(module: types.ModuleType) -> None:
    """Nothing public goes unpinned: each name of ``__all__`` has a row in SPEC.md."""
    assert set(module.__all__) - SPEC_NAMES[module.__name__] == set()


def test_common_names_are_the_same_objects_in_both() -> None:
    faces_differ = {"dial", "wrap_connected_socket", "serve", "serve_unix", "Server"}
    common = set(duonet.__all__) & set(duonet.aio.__all__) - faces_differ
    assert {"SslError", "IpAddress", "SOBool", "new_context"} <= common
    for name in common:
        assert getattr(duonet, name) is getattr(duonet.aio, name), name


# -- __all__, dir() and lazy loading ----------------------------------------------------------

#: What ``from __future__ import annotations`` leaves in a module's namespace.
FUTURE_FEATURE = type(importlib.import_module("__future__").annotations)


def public_names(module: types.ModuleType) -> set[str]:
    """Names a user sees: not private, not a module, not a ``from __future__`` feature."""
    return {
        name
        for name in dir(module)
        if not name.startswith("_")
        and not isinstance(getattr(module, name), (types.ModuleType, FUTURE_FEATURE))
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


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_unknown_name_is_an_attribute_error(module: types.ModuleType) -> None:
    message = rf"module '{module.__name__}' has no attribute 'nope'"
    with pytest.raises(AttributeError, match=message):
        module.nope  # noqa: B018
    assert not hasattr(module, "new_sockett")


LIGHT = """
import sys
import duonet
heavy = {"asyncio", "anyio", "certifi", "trio"}
assert not heavy & set(sys.modules), heavy & set(sys.modules)
ip = duonet.parse_ip_address("2001:DB8::1")
assert str(ip) == "2001:db8::1" and ip.family is duonet.IpAddressFamily.IPV6
assert duonet.is_ip_address("1.2.3.4") and not duonet.is_ip_address("01.2.3.4")
assert str(duonet.ipv4_loopback()) == "127.0.0.1"
assert duonet.SocketFlag.SAFE_DISCONN in duonet.SocketFlag.SAFE_DISCONN | duonet.SocketFlag.PEEK
assert duonet.SOBool.NO_DELAY and duonet.ReadLineResult.NONE and duonet.SslCVerifyMode.PEER
assert issubclass(duonet.SslError, OSError) and issubclass(duonet.BusyError, RuntimeError)
assert duonet.SocketClosedError and duonet.TimeoutError is TimeoutError
assert duonet.SslError.__module__ == "duonet"
assert duonet.is_disconnection_error(duonet.SocketFlag.SAFE_DISCONN, 104)
assert not heavy & set(sys.modules), heavy & set(sys.modules)
print("light")
"""


def test_import_duonet_loads_no_event_loop_machinery() -> None:
    """``import duonet`` (and IP addresses, enums, errors) load none of asyncio, anyio, certifi."""
    result = subprocess.run(
        [sys.executable, "-c", LIGHT], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "light\n"


def test_lazy_names_load_on_first_use() -> None:
    code = (
        "import sys, duonet\n"
        "duonet.new_context(verify_mode=duonet.SslCVerifyMode.NONE)\n"
        "assert 'asyncio' not in sys.modules\n"
        "assert 'certifi' not in sys.modules\n"
        "duonet.new_context()\n"
        "assert 'certifi' in sys.modules\n"
        "duonet.new_socket().close()\n"
        "assert 'anyio' in sys.modules\n"
        "print(sorted(set(duonet.__all__) - set(vars(duonet))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("[")


# -- __module__: public names, not private modules -----------------------------------------------


def _objects(module: types.ModuleType) -> list[tuple[str, Any]]:
    return [
        (name, getattr(module, name))
        for name in module.__all__
        if isinstance(getattr(module, name), type) or inspect.isfunction(getattr(module, name))
    ]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_every_public_class_and_function_shows_its_public_module(module: types.ModuleType) -> None:
    wrong = {}
    for name, obj in _objects(module):
        if obj.__module__ == "builtins":
            continue  # Port, Certificate, TimeoutError: aliases of builtins
        shared = getattr(duonet, name, None) is obj
        expected = "duonet" if shared else module.__name__
        if obj.__module__ != expected:
            wrong[name] = obj.__module__
    assert wrong == {}


def test_public_modules_named() -> None:
    assert duonet.Socket.__module__ == "duonet"
    assert duonet.aio.AsyncSocket.__module__ == "duonet.aio"
    assert duonet.aio.dial.__module__ == "duonet.aio"
    assert duonet.dial.__module__ == "duonet"
    for cls in (duonet.SslError, duonet.BusyError, duonet.SocketClosedError, duonet.IpAddress):
        assert cls.__module__ == "duonet"
        assert repr(cls) == f"<class 'duonet.{cls.__name__}'>"
    assert duonet.SslContext.__module__ == "duonet"
    assert duonet.aio.SOBool.__module__ == "duonet"


def test_errors_raised_by_the_library_show_duonet() -> None:
    code = (
        "import duonet\n"
        "sock = duonet.new_socket()\n"
        "sock.close()\n"
        "try:\n"
        "    sock.send(b'x')\n"
        "except OSError as exc:\n"
        "    print(type(exc).__module__, type(exc).__name__)\n"
        "ctx = duonet.new_context(verify_mode=duonet.SslCVerifyMode.NONE)\n"
        "try:\n"
        "    ctx.get_extra_data(99)\n"
        "except Exception as exc:\n"
        "    print(type(exc).__module__, type(exc).__name__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["duonet SocketClosedError", "duonet SslError"]


@pytest.mark.parametrize(
    "value",
    [
        duonet.SocketFlag.SAFE_DISCONN | duonet.SocketFlag.PEEK,
        duonet.SOBool.NO_DELAY,
        duonet.SslCVerifyMode.PEER,
        duonet.ReadLineResult.FULL_LINE,
        duonet.IpAddressFamily.IPV6,
    ],
    ids=repr,
)
def test_enums_pickle_and_repr_through_the_public_module(value: enum.Enum) -> None:
    assert pickle.loads(pickle.dumps(value)) is value
    assert repr(value).startswith(f"<{type(value).__name__}.")


def test_objects_pickle_through_the_public_module() -> None:
    ip = duonet.parse_ip_address("::1")
    assert pickle.loads(pickle.dumps(ip)) == ip
    err = pickle.loads(pickle.dumps(duonet.SslError("certificate verify failed")))
    assert type(err) is duonet.SslError
    assert b"duonet\x94" in pickle.dumps(duonet.SslError) or b"cduonet\n" in pickle.dumps(
        duonet.SslError, protocol=0
    )


# -- the API reference ------------------------------------------------------------------------

API_DOC = ROOT / "docs" / "api.rst"


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
