"""Sphinx configuration for the ws4web documentation.

Build (warnings are errors; CI and ``tests/test_docs.py`` run exactly this)::

    python3 -m sphinx -W --keep-going -b html docs docs/_build/html

Pages are MyST Markdown (``*.md``), the API reference is reStructuredText under
``api/`` and comes from the docstrings (autodoc). Every ``python``
code block of the pages is run by ``tests/test_docs.py``.
"""

from __future__ import annotations

import importlib.util
import os
import sys

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
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_inventories", "Thumbs.db", ".DS_Store"]
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
# Names of the standard library and of the frameworks link to their own documentation
# through intersphinx. The build has no network: the inventories (objects.inv) are
# committed under _inventories/ (README.md there says where each comes from), and the
# URL is only where the links point.
intersphinx_mapping = {
    "python": ("https://docs.python.org/3.11/", "_inventories/python.inv"),
    "cherrypy": ("https://docs.cherrypy.dev/en/latest/", "_inventories/cherrypy.inv"),
    "gevent": ("https://www.gevent.org/", "_inventories/gevent.inv"),
    "flask": ("https://flask.palletsprojects.com/en/2.2.x/", "_inventories/flask.inv"),
    "werkzeug": ("https://werkzeug.palletsprojects.com/en/2.2.x/", "_inventories/werkzeug.inv"),
}
intersphinx_timeout = 1
# Projects that publish no Sphinx inventory (Starlette, FastAPI, uvicorn: MkDocs) or none we
# could ship: their names stay plain text.
_NO_INVENTORY = r"(starlette|fastapi|uvicorn|hypercorn|redis|python_socks|cheroot|typing_extensions)(\..*)?"
# Signatures name some standard-library types by the private module that defines them
# (``_thread.lock``, ``asyncio.events.AbstractEventLoop``); Python documents them under their
# public names only, so these cannot link.
_STDLIB_PRIVATE = r"(_thread|_io|_socket|_ssl|asyncio\.(events|base_events|futures|tasks|locks|queues|streams))\..*"
_ROLES = ("py:class", "py:obj", "py:exc", "py:data", "py:mod", "py:func", "py:meth", "py:attr")
nitpick_ignore_regex = [(role, pattern) for role in _ROLES for pattern in (_NO_INVENTORY, _STDLIB_PRIVATE)]
nitpick_ignore = [
    # TypeVars in signatures have no page to link to.
    ("py:class", "ws4web.upgrade.W"),
    ("py:class", "ws4web.upgrade.T"),
    ("py:class", "ws4web.adapters.flask.W"),
    ("py:class", "ws4web.compat.twspy.websocket.H"),
    ("py:class", "ws4web.adapters._paths.T"),
    ("py:obj", "ws4web.adapters._paths.T"),
    # Types that exist but that their own documentation does not describe.
    ("py:class", "zlib._Compress"),
    ("py:class", "zlib._Decompress"),
    ("py:class", "werkzeug.serving.WSGIRequestHandler"),
]
# References into ws4web itself resolve the way Sphinx looks names up: under the current
# class, then the current module, then as written. A name re-exported elsewhere (``ws4web.WebSocket``)
# is written with the module that documents it: :class:`ws4web.WebSocket <ws4web.websocket.WebSocket>`
# or :class:`~ws4web.websocket.WebSocket`. The public names of ws4web.pubsub and of the WSGI
# adapters are documented where they are imported from, so both spellings resolve there.

# -- HTML ----------------------------------------------------------------------------
# furo when installed (the docs extra installs it), else Sphinx's built-in theme.
html_theme = "furo" if importlib.util.find_spec("furo") is not None else "alabaster"
html_title = f"ws4web {release}"
html_static_path: list[str] = []
