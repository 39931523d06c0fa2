"""Fuzz test (issue 10): seeded random byte flips and truncations of valid files of every raw
format (and of a model file) give only clean one-line errors or valid loads.

Each format is fuzzed in a child process, so that a crash of a native library (libhdf5, zlib)
on a corrupted file fails the test with the case that caused it instead of taking pytest down.
Memory is bounded by a 256 MiB ``--max-memory``-style limit: a flipped size field must be
refused by the size checks, not allocated. 8 raw bases + the npz stack reader + the model
loader, 70 cases each: 700 cases.
"""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent
CASES_PER_BASE = 70
RAW_BASES = ("mat_v5", "mat_v5_compressed", "mat_v73", "uconn", "ptylab", "native_tif", "native_json",
             "mat_v73_uconn", "stack_npz")
SAMPLE_MODEL = Path(__file__).resolve().parents[2] / "src" / "napari_fpminr" / "_napari" / "data" / \
    "tilted_smear.fpminr"


def make_base(kind: str, folder: Path) -> tuple[Path, Path]:
    """Write a small valid file of ``kind``; returns (file to read, file to corrupt)."""
    import scipy.io
    from io_cases import make_raw, write_mat73

    from napari_fpminr.io import write_raw

    raw = make_raw(n_leds=6, h=8, w=10)
    fpminr_vars = {"I_low": np.moveaxis(raw.intensities, 0, -1), "na_calib": raw.optics.na_illum,
                   "na_cal": 0.25, "mag": 10.0, "dpix_c": 3.45, "lambda": 0.5}
    uconn_vars = {"imlow_HDR": np.sqrt(np.moveaxis(raw.intensities, 0, -1)), "wlength": 0.5e-6, "z": 1e-5,
                  "xint": 0.1, "yint": -0.2, "theta": 1.0, "aberration": 0.0}
    path = folder / {"ptylab": "base.hdf5", "native_tif": "base.tif", "native_json": "base.tif",
                     "stack_npz": "stack.npz"}.get(kind, "base.mat")
    if kind == "stack_npz":
        from napari_fpminr.io.stack_files import StackArrays, write_stack

        amp = raw.intensities[:3]
        write_stack(path, StackArrays(amp, amp * 0.5, np.array([-1.0, 0.0, 1.0]), 0.2))
    elif kind == "mat_v5":
        scipy.io.savemat(path, fpminr_vars)
    elif kind == "mat_v5_compressed":
        scipy.io.savemat(path, fpminr_vars, do_compression=True)
    elif kind == "mat_v73":
        write_mat73(path, fpminr_vars)
    elif kind == "mat_v73_uconn":
        write_mat73(path, uconn_vars)
    elif kind == "uconn":
        scipy.io.savemat(path, uconn_vars, do_compression=True)
    else:
        write_raw(raw, path)
    return path, (path.with_suffix(".json") if kind == "native_json" else path)


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One of: flip 1-16 bytes, truncate, flip then truncate, zero a span, or repeat a span."""
    buf = bytearray(data)
    kind = rng.integers(5)
    if kind in (0, 2):
        for _ in range(int(rng.integers(1, 17))):
            buf[int(rng.integers(len(buf)))] = int(rng.integers(256))
    if kind in (1, 2):
        del buf[int(rng.integers(len(buf))):]
    if kind == 3:
        start = int(rng.integers(len(buf)))
        buf[start:start + int(rng.integers(1, 64))] = bytes(min(len(buf) - start, int(rng.integers(1, 64))))
    if kind == 4:
        start = int(rng.integers(len(buf)))
        buf[start:start] = buf[start:start + int(rng.integers(1, 64))]
    return bytes(buf)


def fuzz(kind: str, folder: str, n: int, seed: int) -> list[str]:
    """Run ``n`` cases on ``kind``; returns descriptions of the cases that misbehaved."""
    import warnings

    from napari_fpminr.errors import FPMInputError
    from napari_fpminr.io import detect_format, read_raw
    from napari_fpminr.io.budget import limits

    folder = Path(folder)
    problems = []
    with limits(max_memory=256 << 20), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "model":
            from napari_fpminr.io.model_file import load_model

            target = folder / "m.fpminr"
            original = SAMPLE_MODEL.read_bytes()
            read, load = target, (lambda p: load_model(p))
        elif kind == "stack_npz":
            from napari_fpminr.io.stack_files import read_stack_npz

            read, target = make_base(kind, folder)
            original, load = target.read_bytes(), read_stack_npz
        else:
            read, target = make_base(kind, folder)
            original = target.read_bytes()
            load = read_raw
            load(read)  # the unmutated base is valid
        rng = np.random.default_rng(seed)
        for case in range(n):
            target.write_bytes(mutate(original, rng))
            print(f"case {kind} {case}", flush=True)  # the last line names the case if a crash follows
            try:
                if kind not in ("model", "stack_npz"):
                    detect_format(read)  # never raises
                load(read)
            except FPMInputError as exc:
                msg = str(exc)
                if "\n" in msg or read.name not in msg and target.name not in msg:
                    problems.append(f"case {case}: unclear message {msg!r}")
            except Exception as exc:  # noqa: BLE001 - that is what the test looks for
                problems.append(f"case {case}: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}")
    return problems


def run_child(kind: str, tmp_path: Path, n: int, seed: int) -> list[str]:
    code = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(HERE)!r})
        from test_fuzz_readers import fuzz
        print("RESULT " + json.dumps(fuzz({kind!r}, {str(tmp_path)!r}, {n}, {seed})))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=HERE)
    last = [line for line in proc.stdout.splitlines() if line.startswith("case ")][-1:]
    assert proc.returncode == 0, f"child died ({proc.returncode}) after {last}: {proc.stderr[-2000:]}"
    return json.loads(proc.stdout.split("RESULT ", 1)[1])


@pytest.mark.parametrize("kind", RAW_BASES)
def test_corrupted_raw_files_give_clean_errors_or_valid_data(tmp_path, kind):
    problems = run_child(kind, tmp_path, CASES_PER_BASE, seed=RAW_BASES.index(kind))
    assert not problems, "\n".join(problems)


@pytest.mark.skipif(not SAMPLE_MODEL.exists(), reason="sample model absent")
def test_corrupted_model_files_give_clean_errors_or_valid_loads(tmp_path):
    problems = run_child("model", tmp_path, CASES_PER_BASE, seed=100)
    assert not problems, "\n".join(problems)
