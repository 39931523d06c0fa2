"""Fuzz: edited and damaged mosaic models (``.fpminr`` of a tiled inr run).

150 seeded cases: 110 set one value of the JSON header (anywhere: layout, z range, pixel size,
a tile entry, a tile's model header) to a hostile value or delete it; 40 flip bytes of the file.
``fpminr render`` of each must end with exit code 2 and one line naming the file, or write
exactly the clean render. The napari reader must turn every refused file into one notification.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from napari_fpminr.cli import main
from napari_fpminr.simulate import simulate

N_EDITS = 110
N_FLIPS = 40
HOSTILE = [float("nan"), float("inf"), -float("inf"), -1000.0, -1, 0, 0.5, 1e308, 1e-300, 10**6, [10**6, 10**6],
           "x", None, [], {}, True, [1, 2, 3], -0.0, 2**63]
# the issue's cases, by path in the header: (path, value)
ISSUE = [(("tiles", 0, "amplitude_scale"), float("nan")), (("tiles", 0, "amplitude_scale"), -1000.0),
         (("dx_hr_um",), 0.0), (("z_min_um",), float("nan")), (("z_min_um",), 10.0),
         (("tiles", 1, "model", "lr_shape"), [10**6, 10**6]), (("layout", "frame_shape"), [10**9, 10**9])]


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory) -> tuple[Path, dict, np.ndarray]:
    from napari_fpminr.io.mosaic_file import save_mosaic
    from napari_fpminr.tile_layout import TileLayout
    from napari_fpminr.tiles.run import TiledJob, iter_tiles
    from napari_fpminr.tiles.source import MemorySource

    base = tmp_path_factory.mktemp("fuzz_mosaic")
    src = MemorySource.from_raw(simulate("tilted", size=64, seed=2).raw.crop(0, 0, 32, 56))
    optics = src.header.optics
    layout = TileLayout(src.frame_shape, 32, 8, optics.upsample, optics.dx_lr_um)
    job = TiledJob(src, layout, "inr", [-3.0, 3.0], base / "work", leds=src.header.leds,
                   options={"train": {"device": "cpu"}})
    last = list(iter_tiles(job))[-1]
    path = save_mosaic(base / "m.fpminr", layout, list(last.markers.values()), job.work_dir, optics, (-3.0, 3.0))
    head = _read_head(path.read_bytes())
    assert main(["render", str(path), "-o", str(base / "clean.npz"), "--z", "0.5", "-q"]) == 0
    return path, head, np.load(base / "clean.npz")["amplitude"]


def _read_head(data: bytes) -> dict:
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(json.loads(data[8:8 + n])["__metadata__"]["fpminr-mosaic"])


def _with_head(data: bytes, head: dict) -> bytes:
    """The safetensors file ``data`` with its mosaic metadata replaced (tensor offsets unchanged)."""
    n = struct.unpack("<Q", data[:8])[0]
    outer = json.loads(data[8:8 + n])
    outer["__metadata__"]["fpminr-mosaic"] = json.dumps(head)
    text = json.dumps(outer).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data[8 + n:]


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, prefix + (i,))


def _set(head: dict, path: tuple, value, delete: bool = False) -> dict:
    head = json.loads(json.dumps(head))
    node = head
    for k in path[:-1]:
        node = node[k]
    if delete and isinstance(node, dict):
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return head


def _render(path: Path, out: Path, capsys) -> tuple[int, str]:
    capsys.readouterr()
    rc = main(["render", str(path), "-o", str(out), "--z", "0.5", "-q"])
    return rc, capsys.readouterr().err


def _check(rc: int, err: str, out: Path, clean: np.ndarray, case: str) -> None:
    assert "Traceback" not in err, case
    if rc == 0:
        np.testing.assert_array_equal(np.load(out)["amplitude"], clean, err_msg=case)
        out.unlink()
        return
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("fpminr: error:") and ".fpminr" in lines[0], \
        f"{case}: rc {rc}, {err!r}"


@pytest.mark.timeout(120)
def test_edited_mosaic_headers_render_the_clean_planes_or_one_line(mosaic, tmp_path, capsys):
    path, head, clean = mosaic
    data = path.read_bytes()
    paths = [p for p in _paths(head) if p]
    cases = list(ISSUE)
    rng = np.random.default_rng(22)
    while len(cases) < N_EDITS:
        p = paths[int(rng.integers(len(paths)))]
        cases.append((p, "<delete>" if rng.random() < 0.1 else HOSTILE[int(rng.integers(len(HOSTILE)))]))
    refused = 0
    for i, (p, value) in enumerate(cases):
        bad = tmp_path / f"e{i}.fpminr"
        bad.write_bytes(_with_head(data, _set(head, p, value, delete=value == "<delete>")))
        rc, err = _render(bad, tmp_path / f"e{i}.npz", capsys)
        _check(rc, err, tmp_path / f"e{i}.npz", clean, f"{p} = {value!r}")
        refused += rc == 2
        if i < len(ISSUE):
            assert rc == 2, f"the issue's case {p} = {value!r} was accepted"
    assert refused >= N_EDITS // 2


@pytest.mark.timeout(120)
def test_flipped_bytes_in_a_mosaic_render_the_clean_planes_or_one_line(mosaic, tmp_path, capsys):
    path, _, clean = mosaic
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    for seed in range(N_FLIPS):
        rng = np.random.default_rng(1000 + seed)
        raw = bytearray(data)
        region = (8 + n, len(data)) if seed % 2 else (0, 8 + n)  # tensor data, or the header
        for i in rng.integers(*region, int(rng.integers(1, 9))):
            raw[i] ^= int(rng.integers(1, 256))
        bad = tmp_path / f"f{seed}.fpminr"
        bad.write_bytes(bytes(raw))
        rc, err = _render(bad, tmp_path / f"f{seed}.npz", capsys)
        _check(rc, err, tmp_path / f"f{seed}.npz", clean, f"flip seed {seed}")


def test_napari_reader_turns_every_refused_mosaic_into_one_notification(mosaic, tmp_path, monkeypatch):
    from napari_fpminr._napari import _reader

    path, head, _ = mosaic
    data = path.read_bytes()
    notes = []
    monkeypatch.setattr(_reader, "show_error", notes.append)
    monkeypatch.setattr("napari_fpminr._napari._viewer.watch", lambda: None)
    for i, (p, value) in enumerate(ISSUE):
        bad = tmp_path / f"n{i}.fpminr"
        bad.write_bytes(_with_head(data, _set(head, p, value)))
        notes.clear()
        assert _reader.read_paths(str(bad)) == [(None,)]
        assert len(notes) == 1 and "\n" not in notes[0] and bad.name in notes[0], (p, value, notes)


def test_mosaic_format_versions(mosaic, tmp_path, capsys):
    """Version 1 mosaics (before the log-polar tile code) still read; an unknown version is one line."""
    path, head, clean = mosaic
    data = path.read_bytes()
    for version, readable in ((1, True), (99, False)):
        edited = tmp_path / f"v{version}.fpminr"
        edited.write_bytes(_with_head(data, _set(head, ("format_version",), version)))
        rc, err = _render(edited, tmp_path / "out.npz", capsys)
        _check(rc, err, tmp_path / "out.npz", clean, f"version {version}")
        assert (rc == 0) == readable, (version, err)
        if not readable:
            assert "format version 99" in err
