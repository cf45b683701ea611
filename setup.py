"""Builds the optional C accelerator; everything else is in setup.cfg.

A machine without a C compiler still installs ws4web: the pure-Python code paths
are complete, the extension (ws4web/_speedups.c) only makes the per-message path
faster: receiving frames, building them, masking. WS4WEB_NO_EXTENSIONS=1 skips the
build on purpose (a pure-Python wheel); WS4WEB_NO_SPEEDUPS=1 ignores a built one.
"""

import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # no compiler, no headers: fall back to pure Python
            print(f"ws4web: C accelerator not built ({exc}); using pure Python")

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            print(f"ws4web: {ext.name} not built ({exc}); using pure Python")


extensions = []
if not os.environ.get("WS4WEB_NO_EXTENSIONS"):
    flags = [] if sys.platform == "win32" else ["-O3", "-Wall", "-Wextra"]
    extensions.append(Extension("ws4web._speedups", ["ws4web/_speedups.c"], optional=True, extra_compile_args=flags))

setup(ext_modules=extensions, cmdclass={"build_ext": OptionalBuildExt})
