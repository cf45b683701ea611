"""``ws4py.server``: :mod:`~ws4web.compat.ws4py.server.cherrypyserver`,
:mod:`~ws4web.compat.ws4py.server.geventserver` and :mod:`~ws4web.compat.ws4py.server.wsgiutils`."""
