"""Fuzz: edited and damaged calibration files (``*.calib.json``).

100 seeded cases: 70 set one value of a valid calibration (anywhere in it) to a hostile value or
delete it, 30 flip bytes of the file. Reading and applying each must give one
:class:`FPMInputError` line naming the file, or a calibration whose every number is in range and
whose corrected data are finite with illumination NAs below 1. The issue's absurd values are
refused by name, and so is a calibration made for other data.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from napari_fpminr.errors import FPMInputError
from napari_fpminr.simulate import simulate

N_EDITS = 70
N_FLIPS = 30
HOSTILE = [float("nan"), float("inf"), -1.0, 0.0, 1e308, 1e-12, 1e18, 1e6, 5.0, -5.0, "x", None, [], {}, True,
           10**12, [1e6, 1e6], [5.0, 5.0]]
ISSUE = [("na_illum", "all5"), ("rotation_deg", 1e18), ("shift_mm", [1e6, 1e6]), ("height_scale", 1e-12),
         ("height_scale", 1e308), ("background", -1.0), ("n_leds", 10**9)]


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """``(raw, path of a valid calibration of it, its JSON)``."""
    from napari_fpminr.calib.model import Calibration
    from napari_fpminr.cli.calibrate import _fingerprint
    from napari_fpminr.io.calibration_file import write_calibration

    raw = simulate("tilted", size=32, seed=1).raw
    n = raw.n_leds
    rng = np.random.default_rng(0)
    cal = Calibration.identity(raw, shift_mm=(0.2, -0.1), rotation_deg=0.5, height_scale=1.02,
                               brightness=rng.uniform(0.9, 1.1, n), background=0.01,
                               na_illum=np.asarray(raw.optics.na_illum) * 1.01,
                               report={"data": _fingerprint(raw), "misfit_before": 0.2})
    path = write_calibration(cal, tmp_path_factory.mktemp("fuzz_cal") / "c.calib.json")
    return raw, path, json.loads(path.read_text())


def _use(raw, path: Path):
    """Read, check against ``raw`` and apply: what ``fpminr reconstruct --calibration`` does."""
    from napari_fpminr.cli.calibrate import _fingerprint
    from napari_fpminr.io.calibration_file import check_data, read_calibration

    cal = read_calibration(path)
    if cal.n_leds != raw.n_leds:
        raise FPMInputError(f"calibration is for {cal.n_leds} LEDs, the raw data have {raw.n_leds}", path)
    check_data(cal, lambda: _fingerprint(raw), path)
    return cal.apply(raw)


def _outcome(raw, path: Path, what: str) -> bool:
    """True when refused in one line naming the file; asserts a sound result otherwise."""
    try:
        out = _use(raw, path)
    except FPMInputError as exc:
        text = str(exc)
        assert "\n" not in text and path.name in text, f"{what}: {text!r}"
        return True
    na = np.asarray(out.optics.na_illum)
    assert np.isfinite(out.intensities).all() and (out.intensities >= 0).all(), what
    assert np.isfinite(na).all() and (np.hypot(na[:, 0], na[:, 1]) < 1).all(), what
    return False


def _edited(doc: dict, key: str, value, rng) -> dict:
    doc = json.loads(json.dumps(doc))
    if value == "all5":
        doc[key] = [[5.0, 0.0]] * doc["n_leds"]
    elif value == "<delete>":
        doc.pop(key, None)
    elif isinstance(doc.get(key), list) and doc[key] and rng is not None and rng.random() < 0.5:
        i = int(rng.integers(len(doc[key])))
        doc[key][i] = value if not isinstance(doc[key][i], list) else [value, 0.0]
    else:
        doc[key] = value
    return doc


@pytest.mark.timeout(60)
def test_edited_calibrations_are_sound_or_one_line(case, tmp_path):
    raw, path, doc = case
    rng = np.random.default_rng(7)
    keys = sorted(doc)
    cases = list(ISSUE)
    while len(cases) < N_EDITS:
        cases.append((keys[int(rng.integers(len(keys)))],
                      "<delete>" if rng.random() < 0.1 else HOSTILE[int(rng.integers(len(HOSTILE)))]))
    for i, (key, value) in enumerate(cases):
        bad = tmp_path / f"e{i}.calib.json"
        bad.write_text(json.dumps(_edited(doc, key, value, rng if i >= len(ISSUE) else None)))
        refused = _outcome(raw, bad, f"{key} = {value!r}")
        if i < len(ISSUE):
            assert refused, f"the issue's case {key} = {value!r} was accepted"


@pytest.mark.timeout(60)
def test_flipped_bytes_in_a_calibration_are_sound_or_one_line(case, tmp_path):
    raw, path, _ = case
    data = path.read_bytes()
    for seed in range(N_FLIPS):
        rng = np.random.default_rng(500 + seed)
        b = bytearray(data)
        for i in rng.integers(0, len(b), int(rng.integers(1, 6))):
            b[i] ^= int(rng.integers(1, 256))
        bad = tmp_path / f"f{seed}.calib.json"
        bad.write_bytes(bytes(b))
        _outcome(raw, bad, f"flip seed {seed}")


def test_a_calibration_of_other_data_is_refused(case, tmp_path):
    _, path, _ = case
    other = simulate("tilted", size=32, seed=2).raw  # same LEDs and size, other content
    with pytest.raises(FPMInputError, match="made for other data"):
        _use(other, path)
    smaller = simulate("tilted", size=32, seed=1).raw.crop(0, 0, 24, 24)
    with pytest.raises(FPMInputError, match=r"its frames are \[32, 32\] px"):
        _use(smaller, path)
