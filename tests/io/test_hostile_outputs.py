"""Outputs under faults (issue 10 item 4): a run killed at the worst moment never loses the
previous output, and what it leaves behind is tidied by the next run."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from napari_fpminr.io.safety import clean_stale
from napari_fpminr.io.stack_files import StackArrays, write_stack


def stack(value: float) -> StackArrays:
    amp = np.full((3, 8, 8), value, np.float32)
    return StackArrays(amp, amp * 0, np.array([-1.0, 0.0, 1.0]), 0.5)


def zarr_value(path) -> float:
    import zarr

    return float(zarr.open_group(str(path), mode="r")["0"][0, 0, 0, 0])


def run_and_kill(out, value, when, fallback=False):
    """Write ``stack(value)`` to ``out`` in a child that dies by ``os._exit`` at ``when``."""
    code = textwrap.dedent(f"""
        import os, numpy as np
        import napari_fpminr.io.stack_files as sf
        from napari_fpminr.io.stack_files import StackArrays, write_stack
        if {fallback!r}:
            sf._EXCHANGE_SUPPORTED = False
        real_replace, real_exchange = os.replace, sf._exchange
        def replace(a, b):
            real_replace(a, b)
            if {when!r} == "after-first-rename" and str(b).endswith(".old-" + str(os.getpid())):
                os._exit(9)  # killed between "old aside" and "new in"
        def exchange(a, b):
            done = real_exchange(a, b)
            if {when!r} == "after-exchange":
                os._exit(9)  # killed before the old content (now in the temp folder) is removed
            return done
        def npz(tmp, s):
            tmp.write_bytes(b"half a file")
            os._exit(9)  # killed in the middle of writing
        sf.os.replace = replace
        sf._exchange = exchange
        if {when!r} == "mid-npz":
            sf._write_npz = npz
        amp = np.full((3, 8, 8), {value!r}, np.float32)
        write_stack({str(out)!r}, StackArrays(amp, amp * 0, np.array([-1.0, 0.0, 1.0]), 0.5))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr


def hidden(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_overwriting_a_zarr_never_leaves_the_name_absent(tmp_path):
    out = tmp_path / "s.zarr"
    write_stack(out, stack(1.0))
    run_and_kill(out, 2.0, "after-exchange")
    assert out.is_dir() and zarr_value(out) == 2.0  # the swap was one atomic step
    assert hidden(tmp_path)  # the old content, in a temp folder of the dead run ...
    write_stack(out, stack(3.0))
    assert zarr_value(out) == 3.0 and hidden(tmp_path) == []  # ... tidied by the next run


def test_without_an_atomic_exchange_a_kill_between_the_renames_is_recovered(tmp_path):
    out = tmp_path / "s.zarr"
    write_stack(out, stack(1.0))
    run_and_kill(out, 2.0, "after-first-rename", fallback=True)
    assert not out.exists()  # the window the fallback cannot close ...
    clean_stale(out)  # ... which the next run (any write of this output) closes first
    assert out.is_dir() and zarr_value(out) == 1.0
    assert hidden(tmp_path) == []


def test_next_zarr_write_restores_then_replaces(tmp_path):
    out = tmp_path / "s.zarr"
    write_stack(out, stack(1.0))
    run_and_kill(out, 2.0, "after-first-rename", fallback=True)
    write_stack(out, stack(3.0))
    assert zarr_value(out) == 3.0 and hidden(tmp_path) == []


def test_a_killed_npz_write_leaves_a_temp_file_the_next_write_removes(tmp_path):
    out = tmp_path / "s.npz"
    write_stack(out, stack(1.0))
    run_and_kill(out, 2.0, "mid-npz")
    assert np.load(out)["amplitude"][0, 0, 0] == 1.0  # the old output is intact
    assert len(hidden(tmp_path)) == 1
    write_stack(out, stack(3.0))
    assert np.load(out)["amplitude"][0, 0, 0] == 3.0 and hidden(tmp_path) == []


def test_temp_files_of_live_runs_and_foreign_files_are_left_alone(tmp_path):
    import os

    out = tmp_path / "s.npz"
    live = tmp_path / f".s.npz.{os.getppid()}.abc123.tmp.npz"  # our parent process: alive
    foreign = tmp_path / ".s.npz.notes"
    live.write_bytes(b"x")
    foreign.write_bytes(b"y")
    write_stack(out, stack(1.0))
    assert live.exists() and foreign.exists()


def test_failed_zarr_write_keeps_the_old_output(tmp_path, monkeypatch):
    import napari_fpminr.io.stack_files as sf

    out = tmp_path / "s.zarr"
    write_stack(out, stack(1.0))

    def fail(tmp, s):
        (tmp / "partial").write_bytes(b"x")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sf, "_write_zarr", fail)
    with pytest.raises(Exception, match="s.zarr: cannot write: disk full"):
        write_stack(out, stack(2.0))
    assert zarr_value(out) == 1.0 and hidden(tmp_path) == []
