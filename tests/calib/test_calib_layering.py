"""``napari_fpminr.calib`` sits at the recon level: it never imports io, cli, volume or the napari glue."""

from __future__ import annotations

import ast
from pathlib import Path

import napari_fpminr.calib as calib

FORBIDDEN = ("io", "cli", "volume", "_napari", "tiles")


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            names.append(base)
        elif isinstance(node, ast.Import):
            names.extend(a.name for a in node.names)
    return names


def test_calib_imports_only_lower_layers():
    folder = Path(calib.__file__).parent
    files = sorted(folder.glob("*.py"))
    assert len(files) >= 4
    for f in files:
        for name in _imports(f):
            parts = name.lstrip(".").split(".")
            top = parts[0] if name.startswith("..") or name.startswith("napari_fpminr") else None
            if name.startswith("napari_fpminr."):
                top = parts[1]
            assert top not in FORBIDDEN, f"{f.name} imports {name}"
            assert not name.startswith(("napari", "qtpy")) or name.startswith("napari_fpminr"), f"{f.name}: {name}"
