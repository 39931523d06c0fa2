"""Imports run one way, downward, through the package's layers (brief, "Engineering standards").

Every ``from napari_fpminr... import`` / relative import in the sources, including those inside
functions, is resolved to the top-level part it reaches, and that part's layer must not be
above the importing part's layer. A new top-level module has to be placed in ``LAYERS``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import napari_fpminr

PACKAGE_DIR = Path(napari_fpminr.__file__).resolve().parent

# lowest first; parts on one line are the same layer (they may import each other)
LAYERS = [
    ("__init__", "errors", "device", "progress"),
    ("optics",),
    ("rawdata", "tile_layout"),  # the data types
    ("recon",),
    ("calib",),
    ("io",),
    ("tiles", "simulate", "volume"),
    ("colour",),  # colour z-stacks: builds on volume (focus measures) and io
    ("cli",),
    ("_napari",),  # the napari glue may use the command line's texts; the command line imports no napari glue
]
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[str, int]]:
    """Absolute ``napari_fpminr`` modules imported by ``path`` (with line numbers)."""
    rel = path.relative_to(PACKAGE_DIR.parent).with_suffix("")
    module = ".".join(rel.parts)
    package = module.removesuffix(".__init__") if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [target] if node.module else [f"{target}.{a.name}" for a in node.names]
            found += [(t, node.lineno) for t in names if t.startswith("napari_fpminr")]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("napari_fpminr")]
    return found


def test_every_top_level_part_has_a_layer():
    parts = {p.stem for p in PACKAGE_DIR.glob("*.py")} | {p.name for p in PACKAGE_DIR.iterdir()
                                                           if (p / "__init__.py").exists()}
    assert parts - set(RANK) == set(), "place the new module in LAYERS"


def test_imports_only_reach_down():
    upward = []
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        source = _part(".".join(path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts))
        for target, line in _imports(path):
            if RANK[_part(target)] > RANK[source]:
                upward.append(f"{path.relative_to(PACKAGE_DIR)}:{line} ({source}) imports {target}")
    assert not upward, "upward imports:\n" + "\n".join(upward)
