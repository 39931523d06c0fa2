"""One tile's reconstruction, as a dask task, and its files in the work directory.

A task reads its window of the raw stack, sets the illumination NAs seen from the tile's centre,
reconstructs (``fpm``: the conventional stack at the requested planes; ``inr``: the seeded model
over the z range, :func:`recon.train.iter_train`; both with the quasi-Newton solver's adaptive step
unless ``options["step"] == "constant"``: a tile's data never fit its model exactly, and with a
constant step the last bright-field LEDs' misfit ends up in the tile) and writes, atomically, into
the work folder:

* ``tile_RRR_CCC.safetensors`` (fpm: ``amplitude`` and ``phase`` float32 ``(Z, h·up, w·up)``)
  or ``tile_RRR_CCC.fpminr`` (inr: the tile's model file);
* then ``tile_RRR_CCC.json``: the job hash, the window, the NAs used, the amplitude scale, the
  tile's best-focus depth, timing, and the sha256 of the data file. A tile counts as done only
  when this marker passes :func:`check_marker` (the job's hash, its own row, column and window,
  a data file of its own name in the work folder whose content hash matches, plausible numbers),
  so a run killed at any moment leaves either a finished tile or nothing usable, and a damaged,
  truncated or foreign tile file is computed again instead of being used.

Amplitude scale: each tile's reconstruction normalises by the tile's own bright-field mean over
the LEDs it uses (:meth:`RawData.normalized`; pupil-edge LEDs, half dark, are not among them);
multiplying its amplitude by ``sqrt(level_tile / level_frame)`` puts every tile on the whole
frame's scale (a transparent sample ≈ 1 everywhere).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import stat
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..rawdata import RawData
from ..tile_layout import Tile

__all__ = ["TileTask", "run_tile", "tile_done", "check_marker", "read_marker", "file_sha256", "best_focus",
           "register_stop", "release_stop"]

MARKER_VERSION = 2  # 2: the data file's sha256
#: the largest marker read back (a marker is a few hundred bytes; anything bigger is not ours)
MARKER_MAX_BYTES = 1 << 20
#: a tile's amplitude scale sqrt(level_tile / level_frame): far outside this, the marker is damaged
SCALE_RANGE = (1e-6, 1e6)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
#: stop signals of in-process runs, by token (dask serialises task arguments, and an Event cannot be)
_STOPS: dict[str, Any] = {}


def register_stop(stop) -> str | None:
    """A token under which tasks running in this process find ``stop`` (``None`` for no stop)."""
    if stop is None:
        return None
    token = f"stop-{id(stop)}-{time.monotonic_ns()}"
    _STOPS[token] = stop
    return token


def release_stop(token: str | None) -> None:
    _STOPS.pop(token or "", None)


@dataclasses.dataclass
class TileTask:
    """Everything a worker needs for one tile (picklable; sent to dask workers)."""

    tile: Tile
    na_illum: np.ndarray
    method: str
    planes: np.ndarray
    options: dict[str, Any]
    level: float
    work_dir: str
    job_hash: str
    source: Any = None          # a lazy source (reads its own window), or
    raw: RawData | None = None  # the tile's data already cut out (in-memory formats)
    window: tuple[int, int, int, int] | None = None  # raw window read: the tile plus its guard band
    keep_leds: np.ndarray | None = None  # LEDs the tile uses (None: all); pupil-edge LEDs left out

    @property
    def read_window(self) -> tuple[int, int, int, int]:
        return tuple(self.window) if self.window is not None else self.tile.window

    @property
    def stem(self) -> Path:
        return Path(self.work_dir) / self.tile.name


def read_marker(work_dir, tile: Tile) -> dict | None:
    """The tile's marker as written (``None`` when absent, unreadable, too large or not a JSON object)."""
    p = Path(work_dir) / f"{tile.name}.json"
    try:
        if p.stat().st_size > MARKER_MAX_BYTES:
            return None
        marker = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return marker if isinstance(marker, dict) else None


