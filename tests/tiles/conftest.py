"""Fixtures shared by the tile tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_fpminr.io import write_raw
from napari_fpminr.simulate import simulate


@pytest.fixture(scope="session")
def slide(tmp_path_factory) -> Path:
    """A 64 x 64 px tilted-slide data set as a native TIFF (9 tiles of 32 px, overlap 8)."""
    path = tmp_path_factory.mktemp("slide") / "slide.tif"
    write_raw(simulate("tilted", size=64, seed=3).raw, path)
    return path
