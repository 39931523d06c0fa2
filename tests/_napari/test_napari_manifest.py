"""npe2 discovers the plugin from the installed distribution, and every command imports."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from npe2 import PluginManifest

REPO = Path(__file__).resolve().parents[2]


def _resolve(python_name: str):
    module, _, attr = python_name.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def test_manifest_found_from_installed_distribution():
    manifest = PluginManifest.from_distribution("napari-fpminr")
    assert manifest.name == "napari-fpminr"
    # the packaged manifest is the repository-root napari.yaml (same file, not a stale copy)
    packaged = Path(importlib.import_module("napari_fpminr").__file__).with_name("napari.yaml")
    assert packaged.read_text() == (REPO / "napari.yaml").read_text()
    contrib = manifest.contributions
    ids = {c.id for c in contrib.commands}
    assert {"napari-fpminr.get_reader", "napari-fpminr.make_widget", "napari-fpminr.sample_raw",
            "napari-fpminr.sample_model", "napari-fpminr.write_model"} <= ids
    for command in contrib.commands:
        assert callable(_resolve(command.python_name)), command.python_name
    assert any("*.fpminr" in r.filename_patterns for r in contrib.readers)
    assert {s.key for s in contrib.sample_data} == {"tilted_raw", "tilted_model"}


def test_npe2_validate_passes():
    npe2 = shutil.which("npe2", path=str(Path(sys.executable).parent))
    assert npe2, "npe2 command not installed in this environment"
    proc = subprocess.run([npe2, "validate", "napari-fpminr", "--imports"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "valid" in proc.stdout.lower()


@pytest.mark.slow
def test_wheel_ships_the_manifest(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
                           "-q", "-w", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("napari_fpminr-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        assert names.count("napari_fpminr/napari.yaml") == 1
        assert zf.read("napari_fpminr/napari.yaml").decode() == (REPO / "napari.yaml").read_text()
        entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "napari-fpminr = napari_fpminr:napari.yaml" in zf.read(entry).decode()
        assert "napari_fpminr/_napari/data/tilted_smear.fpminr" in names
    # install the wheel alone into a folder that shadows the editable install: npe2 finds it there
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target),
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    code = ("import napari_fpminr, npe2; m = npe2.PluginManifest.from_distribution('napari-fpminr'); "
            "print(napari_fpminr.__file__); print(len(m.contributions.commands))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(target)})
    assert proc.returncode == 0, proc.stderr
    where, n_commands = proc.stdout.split()
    assert Path(where).is_relative_to(target) and int(n_commands) == 5
