"""The command line under hostile input and faults (issue 10) and its rough edges (issue 9 item 9).

Every refusal: exit code 2, exactly one line ``fpminr: error: FILE: problem`` on stderr, no
traceback, no file left behind, inputs unchanged. Most cases call ``main`` in-process (a raised
exception would be the traceback); faults that need a separate process (resource limits, the
peak memory of a run) use a subprocess.
"""

import re
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import napari_fpminr
from napari_fpminr.cli import fpm_progress_text, main
from napari_fpminr.io.safety import output_lock

REPO = Path(__file__).resolve().parents[1]
SAMPLE_MODEL = Path(napari_fpminr.__file__).parent / "_napari" / "data" / "tilted_smear.fpminr"


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(code, err, *fragments, after_work=False):
    """rc 2 and one error line; ``after_work``: the run may have announced its work before failing."""
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    if after_work:
        assert [line for line in lines if line.startswith("fpminr: error: ")] == lines[-1:], err
        lines = lines[-1:]
    assert len(lines) == 1 and lines[0].startswith("fpminr: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict:
    """Every file under ``folder`` (hidden ones included) with its bytes."""
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sim")
    assert main(["simulate", str(folder / "s.tif"), "--size", "16", "--seed", "1"]) == 0
    return folder / "s.tif"


@pytest.fixture
def data(tmp_path, sim):
    """A private copy of the simulated raw data (tif + json) in an otherwise empty folder."""
    for p in (sim, sim.with_suffix(".json")):
        shutil.copy(p, tmp_path / p.name)
    return tmp_path / sim.name


@pytest.fixture
def model(tmp_path):
    shutil.copy(SAMPLE_MODEL, tmp_path / "m.fpminr")
    return tmp_path / "m.fpminr"


# ---- 1. inputs are never overwritten ------------------------------------------------------
@pytest.mark.parametrize("target", ["same", "dotted", "symlink", "hardlink", "sidecar-folder"])
def test_output_that_would_replace_the_input_is_refused(tmp_path, capsys, data, target):
    out = {"same": data, "dotted": tmp_path / "." / data.name}.get(target)
    if target == "symlink":
        out = tmp_path / "link.tif"
        out.symlink_to(data)
    elif target == "hardlink":
        out = tmp_path / "hard.tif"
        out.hardlink_to(data)
    elif target == "sidecar-folder":  # a .zarr output folder that holds the input
        store = tmp_path / "in.zarr"
        store.mkdir()
        (store / ".zgroup").write_text('{"zarr_format": 2}')
        for p in (data, data.with_suffix(".json")):
            p.rename(store / p.name)
        data, out = store / data.name, store
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, "reconstruct", data, "-o", out, "--method", "fpm", "--z", "0", "--iterations", "1")
    assert_refused(code, err, "would", "input")
    assert snapshot(tmp_path) == before


def test_render_output_that_is_the_raw_input_is_refused(tmp_path, capsys, model, data):
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, "render", model, "-o", data, "--all-in-focus", "--raw", data)
    assert_refused(code, err, "overwrite the input")
    assert snapshot(tmp_path) == before


# ---- 5. output-side faults: one line, nothing left ----------------------------------------
def test_output_naming_an_existing_folder(tmp_path, capsys, data):
    (tmp_path / "out.npz").mkdir()
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, "reconstruct", data, "-o", tmp_path / "out.npz", "--method", "fpm", "--z", "0")
    assert_refused(code, err, "out.npz", "existing folder")
    assert snapshot(tmp_path) == before


def test_output_below_a_file(tmp_path, capsys, data):
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, "reconstruct", data, "-o", tmp_path / "s.json" / "out.npz", "--method", "fpm",
                       "--z", "0")
    assert_refused(code, err, "out.npz", "not a folder")
    assert snapshot(tmp_path) == before


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
                    reason="root writes into read-only folders")
