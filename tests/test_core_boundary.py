"""The core (everything outside ``napari_fpminr._napari``) must never import napari or Qt.

Two independent checks: (1) import every core module in a fresh interpreter and assert no GUI
package was loaded as a side effect; (2) scan the core sources' import statements, so that an
import hidden inside a function (never executed by check 1) is caught too.
"""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import napari_fpminr

GUI_PACKAGES = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt", "vispy", "npe2")
PACKAGE_DIR = Path(napari_fpminr.__file__).resolve().parent


def _core_modules() -> list[str]:
    names = ["napari_fpminr"]
    for info in pkgutil.walk_packages([str(PACKAGE_DIR)], prefix="napari_fpminr."):
        if info.name.startswith("napari_fpminr._napari"):
            continue
        names.append(info.name)
    return sorted(names)


def _is_gui(module: str) -> bool:
    return module.split(".")[0] in GUI_PACKAGES


def test_core_modules_exist_to_check():
    mods = _core_modules()
    assert "napari_fpminr.optics.forward" in mods
    assert not any(m.startswith("napari_fpminr._napari") for m in mods)


def test_importing_the_core_loads_no_gui_package():
    mods = _core_modules()
    code = (
        "import importlib, json, sys\n"
        f"mods = {mods!r}\n"
        "failed = {}\n"
        "for m in mods:\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except Exception as exc:\n"
        "        failed[m] = repr(exc)\n"
        f"gui = sorted(k for k in sys.modules if k.split('.')[0] in {GUI_PACKAGES!r})\n"
        "print(json.dumps({'gui': gui, 'failed': failed}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["failed"] == {}, f"core modules failed to import: {result['failed']}"
    assert result["gui"] == [], f"importing the core loaded GUI packages: {result['gui']}"


def test_core_sources_have_no_gui_import_statements():
    offenders = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        rel = path.relative_to(PACKAGE_DIR)
        if rel.parts[0] == "_napari":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offenders += [f"{rel}:{node.lineno} imports {n}" for n in names if _is_gui(n)]
    assert offenders == [], "\n".join(offenders)