def file_sha256(path) -> str:
    """sha256 of a file's content, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _finite_in(value, lo: float, hi: float) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
        and lo <= value <= hi


def _marker_fields_problem(marker: dict, tile: Tile) -> str | None:
    """What is wrong with a marker's own fields for ``tile`` (``None``: nothing)."""
    if marker.get("version") != MARKER_VERSION:
        return f"marker version {marker.get('version')!r}"
    if marker.get("row") != tile.row or marker.get("col") != tile.col or marker.get("window") != list(tile.window):
        return "the marker belongs to another tile"
    if marker.get("file") not in (f"{tile.name}.safetensors", f"{tile.name}.fpminr"):
        return "the marker names a data file that is not this tile's"
    if not _finite_in(marker.get("amplitude_scale"), *SCALE_RANGE):
        return f"amplitude_scale {marker.get('amplitude_scale')!r} is not a plausible number"
    focus = marker.get("best_focus_um")
    if focus is not None and not _finite_in(focus, -1e6, 1e6):
        return f"best_focus_um {focus!r} is not a plausible number"
    if not isinstance(marker.get("sha256"), str) or not _SHA256.match(marker["sha256"]):
        return "the marker holds no content hash"
    if marker.get("marker_sha256") != _marker_hash(marker):
        return "the marker was damaged or edited (its own hash differs)"
    return None


def _marker_hash(marker: dict) -> str:
    """sha256 of a marker's canonical JSON without this hash (an edited or damaged marker shows)."""
    body = {k: v for k, v in marker.items() if k not in ("marker_sha256", "skipped")}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def check_marker(work_dir, tile: Tile, marker: dict) -> str | None:
    """Why ``marker`` cannot be trusted for ``tile`` (``None``: its data file is the one it describes).

    The data file must be a regular file of the tile's own name directly in ``work_dir`` (never a
    path elsewhere, never a symbolic link) whose sha256 equals the marker's.
    """
    problem = _marker_fields_problem(marker, tile)
    if problem is not None:
        return problem
    data = Path(work_dir) / marker["file"]
    try:
        if not stat.S_ISREG(data.lstat().st_mode):
            return f"{data.name} is not a regular file"
        if file_sha256(data) != marker["sha256"]:
            return f"{data.name} is damaged or foreign (content hash differs)"
    except OSError as exc:
        return f"{data.name} cannot be read ({exc.strerror or exc})"
    return None


def tile_done(work_dir, tile: Tile, job_hash: str, problems: dict | None = None) -> dict | None:
    """The tile's marker when it was finished by this job and its data file checks out.

    A marker of another job (other options) is silently not counted; one of this job that fails
    :func:`check_marker` is not counted either, and its reason lands in ``problems[tile.name]``.
    """
    marker = read_marker(work_dir, tile)
    if marker is None or marker.get("job_hash") != job_hash:
        return None
    problem = check_marker(work_dir, tile, marker)
    if problem is not None:
        if problems is not None:
            problems[tile.name] = problem
        return None
    return marker


def best_focus(amplitude: np.ndarray, z_um: np.ndarray) -> float:
    """Depth of the sharpest plane: normal variance ``Σ(a - μ)² / (N μ)`` of the amplitude."""
    a = np.asarray(amplitude, np.float64).reshape(amplitude.shape[0], -1)
    mu = a.mean(axis=1)
    nv = ((a - mu[:, None]) ** 2).mean(axis=1) / np.maximum(mu, 1e-12)
    return float(np.asarray(z_um)[int(np.argmax(nv))])


def _tile_raw(task: TileTask) -> RawData:
    if task.raw is not None:
        raw = task.raw
    else:
        raw = task.source.tile_raw(*task.read_window)
    raw = raw.with_optics(na_illum=np.asarray(task.na_illum, np.float64), pupil=None)
    return raw if task.keep_leds is None else raw.select_leds(np.asarray(task.keep_leds))