def test_read_only_output_folder(tmp_path, capsys, data):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, _, err = cli(capsys, "reconstruct", data, "-o", ro / "out.npz", "--method", "fpm", "--z", "0")
        assert_refused(code, err, "out.npz", "permission")
        assert not list(ro.iterdir())
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("where", ["folder check", "file creation"])
def test_permission_denied_is_one_line(tmp_path, capsys, data, monkeypatch, where):
    """What a read-only folder does to a non-root user, simulated so that it also runs as root."""
    import os

    import napari_fpminr.io.atomic as atomic

    if where == "folder check":
        monkeypatch.setattr(os, "access", lambda *a, **k: False)
    else:
        def denied(*args, **kwargs):
            raise PermissionError(13, "Permission denied", str(tmp_path))

        monkeypatch.setattr(atomic.tempfile, "mkstemp", denied)
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, "reconstruct", data, "-o", tmp_path / "out.npz", "--method", "fpm", "--z", "0",
                       "--iterations", "1", "-q")
    assert_refused(code, err, "out.npz", "permission", after_work=True)
    assert snapshot(tmp_path) == before


def run_limited(args, fsize=None, cwd=None):
    """Run ``fpminr ARGS`` in a child (optionally with RLIMIT_FSIZE, standing for a full disk);
    returns (code, stdout, stderr, peak RSS of the child in bytes)."""
    code = ("import resource, sys\n"
            f"fsize = {fsize!r}\n"
            "if fsize: resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))\n"
            "from napari_fpminr.cli import main\n"
            "rc = main(sys.argv[1:])\n"
            "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)\n"
            "sys.exit(rc)\n")
    proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)
    rss = int(re.search(r"MAXRSS (\d+)", proc.stdout).group(1)) if "MAXRSS" in proc.stdout else -1
    return proc.returncode, proc.stdout, proc.stderr, rss


@pytest.mark.parametrize("suffix", [".npz", ".tif", ".zarr"])
def test_disk_full_while_writing_leaves_nothing(tmp_path, suffix):
    """RLIMIT_FSIZE makes every write past 4 KiB fail (EFBIG), as a full disk fails with ENOSPC.

    64² px planes: a zarr chunk (16 KiB) fails while the small metadata files succeed, so the
    failure comes in the middle of the chunk writes.
    """
    data = tmp_path / "in" / "s.tif"
    data.parent.mkdir()
    assert main(["simulate", str(data), "--size", "32", "--seed", "2"]) == 0
    before = snapshot(data.parent)
    outdir = tmp_path / "out"
    outdir.mkdir()
    code, _, err, _ = run_limited(["reconstruct", data, "-o", outdir / f"o{suffix}", "--method", "fpm", "--z",
                                   "-1", "0", "1", "--iterations", "1", "-q"], fsize=4096)
    assert_refused(code, err, f"o{suffix}", "cannot write", after_work=True)
    assert not list(outdir.iterdir()), list(outdir.iterdir())
    assert snapshot(data.parent) == before


# ---- 5. hostile numbers on the command line -----------------------------------------------
@pytest.mark.parametrize("args, fragment", [
    (["--z-max", "inf"], "--z-max must be a finite number"),
    (["--z-min", "nan"], "--z-min must be a finite number"),
    (["--z", "nan"], "--z must be a finite number"),
    (["--z-step", "1e-9"], "planes"),
    (["--z-step", "0"], "--z-step must be positive"),
    (["--all-in-focus", "--patch", "0"], "--patch"),
    (["--all-in-focus", "--stride", "0"], "--stride"),
    (["--all-in-focus", "--patch", "100000"], "--patch"),
])
def test_render_hostile_numbers(tmp_path, capsys, model, args, fragment):
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, "render", model, "-o", tmp_path / "x.npz", *args)
    assert_refused(code, err, fragment)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("args, fragment", [
    (["--upsample", "100000"], "upsample 100000"),
    (["--wavelength-um", "522"], "wavelength 522 um is implausible"),
    (["--crop", "-4", "0", "8", "8"], "--crop -4 0 8 8 is not inside"),
    (["--crop", "0", "0", "64", "64"], "is not inside the 16x16"),
    (["--crop", "0", "0", "0", "8"], "is not inside"),
])
def test_reconstruct_hostile_options(tmp_path, capsys, data, args, fragment):
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, "reconstruct", data, "-o", tmp_path / "x.npz", "--method", "fpm", "--z", "0", *args)
    assert_refused(code, err, data.name, fragment)
    assert snapshot(tmp_path) == before


