"""Tests that the ws4web core imports nothing outside the standard library."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ws4web"

# Run in a fresh interpreter: the test process has pytest, hypothesis and maybe
# adapters loaded already. The script reports what importing added to sys.modules.
SCRIPT = """
import importlib, json, sys
sys.path.insert(0, sys.argv[1])
before = set(sys.modules)
for name in sys.argv[2:]:
    importlib.import_module(name)
print(json.dumps(sorted(set(sys.modules) - before)))
"""


# The chat demo's apps on a framework: applications of the adapters, not core. And
# ws4web.testing, which adds a pytest fixture when pytest is there (tested below).
FRAMEWORK_APPS = {
    "ws4web/demo/cherrypy_app.py",
    "ws4web/demo/gevent_app.py",
    "ws4web/demo/asgi_app.py",
    "ws4web/testing.py",
}


def core_modules() -> list[str]:
    """Every module under ws4web/ except the adapters, the compatibility layers (which import
    frameworks, as adapters do) and what runs on them, found on disk."""
    names = []
    for path in sorted(PACKAGE.rglob("*")):
        relative = path.relative_to(ROOT)
        if (
            relative.parts[1] in ("adapters", "compat")
            or "__pycache__" in relative.parts
            or relative.as_posix() in FRAMEWORK_APPS
        ):
            continue
        if path.suffix == ".py":
            parts = list(relative.with_suffix("").parts)
        elif path.suffix in (".so", ".pyd"):
            parts = [*relative.parts[:-1], path.name.split(".")[0]]
        else:
            continue
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


def imported_by(*names: str) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-I", "-c", SCRIPT, str(ROOT), *names],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    added: list[str] = json.loads(result.stdout)
    return added


def outside_stdlib(modules: list[str]) -> list[str]:
    return [
        name
        for name in modules
        if name.partition(".")[0] not in sys.stdlib_module_names and name.partition(".")[0] != "ws4web"
    ]


def test_the_core_is_found() -> None:
    modules = core_modules()
    for expected in ("ws4web", "ws4web.frames", "ws4web.protocol", "ws4web.handshake", "ws4web.extensions.base"):
        assert expected in modules
    assert not any(name.startswith(("ws4web.adapters", "ws4web.compat")) for name in modules)
    assert "ws4web.demo.stdlib_app" in modules and "ws4web.demo.asgi_app" not in modules
    assert all((ROOT / path).is_file() for path in FRAMEWORK_APPS)


def test_whole_core_uses_stdlib_only() -> None:
    modules = core_modules()
    added = imported_by(*modules)
    assert set(modules) <= set(added)
    assert outside_stdlib(added) == []
    assert [name for name in added if name.startswith("ws4web.adapters")] == []


@pytest.mark.parametrize("module", core_modules())
def test_each_core_module_alone(module: str) -> None:
    added = imported_by(module)
    assert module in added
    assert outside_stdlib(added) == []
    assert [name for name in added if name.startswith("ws4web.adapters")] == []


def test_the_testing_module_needs_nothing_but_the_standard_library_and_optional_pytest() -> None:
    added = imported_by("ws4web.testing")
    outside = sorted(
        {name.split(".")[0] for name in added}
        - set(sys.stdlib_module_names)
        - {"ws4web", "pytest", "_pytest", "pluggy", "iniconfig", "packaging", "py", "pygments"}
        - {"exceptiongroup", "tomli"}
    )
    assert outside == []
