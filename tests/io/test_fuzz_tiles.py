"""Fuzz: damaged tile folders (``OUT.tiles/``) are never used as they are.

120 seeded cases flip bytes in, truncate, swap, link, delete or edit the tile data files and
markers of a clean 3 x 3-tile folder. In every case the check on resume (:meth:`TiledJob.finished`)
must accept exactly the tiles whose data are still the clean ones, and must not raise. Some cases
are then resumed for real: the damaged tiles are computed again and the blended field equals the
clean run's to the bit.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from napari_fpminr.io import write_raw
from napari_fpminr.simulate import simulate

N_CASES = 120
RESUMED = range(0, N_CASES, 24)  # 5 cases are resumed end to end
HOSTILE = [float("nan"), float("inf"), -1.0, 0.0, 1e308, -1e308, "x", None, [], {}, True, 10**30, "../../etc/passwd",
           "/etc/passwd", "tile_000_000.safetensors", 3, -7]


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """``(job, folder, markers, blended field)`` of a clean fpm run (2 planes, 9 tiles)."""
    from napari_fpminr.tile_layout import TileLayout
    from napari_fpminr.tiles.run import TiledJob, iter_tiles
    from napari_fpminr.tiles.source import open_source

    base = tmp_path_factory.mktemp("fuzz_tiles")
    path = base / "slide.tif"
    write_raw(simulate("tilted", size=64, seed=5).raw, path)
    src = open_source(path)
    lay = TileLayout(src.frame_shape, 32, 8, src.header.optics.upsample, src.header.optics.dx_lr_um)
    job = TiledJob(src, lay, "fpm", [-1.0, 1.0], base / "clean.tiles", leds=src.header.leds,
                   options={"iterations": 2, "device": "cpu"})
    events = list(iter_tiles(job))
    assert events[-1].done
    return job, job.work_dir, events[-1].markers, _blend(job, events[-1].markers)


def _blend(job, markers):
    from napari_fpminr.tiles.assemble import stack_region

    H, W = job.layout.hr_shape
    return stack_region(job.layout, markers, job.work_dir, (0, 0, H, W), job.planes.size)


def _damage(work: Path, rng: np.random.Generator) -> str:
    """One random damage of the folder; returns what was done (for the failure message)."""
    tiles = sorted(work.glob("tile_*.json"))
    marker = tiles[rng.integers(len(tiles))]
    data = marker.with_suffix(".safetensors")
    other = tiles[(tiles.index(marker) + 1 + rng.integers(len(tiles) - 1)) % len(tiles)]
    kind = int(rng.integers(9))
    if kind == 0:  # flipped bytes anywhere in the data file
        raw = bytearray(data.read_bytes())
        for i in rng.integers(0, len(raw), int(rng.integers(1, 65))):
            raw[i] ^= int(rng.integers(1, 256))
        data.write_bytes(bytes(raw))
    elif kind == 1:  # truncated data
        raw = data.read_bytes()
        data.write_bytes(raw[:int(rng.integers(0, len(raw)))])
    elif kind == 2:  # another tile's data copied over this one
        shutil.copy(other.with_suffix(".safetensors"), data)
    elif kind == 3:  # another tile's data and marker copied over this one
        shutil.copy(other.with_suffix(".safetensors"), data)
        shutil.copy(other, marker)
    elif kind == 4:  # data replaced by a symbolic link to another tile's data
        data.unlink()
        data.symlink_to(other.with_suffix(".safetensors"))
    elif kind == 5:  # data file gone
        data.unlink()
    elif kind == 6:  # one marker field set to a hostile value
        m = json.loads(marker.read_text())
        key = sorted(m)[int(rng.integers(len(m)))]
        m[key] = HOSTILE[int(rng.integers(len(HOSTILE)))]
        marker.write_text(json.dumps(m))
    elif kind == 7:  # flipped bytes in the marker
        raw = bytearray(marker.read_bytes())
        for i in rng.integers(0, len(raw), int(rng.integers(1, 9))):
            raw[i] ^= int(rng.integers(1, 256))
        marker.write_bytes(bytes(raw))
    else:  # the marker's hash made to match a damaged data file (an attacker's consistent edit)
        from napari_fpminr.tiles.worker import file_sha256

        raw = bytearray(data.read_bytes())
        raw[len(raw) - 1 - int(rng.integers(64))] ^= 0x40
        data.write_bytes(bytes(raw))
        m = json.loads(marker.read_text())
        m["file"] = str(data)  # and a path that is not just the tile's own name
        m["sha256"] = file_sha256(data)
        marker.write_text(json.dumps(m))
    return f"damage {kind} of {marker.name}"


@pytest.mark.timeout(120)
def test_damaged_tile_folders_are_never_used_as_they_are(clean, tmp_path):
    from napari_fpminr.tiles.run import iter_tiles

    job, folder, markers, field = clean
    clean_bytes = {p.name: p.read_bytes() for p in folder.glob("tile_*.safetensors")}
    for seed in range(N_CASES):
        work = tmp_path / f"case{seed}"
        shutil.copytree(folder, work, symlinks=True)
        what = _damage(work, np.random.default_rng(seed))
        case = dataclasses.replace(job, work_dir=work, rejected={})
        kept = case.finished()
        for (r, c), m in kept.items():  # accepted tiles hold exactly the clean data and marker
            name = f"tile_{r:03d}_{c:03d}.safetensors"
            assert (work / name).read_bytes() == clean_bytes[name], (seed, what)
            assert m == {k: v for k, v in markers[(r, c)].items() if k != "skipped"}, (seed, what)
        if seed in RESUMED:
            with pytest.warns(UserWarning) if case.rejected else _nothing():
                events = list(iter_tiles(case))
            assert events[-1].done, (seed, what)
            amp, phase = _blend(case, events[-1].markers)
            np.testing.assert_array_equal(amp, field[0], err_msg=f"{seed}: {what}")
            np.testing.assert_array_equal(phase, field[1], err_msg=f"{seed}: {what}")
        shutil.rmtree(work)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
