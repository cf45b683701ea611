"""Sphinx configuration for the ws4web documentation.

Build (warnings are errors; CI and ``tests/test_docs.py`` run exactly this)::

    python3 -m sphinx -W --keep-going -b html docs docs/_build/html

Pages are MyST Markdown (``*.md``), the API reference is reStructuredText under
``api/`` and comes from the docstrings (autodoc). Every ``python``
code block of the pages is run by ``tests/test_docs.py``.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.util
import os
import re
import sys
from typing import TYPE_CHECKING, cast

from sphinx.util.nodes import make_refnode

if TYPE_CHECKING:
    from docutils.nodes import Element  # type: ignore[import-untyped,unused-ignore]
    from sphinx.addnodes import pending_xref
    from sphinx.application import Sphinx
    from sphinx.domains.python import PythonDomain
    from sphinx.environment import BuildEnvironment

# Document the checkout, not whatever ws4web happens to be installed.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import ws4web  # noqa: E402

project = "ws4web"
author = "the ws4web authors"
copyright = "the ws4web authors"
release = ws4web.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
language = "en"

# -- MyST ----------------------------------------------------------------------------
# Headings get anchors so pages can link to sections ([text](page.md#section)).
myst_heading_anchors = 3
myst_enable_extensions = ["deflist"]

# -- autodoc -------------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_default_options = {
    "members": True,
    "undoc-members": True,
    "show-inheritance": True,
}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True

# -- cross-references ----------------------------------------------------------------
# Every reference must resolve: a broken :class:/:meth: in a docstring fails the build.
nitpicky = True
# There is no network on the build machines, so intersphinx cannot load the Python
# inventory: references into the standard library (every module CPython lists in
# sys.stdlib_module_names, and the builtins) cannot resolve here, nor those into the
# frameworks the adapters wrap. They are ignored by module prefix. References to
# ws4web itself are not in this list and must resolve.
_STDLIB = "|".join(sorted(re.escape(name) for name in sys.stdlib_module_names if not name.startswith("_")))
_BUILTINS = "|".join(sorted(name for name in dir(builtins) if not name.startswith("_")))
_EXTERNAL = (
    rf"(builtins\.)?({_BUILTINS})",
    rf"({_STDLIB})(\..*)?",
    r"_io\..*|_thread\..*|typing_extensions\..*",
    r"(cherrypy|cheroot|gevent|starlette|uvicorn|hypercorn|redis|python_socks|flask|werkzeug)(\..*)?",
)
_ROLES = ("py:class", "py:obj", "py:exc", "py:data", "py:mod", "py:func", "py:meth", "py:attr")
nitpick_ignore_regex = [(role, pattern) for role in _ROLES for pattern in _EXTERNAL]
# TypeVars in signatures have no page to link to.
nitpick_ignore = [
    ("py:class", "ws4web.upgrade.W"),
    ("py:class", "ws4web.upgrade.T"),
    ("py:class", "ws4web.adapters.flask.W"),
]

# -- HTML ----------------------------------------------------------------------------
# furo when installed (the docs extra installs it), else Sphinx's built-in theme.
html_theme = "furo" if importlib.util.find_spec("furo") is not None else "alabaster"
html_title = f"ws4web {release}"
html_static_path: list[str] = []


# -- resolving names the way Python does ---------------------------------------------
# Docstrings name things as the module they live in sees them: ``WebSocket.run`` in
# ws4web.server (which imports WebSocket), ``Hub`` in ws4web.pubsub (a re-export),
# ``ws4web.WebSocket``. Sphinx only looks for such a name under the current module
# and class, so these would be reported as broken. This resolver imports the module
# the docstring belongs to, follows the name through its attributes exactly as
# Python would, and links to the object's documented definition. A name that does
# not exist there, or whose target is not documented, stays a broken reference and
# fails the build.


def _canonical_names(obj: object, found_in: str) -> list[str]:
    """The documented names ``obj`` may go by: where it was defined, then where it was found."""
    names = []
    target = obj.fget if isinstance(obj, property) and obj.fget is not None else obj
    module = getattr(target, "__module__", None)
    qualname = getattr(target, "__qualname__", None)
    if isinstance(module, str) and isinstance(qualname, str) and "<locals>" not in qualname:
        names.append(f"{module}.{qualname}")
    names.append(found_in)
    return names


def _follow(start: str, dotted: str) -> tuple[object, str] | None:
    """Look ``dotted`` up from module ``start`` (or from the top when ``start`` is empty)."""
    parts = dotted.split(".")
    obj: object
    if start:
        try:
            obj = importlib.import_module(start)
        except ImportError:
            return None
        path = start
    else:  # an absolute name: import the longest module prefix
        for cut in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            path, parts = ".".join(parts[:cut]), parts[cut:]
            break
        else:
            return None
    for part in parts:
        try:
            obj = getattr(obj, part)
        except AttributeError:
            return None
        path = f"{path}.{part}"
    return obj, path


def _documented_alias(domain: PythonDomain, obj: object) -> str | None:
    """The documented module-level name bound to this very object (type aliases, constants)."""
    for name, entry in domain.objects.items():
        if entry.objtype != "data" or not name.startswith("ws4web."):
            continue
        module, _, attr = name.rpartition(".")
        try:
            if getattr(importlib.import_module(module), attr, None) is obj:
                return str(name)
        except ImportError:
            continue
    return None


def _resolve(app: Sphinx, env: BuildEnvironment, node: pending_xref, contnode: Element) -> Element | None:
    if node.get("refdomain") != "py":
        return None
    domain = cast("PythonDomain", env.get_domain("py"))
    target = node["reftarget"].lstrip(".~")
    module = node.get("py:module") or ""
    cls = node.get("py:class") or ""
    roles = domain.objtypes_for_role(node["reftype"]) or []
    # Where Python would look: the class the docstring is in, its module, then the top.
    scopes = [(module, f"{cls}.{target}")] if module and cls else []
    scopes += [(module, target)] if module else []
    scopes += [("", target)]
    candidates: list[str] = []
    found: tuple[object, str] | None = None
    for start, dotted in scopes:
        found = _follow(start, dotted)
        if found is not None:
            candidates += _canonical_names(*found)
            break
    if found is None and module and not cls and "." not in target:
        # A module docstring naming a method of the module's class (``:meth:`opened```
        # in ws4web.websocket): accepted only if exactly one class there has it.
        owners = [
            value
            for value in vars(importlib.import_module(module)).values()
            if isinstance(value, type) and value.__module__ == module and target in vars(value)
        ]
        if len(owners) == 1:
            candidates.append(f"{module}.{owners[0].__qualname__}.{target}")
    if found is not None and not any(name in domain.objects for name in candidates):
        alias = _documented_alias(domain, found[0])
        if alias is not None:
            candidates.append(alias)
    for name in candidates:
        entry = domain.objects.get(name)
        if entry is not None and (not roles or entry.objtype in roles):
            return make_refnode(app.builder, node["refdoc"], entry.docname, entry.node_id, contnode, name)
    if found is not None and target.rpartition(".")[2].startswith("_"):
        # A private name that exists (a docstring explaining an internal step): there is
        # no page for private members, so it stays plain text; it is not a broken reference.
        return contnode
    return None


def setup(app: Sphinx) -> None:
    app.connect("missing-reference", _resolve)
