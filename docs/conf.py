"""Sphinx configuration of duonet's documentation.

``nox -s docs`` builds it with warnings as errors::

    sphinx-build -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import os
import sys

from docutils.nodes import Element
from sphinx.addnodes import pending_xref
from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util import logging
from sphinx.util.inspect import safe_getattr

# Document the source tree itself, whether or not duonet is installed in the building venv.
sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "src")))

import duonet
import duonet.aio
from duonet import _exports

# -- Project -----------------------------------------------------------------------------------

project = "duonet"
author = "The duonet team"
copyright = "The duonet team"
release = duonet.__version__
version = ".".join(release.split(".")[:2])

# -- General -----------------------------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinxcontrib_trio",  # renders ``async def`` functions and methods as "await ..."
    "myst_parser",  # spec.rst includes the repository's SPEC.md (Markdown)
]
myst_heading_anchors = 3
# No sphinx.ext.intersphinx: the build machine may be offline, and a failed inventory fetch is a
# warning, which -W turns into a failed build. References to the stdlib are therefore left
# unresolved on purpose (see nitpick_ignore_regex).

exclude_patterns = ["_build"]
source_suffix = {".rst": "restructuredtext"}  # Markdown only where a page includes it
smartquotes = False  # quotes in this documentation are mostly literal strings, keep them straight
nitpicky = True  # every cross-reference must resolve (or be listed below, with the reason)

nitpick_ignore_regex = [
    # The stdlib and the libraries duonet stands on: no inventory to resolve them against.
    (
        r"py:.*",
        r"(socket|ssl|ipaddress|enum|os|collections\.abc|types|typing|anyio|trio|asyncio)(\..+)?",
    ),
    (r"py:.*", r"OSError\..+"),  # :attr:`~OSError.errno` in get_primary_ip_addr's docstring
]
nitpick_ignore = [
    # duonet.configure's docstring links :func:`reset`, which is duonet._portal.reset: private,
    # not exported, so not documented. To drop once the docstring no longer links it.
    ("py:func", "reset"),
]

# -- autodoc and napoleon ----------------------------------------------------------------------

autodoc_member_order = "bysource"
# sphinxcontrib-trio extends autodoc's class-based documenters. With Sphinx 9's new documenters
# coroutines are still marked, but module-level functions lost autodoc_preserve_defaults
# (``protocol: int = 6`` instead of ``socket.IPPROTO_TCP``). Older Sphinx ignores this setting.
autodoc_use_legacy_class_based = True
autodoc_typehints = "signature"
autodoc_preserve_defaults = True  # `socket.AF_INET`, not `<AddressFamily.AF_INET: 2>`

napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# -- HTML --------------------------------------------------------------------------------------

html_theme = "furo"
html_title = f"duonet {release}"
html_static_path: list[str] = []

# -- Local hooks -------------------------------------------------------------------------------

logger = logging.getLogger("duonet-docs")


def _napoleon_properties_as_methods(app: Sphinx) -> None:
    """Let napoleon read a property's docstring as ordinary prose.

    napoleon reads the first line of an attribute or property docstring as ``type: description``
    when it holds a colon, so ``"The client's PSK function: ``f(hint)`` ..."`` would render with
    the *type* "The client's PSK function". duonet's property types come from annotations, never
    from docstrings, so napoleon is told that a property is a method: sections (``Raises:``) are
    still parsed, the first line is left alone.
    """
    from sphinx.ext.napoleon import _process_docstring

    for listener in list(app.events.listeners["autodoc-process-docstring"]):
        if listener.handler is _process_docstring:
            app.disconnect(listener.id)

            def process(
                app: Sphinx, what: str, name: str, obj: object, options: object, lines: list[str]
            ) -> None:
                _process_docstring(
                    app, "method" if what == "property" else what, name, obj, options, lines
                )

            app.connect("autodoc-process-docstring", process, priority=listener.priority)


def _drop_builtin_docstrings(
    app: Sphinx, what: str, name: str, obj: object, options: object, lines: list[str]
) -> None:
    """Give constants no docstring rather than their type's (``int([x]) -> integer ...``).

    A module-level ``#:`` comment documents a constant only in the module that defines it, and
    duonet's constants are defined in private modules and re-exported, so autodoc would fall back
    to ``int.__doc__`` / ``str.__doc__``. api.rst gives each constant its text instead.
    """
    if what == "data" and type(obj).__module__ == "builtins" and not isinstance(obj, type):
        lines.clear()


def _resolve_shared_names(
    app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: Element
) -> Element | None:
    """Resolve a reference to a shared name made from :mod:`duonet.aio` to its entry in duonet.

    ``duonet.aio.IpAddress`` *is* ``duonet.IpAddress`` and is documented once, as the latter; a
    docstring of ``AsyncSocket`` that writes :class:`IpAddress` (rightly, in its module) lands
    there.
    """
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"]
    if target.startswith("duonet.aio."):
        name = target.removeprefix("duonet.aio.")
    elif node.get("py:module") == "duonet.aio" and not target.startswith("duonet."):
        name = target
    else:
        return None
    head = name.split(".")[0]
    if head not in duonet.aio.__all__:
        return None
    if getattr(duonet, head, None) is not getattr(duonet.aio, head):
        return None
    return env.get_domain("py").resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], f"duonet.{name}", node, contnode
    )


def _qualify_flag_defaults(
    app: Sphinx,
    what: str,
    name: str,
    obj: object,
    options: object,
    signature: str | None,
    return_annotation: str | None,
) -> tuple[str, str | None] | None:
    """Show ``flags=SocketFlag.SAFE_DISCONN``, not the source's module-private ``SAFE_DISCONN``.

    With ``autodoc_preserve_defaults`` a default is shown as written in the source, and duonet's
    sources write ``flags: SocketFlag = SAFE_DISCONN`` with a private module-level alias.
    """
    if signature and "= SAFE_DISCONN" in signature:
        return signature.replace("= SAFE_DISCONN", "= SocketFlag.SAFE_DISCONN"), return_annotation
    return None


def _check_api_coverage(app: Sphinx, env: BuildEnvironment) -> None:
    """Warn (an error under -W) when a name of ``__all__`` is missing from the API reference.

    ``api.rst`` groups the names by topic instead of dumping ``automodule :members:``, so a name
    added to ``duonet.__all__`` or ``duonet.aio.__all__`` must fail the build until it is placed.
    A name of ``duonet.aio`` that is the same object as ``duonet``'s is documented once, there.
    """
    objects = {entry[0] for entry in env.get_domain("py").get_objects()}
    for name in duonet.__all__:
        if f"duonet.{name}" not in objects:
            logger.warning("duonet.%s is in __all__ but not in docs/api.rst", name)
    for name in duonet.aio.__all__:
        shared = getattr(duonet, name, None) is getattr(duonet.aio, name)
        if not shared and f"duonet.aio.{name}" not in objects:
            logger.warning("duonet.aio.%s is in __all__ but not in docs/api.rst", name)


def _defining_module(obj: object, name: str, *default: object) -> object:
    """Give autodoc the private module that defines a public class, for its members' order and
    their ``#:`` comments.

    Public objects say ``__module__ == "duonet"`` (or ``"duonet.aio"``) at run time, but their
    source is in a private module; autodoc reads ``__module__`` to find the source it analyzes
    (``autodoc_member_order = "bysource"``, attribute comments of enums).
    """
    if name == "__module__":
        public = getattr(obj, "__module__", None)
        table = _exports.TABLES.get(public) if isinstance(public, str) else None
        private = table.get(getattr(obj, "__name__", "")) if table else None
        if private is not None:
            return f"duonet.{private}"
    return safe_getattr(obj, name, *default)


def setup(app: Sphinx) -> None:
    app.add_autodoc_attrgetter(type, _defining_module)
    _napoleon_properties_as_methods(app)
    app.connect("autodoc-process-docstring", _drop_builtin_docstrings, priority=400)
    app.connect("autodoc-process-signature", _qualify_flag_defaults)
    app.connect("missing-reference", _resolve_shared_names)
    app.connect("env-check-consistency", _check_api_coverage)