def run_tile(task: TileTask, stop_token: str | None = None) -> dict:
    """Reconstruct one tile and write its files; returns its marker (also when already done).

    ``stop_token`` (from :func:`register_stop`) reaches the run's stop signal when the task runs
    in the process that started the run; elsewhere the tile simply runs to its end.
    """
    stop = _STOPS.get(stop_token or "")
    done = tile_done(task.work_dir, task.tile, task.job_hash)
    if done is not None:
        return dict(done, skipped=True)
    threads = task.options.get("torch_threads")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    t0 = time.perf_counter()
    raw = _tile_raw(task)
    scale = math.sqrt(raw.background_level() / task.level)
    if task.method == "fpm":
        info = _run_fpm(task, raw, scale, stop)
    else:
        info = _run_inr(task, raw, scale, stop)
    if info is None:  # stopped
        return {"stopped": True, "row": task.tile.row, "col": task.tile.col}
    marker = {"version": MARKER_VERSION, "job_hash": task.job_hash, "row": task.tile.row, "col": task.tile.col,
              "window": list(task.tile.window), "amplitude_scale": scale, "elapsed_s": time.perf_counter() - t0,
              "na_illum_mean": np.asarray(task.na_illum).mean(axis=0).tolist(),
              "leds_used": int(raw.n_leds), "leds_left_out": [] if task.keep_leds is None else
              sorted(set(range(len(task.na_illum))) - set(int(i) for i in task.keep_leds)), **info,
              "sha256": file_sha256(task.stem.parent / info["file"])}
    marker = json.loads(json.dumps(marker))  # as it will be read back (tuples become lists)
    marker["marker_sha256"] = _marker_hash(marker)
    from ..io.atomic import atomic_write

    with atomic_write(task.stem.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(marker), encoding="utf-8")
    return dict(marker, skipped=False)


def _adaptive_step(options: dict) -> bool:
    """Whether the tile's quasi-Newton solver (fpm, inr seed) uses the adaptive step (the default)."""
    return options.get("step", "adaptive") == "adaptive"


def _run_fpm(task: TileTask, raw: RawData, scale: float, stop) -> dict | None:
    import torch
    from safetensors.torch import save_file

    from ..io.atomic import atomic_write
    from ..recon.conventional import iter_conventional

    o = task.options
    last = None
    for last in iter_conventional(raw, task.planes, iterations=int(o.get("iterations", 25)),
                                  mode=o.get("mode", "batched"), pupil_update=bool(o.get("recover_pupil")),
                                  device=o.get("device", "auto"), stop=stop,
                                  adaptive_step=_adaptive_step(o),
                                  intensity_correction=bool(o.get("correct_intensity", False))):
        pass
    if last is None or last.stopped or last.stack is None:
        return None
    # keep the tile itself: a guard band (read around the tile, reconstructed, dropped) keeps
    # the tile's own edge, where a reconstruction degrades, out of the mosaic
    up = raw.optics.upsample
    top, left = (task.tile.top - task.read_window[0]) * up, (task.tile.left - task.read_window[1]) * up
    keep = (slice(None), slice(top, top + task.tile.height * up), slice(left, left + task.tile.width * up))
    amp = (last.stack.amplitude[keep] * np.float32(scale)).astype(np.float32)
    phase = last.stack.phase[keep].astype(np.float32)
    path = task.stem.with_suffix(".safetensors")
    with atomic_write(path) as tmp:
        save_file({"amplitude": torch.from_numpy(np.ascontiguousarray(amp)),
                   "phase": torch.from_numpy(np.ascontiguousarray(phase))}, str(tmp),
                  metadata={"fpminr-tile": json.dumps({"z_um": np.asarray(task.planes).tolist()})})
    return {"file": path.name, "best_focus_um": best_focus(amp, task.planes), "device": last.stack.meta.get("device")}


def _run_inr(task: TileTask, raw: RawData, scale: float, stop) -> dict | None:
    from ..io.model_file import save_model
    from ..recon.train import TrainConfig, iter_train

    o = task.options
    config = TrainConfig(**{"seed_adaptive_step": _adaptive_step(o), **o.get("train", {})})
    z = np.asarray(task.planes, np.float64)
    model = None
    for event in iter_train(raw, float(z.min()), float(z.max()), config, stop=stop):
        if event.model is not None:
            model = event.model
        if event.stopped:
            return None
    if model is None:
        return None
    path = task.stem.with_suffix(".fpminr")
    save_model(model, path)
    probe = np.linspace(model.z_min_um, model.z_max_um, 21)
    amp, _ = model.render(probe, step=2)
    return {"file": path.name, "best_focus_um": best_focus(amp, probe), "device": str(model.device)}
