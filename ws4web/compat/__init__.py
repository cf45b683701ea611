"""Compatibility layers for programs written for ws4web's predecessors: :mod:`ws4web.compat.ws4py` and
:mod:`ws4web.compat.twspy`.

Kept out of the core: nothing else in ws4web imports them. docs/migrating-from-ws4py.md and
docs/migrating-from-twspy.md map every public name of each predecessor to its ws4web form.
"""