def test_info_refuses_a_sidecar_with_a_huge_grid(tmp_path, capsys, data):
    import json

    meta = json.loads(data.with_suffix(".json").read_text())
    del meta["na_x"], meta["na_y"]
    meta["led_grid"] = {"grid_size": 100000, "pitch_mm": 4, "distance_mm": 90}
    data.with_suffix(".json").write_text(json.dumps(meta))
    code, _, err = cli(capsys, "info", data)
    assert_refused(code, err, "s.json", "grid_size")


def test_duplicated_leds_give_a_one_line_warning(tmp_path, capsys, data):
    import json

    meta = json.loads(data.with_suffix(".json").read_text())
    meta["na_x"][1], meta["na_y"][1] = meta["na_x"][0], meta["na_y"][0]
    data.with_suffix(".json").write_text(json.dumps(meta))
    code, out, err = cli(capsys, "info", data)
    assert code == 0, err
    assert err.strip().startswith("fpminr: warning: ") and len(err.strip().splitlines()) == 1
    assert "duplicated LEDs" in err


def _bomb(path: Path, n_leds: int = 512, side: int = 512) -> None:
    """An FPM-INR .mat whose compressed I_low (uint8 zeros, side x side x n_leds) is ~0.1% of its size."""
    import scipy.io

    c = np.linspace(-0.2, 0.2, int(np.ceil(np.sqrt(n_leds))))
    na = np.stack(np.meshgrid(c, c), -1).reshape(-1, 2)[:n_leds]
    scipy.io.savemat(path, {"na_calib": na, "na_cal": 0.25, "mag": 10.0, "dpix_c": 3.45, "lambda": 0.5})
    n = side * side * n_leds
    name, dims = b"I_low", np.array([side, side, n_leds], "<i4").tobytes()
    body = (np.array([6, 8, 9, 0], "<u4").tobytes() + np.array([5, len(dims)], "<u4").tobytes() + dims
            + b"\0" * 4 + np.array([1, len(name)], "<u4").tobytes() + name + b"\0" * 3
            + np.array([2, n], "<u4").tobytes())
    comp = zlib.compressobj(9)
    parts = [comp.compress(np.array([14, len(body) + n], "<u4").tobytes() + body)]
    zeros = bytes(1 << 20)
    for _ in range(n >> 20):
        parts.append(comp.compress(zeros))
    parts.append(comp.flush())
    data = b"".join(parts)
    with open(path, "ab") as fh:
        fh.write(np.array([15, len(data)], "<u4").tobytes() + data)


def test_compressed_mat_that_expands_beyond_the_limit_stays_small(tmp_path, data):
    """Measured: the child's peak RSS stays at the interpreter's, far below the 640 MiB decoding needs."""
    bomb = tmp_path / "bomb.mat"
    _bomb(bomb)
    assert bomb.stat().st_size < 1 << 20
    code, _, err, rss_bomb = run_limited(["info", bomb, "--max-memory", "256M"])
    assert_refused(code, err, "bomb.mat", "I_low", "memory", "--max-memory")
    code, _, err, rss_small = run_limited(["info", data])
    assert code == 0, err
    assert rss_bomb < rss_small + (64 << 20), (rss_bomb, rss_small)


# ---- 6. estimates up front ----------------------------------------------------------------
def test_conventional_stack_beyond_max_memory_is_refused_up_front(tmp_path, capsys, data):
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, "reconstruct", data, "-o", tmp_path / "x.npz", "--method", "fpm",
                       "--z-step", "0.01", "--max-memory", "300M")
    assert_refused(code, err, "x.npz", "planes", "needs about", "--max-memory", "fewer planes")
    assert snapshot(tmp_path) == before


def test_render_beyond_max_output_is_refused_up_front(tmp_path, capsys, model):
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, "render", model, "-o", tmp_path / "x.tif", "--z-step", "0.004",
                       "--max-output", "10M")
    assert_refused(code, err, "x.tif", "10001 planes", "would write about", "--max-output")
    assert snapshot(tmp_path) == before


def test_inr_that_does_not_fit_even_one_led_at_a_time_is_refused(tmp_path, capsys, data):
    before = snapshot(tmp_path)
    code, _, err = cli(capsys, "reconstruct", data, "-o", tmp_path / "m.fpminr", "--z-min", "-5", "--z-max", "5",
                       "--device", "cpu", "--max-memory", "100M")
    assert_refused(code, err, "m.fpminr", "one LED at a time", "--crop")
    assert snapshot(tmp_path) == before


def test_inr_chooses_smaller_led_chunks_when_memory_is_short(monkeypatch, sim, capsys):
    from napari_fpminr.cli import _fit_memory
    from napari_fpminr.io import budget, read_raw
    from napari_fpminr.recon.train import TrainConfig

    raw = read_raw(sim)
    need_all = budget.inr_training_bytes(raw.n_leds, raw.lr_shape, raw.hr_shape)
    need_one = budget.inr_training_bytes(raw.n_leds, raw.lr_shape, raw.hr_shape, led_batch=1)
    with budget.limits(max_memory=(need_all + need_one) // 2):
        config = _fit_memory(TrainConfig(device="cpu"), raw, Path("m.fpminr"))
    assert config.led_batch is not None and 1 <= config.led_batch < raw.n_leds
    assert budget.inr_training_bytes(raw.n_leds, raw.lr_shape, raw.hr_shape, led_batch=config.led_batch) \
        <= (need_all + need_one) // 2
    assert f"using chunks of {config.led_batch} LEDs" in capsys.readouterr().err
    with budget.limits(max_memory=need_all * 2):
        assert _fit_memory(TrainConfig(device="cpu"), raw, Path("m.fpminr")).led_batch is None


def test_estimates_match_the_issue_measurement():
    """1024² raw x 100 LEDs (2x upsampling) peaked at 9.4 GB: the estimate must not be below it."""
    from napari_fpminr.io import budget

    est = budget.inr_training_bytes(100, (1024, 1024), (2048, 2048))
    assert 9.4e9 <= est <= 1.5 * 9.4e9


# ---- 8. one writer per output ---------------------------------------------------------------
def test_a_second_run_writing_the_same_output_stops(tmp_path, capsys, data):
    out = tmp_path / "o.npz"
    with output_lock(out):
        code, _, err = cli(capsys, "reconstruct", data, "-o", out, "--method", "fpm", "--z", "0", "--iterations", "1")
    assert_refused(code, err, "o.npz", "another fpminr run")
    assert not out.exists()
    code, _, err = cli(capsys, "reconstruct", data, "-o", out, "--method", "fpm", "--z", "0", "--iterations", "1")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([data.name, data.with_suffix(".json").name, "o.npz"])


# ---- issue 9 item 9: CLI rough edges --------------------------------------------------------
def test_inr_refuses_a_zero_width_z_range(tmp_path, capsys, data):
    code, _, err = cli(capsys, "reconstruct", data, "-o", tmp_path / "m.fpminr", "--z-min", "5", "--z-max", "5")
    assert_refused(code, err, "needs a z range", "z = 5")
    assert not (tmp_path / "m.fpminr").exists()


def test_fpm_with_equal_z_min_and_max_gives_that_one_plane(tmp_path, capsys, data):
    code, out, err = cli(capsys, "reconstruct", data, "-o", tmp_path / "one.npz", "--method", "fpm",
                         "--z-min", "5", "--z-max", "5", "--iterations", "1")
    assert code == 0, err
    assert np.load(tmp_path / "one.npz")["z_um"].tolist() == [5.0]


def test_fpm_progress_counts_up_to_all_planes(tmp_path, capsys, data):
    code, _, err = cli(capsys, "reconstruct", data, "-o", tmp_path / "p.npz", "--method", "fpm",
                       "--z", "-1", "0", "1", "--iterations", "2")
    assert code == 0, err
    bars = [line for line in err.splitlines() if line.startswith("fpm [")]
    assert bars and all("planes 3/3" in line for line in bars if "100%" in line), bars
    assert "iteration 2/2" in bars[-1]


def test_fpm_progress_text_shows_the_pass_while_a_batch_runs():
    from napari_fpminr.recon.conventional import ConventionalProgress

    event = ConventionalProgress(iteration=12, n_iterations=25, planes_done=0, n_planes=161, elapsed_s=3.0,
                                 eta_s=3.2, fraction=12 / 25)
    text = fpm_progress_text(event)
    assert "iteration 12/25" in text and "planes 0/161 finished" in text


def _example_outputs(text: str):
    """Concrete output paths of the example commands (``simulate OUT``, ``-o OUT``) in bash blocks."""
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            cmd = line.split("#")[0].split()
            if "fpminr" not in " ".join(cmd[:2]):
                continue
            args = cmd[cmd.index(next(a for a in cmd if a.endswith("fpminr"))) + 1:]
            outs = [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("-o", "--output")]
            if args and args[0] == "simulate" and len(args) > 1:
                outs.append(args[1])
            for out in outs:
                if not re.search(r"[A-Z]{2,}", out):  # placeholders (OUT.tif, MODEL) are not examples
                    yield out


def test_docs_examples_write_under_results_or_a_temp_dir():
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    outs = [(doc.name, out) for doc in docs for out in _example_outputs(doc.read_text(encoding="utf-8"))]
    assert outs, "no example commands found"
    bad = [(doc, out) for doc, out in outs if not re.match(r"^(results/|/tmp/|\$TMPDIR/|\$\{?TMP)", out)]
    assert not bad, bad


def test_output_in_new_folders_is_written_and_a_refused_run_leaves_no_folders(tmp_path, capsys, data):
    code, _, err = cli(capsys, "reconstruct", data, "-o", tmp_path / "new" / "sub" / "o.npz", "--method", "fpm",
                       "--z", "0", "--iterations", "1", "-q")
    assert code == 0, err
    assert (tmp_path / "new" / "sub" / "o.npz").exists()
    assert sorted(p.name for p in (tmp_path / "new" / "sub").iterdir()) == ["o.npz"]
    code, _, err = cli(capsys, "reconstruct", data, "-o", tmp_path / "other" / "o.npz", "--method", "fpm",
                       "--z", "0", "--crop", "0", "0", "99", "99")
    assert_refused(code, err, "--crop")
    assert not (tmp_path / "other").exists()


def test_model_with_deeply_nested_metadata_is_one_line(tmp_path, capsys, model):
    import json
    import struct

    data = model.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = header["__metadata__"]["fpminr"]
    header["__metadata__"]["fpminr"] = meta[:-1] + ', "deep": ' + "[" * 100000 + "]" * 100000 + "}"
    head = json.dumps(header).encode()
    head += b" " * ((-len(head)) % 8)
    deep = tmp_path / "deep.fpminr"
    deep.write_bytes(struct.pack("<Q", len(head)) + head + data[8 + n:])
    for args in (["info", deep], ["render", deep, "-o", tmp_path / "d.npz", "--z", "0"]):
        code, _, err = cli(capsys, *args)
        assert_refused(code, err, "deep.fpminr")
    assert not (tmp_path / "d.npz").exists()


@pytest.mark.parametrize("field, value", [("final_loss", "abc"), ("source_hash", 12345)])
def test_info_and_render_accept_or_refuse_odd_model_metadata_alike(tmp_path, capsys, model, field, value):
    import json
    import struct

    data = model.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    meta = json.loads(header["__metadata__"]["fpminr"])
    (meta["meta"]["training"] if field == "final_loss" else meta["meta"])[field] = value
    header["__metadata__"]["fpminr"] = json.dumps(meta)
    head = json.dumps(header).encode()
    head += b" " * ((-len(head)) % 8)
    odd = tmp_path / "odd.fpminr"
    odd.write_bytes(struct.pack("<Q", len(head)) + head + data[8 + n:])
    codes = []
    for args in (["info", odd], ["render", odd, "-o", tmp_path / "o.npz", "--z", "0", "-q"]):
        code, _, err = cli(capsys, *args)
        assert "Traceback" not in err
        if code != 0:
            assert_refused(code, err, "odd.fpminr")
        codes.append(code)
    assert codes[0] == codes[1], codes
