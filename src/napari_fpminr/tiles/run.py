"""Tiled runs on dask.distributed: a progress generator over tiles with cooperative stop.

Every tile is one task (:func:`~napari_fpminr.tiles.worker.run_tile`) submitted to a
``distributed.Client``:

* default: an in-process ``LocalCluster`` (threads, no extra processes), ``workers`` threads each
  running one tile at a time (default: one per GPU, else one per 4 CPU cores, at least 1; torch
  spreads each tile over the cores itself);
* ``processes=True`` (``--workers K`` on the command line): a ``LocalCluster`` of ``K`` worker
  processes, one thread each, torch limited to ``cores // K`` threads per worker;
* ``scheduler="tcp://host:8786"``: the same tasks sent to an existing cluster. Its workers need
  napari-fpminr installed, the raw file and the work folder at the same paths (a shared file
  system), and should be started with ``--nthreads 1`` so each runs one tile at a time
  (``device="auto"`` takes a worker's GPU where it has one).

Resumable: finished tiles are found in the work folder (same job hash) and not submitted again;
the assembled output depends only on the tile files, so an interrupted-then-resumed run writes
exactly what an uninterrupted one does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import FPMInputError
from ..optics.pupil_edge import edge_band_na, pupil_edge_leds
from ..recon.stop import should_stop
from ..tile_layout import Tile, TileLayout
from .local_na import corner_points_mm, local_na
from .worker import TileTask, register_stop, release_stop, run_tile, tile_done

__all__ = ["TiledJob", "TileProgress", "iter_tiles", "work_dir_for", "default_workers"]

JOB_VERSION = 2  # 2: adaptive step and a 3-bin pupil-edge band by default


@dataclasses.dataclass
class TiledJob:
    """A whole-frame tiled reconstruction: the source, the tiles, the method and its settings.

    ``planes``: the fpm planes (µm), or for inr the z range's end points (min and max are used).
    ``leds``: the board geometry for per-tile NAs (``None``: every tile uses the file's NAs).
    ``options``: fpm ``iterations``/``mode``/``recover_pupil``/``device``/``guard``; inr ``train``
    (a :class:`TrainConfig` as a dict); both ``edge_leds``: ``"drop"`` (default) leaves out each
    tile's pupil-edge LEDs (:func:`~napari_fpminr.optics.pupil_edge.pupil_edge_leds`), ``"keep"``
    uses every LED; both ``step``: ``"adaptive"`` (default) or ``"constant"``, the quasi-Newton
    solver's step (fpm, and the inr seed).
    """

    source: Any
    layout: TileLayout
    method: str
    planes: np.ndarray
    work_dir: Path
    leds: Any = None
    options: dict[str, Any] = dataclasses.field(default_factory=dict)
    level: float | None = None

    def __post_init__(self) -> None:
        if self.method not in ("fpm", "inr"):
            raise FPMInputError(f"method must be 'fpm' or 'inr', got {self.method!r}")
        self.planes = np.asarray(self.planes, np.float64).reshape(-1)
        self.work_dir = Path(self.work_dir)

    def tile_na(self, tile) -> np.ndarray:
        return local_na(self.leds, self.layout.centre_mm(tile), self.source.header.optics.na_illum)

    def kept_leds(self, tile) -> np.ndarray | None:
        """Indices of the LEDs a tile uses (``None``: all): without its pupil-edge LEDs by default.

        The edge test looks at the LEDs' NAs over the window the tile reads (its centre and
        corners, from the board geometry; the tile's NAs alone without one), widened by
        :data:`~napari_fpminr.optics.pupil_edge.EDGE_BAND_BINS` raw frequency bins of that window.
        If it would leave fewer than half the LEDs, all are kept.
        """
        if self.options.get("edge_leds", "drop") == "keep":
            return None
        o = self.source.header.optics
        top, left, h, w = self.guarded_window(tile)
        if self.leds is None:
            na = np.asarray(o.na_illum, np.float64)[None]
        else:
            read = Tile(tile.row, tile.col, top, left, h, w)  # the window read, guard band included
            half_mm = 0.5 * self.layout.dx_lr_um / 1000.0
            points = corner_points_mm(self.layout.centre_mm(read), (w * half_mm, h * half_mm))
            na = np.stack([self.leds.na_at(p) for p in points])
        edge = pupil_edge_leds(na, o.na_obj, edge_band_na(o.wavelength_um, min(h, w), o.dx_lr_um))
        if not edge.any() or edge.sum() * 2 > edge.size:
            return None
        return np.flatnonzero(~edge)

    @property
    def job_hash(self) -> str:
        """Hash of everything that decides a tile's result (input, tiles, NAs, method, settings)."""
        opts = {k: v for k, v in self.options.items() if k not in ("device", "torch_threads")}
        desc = {"version": JOB_VERSION, "source": self.source.identity(), "layout": self.layout.to_dict(),
                "method": self.method, "planes": self.planes.tolist(), "options": opts,
                "leds": None if self.leds is None else self.leds.to_dict()}
        return hashlib.sha256(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:32]

    def task(self, tile, torch_threads: int | None = None) -> TileTask:
        if self.level is None:
            self.level = self.source.background_level()
        opts = dict(self.options, torch_threads=torch_threads)
        window = self.guarded_window(tile)
        raw = None if self.source.lazy else self.source.tile_raw(*window)
        return TileTask(tile=tile, na_illum=self.tile_na(tile), method=self.method, planes=self.planes,
                        options=opts, level=float(self.level), work_dir=str(self.work_dir),
                        job_hash=self.job_hash, source=self.source if self.source.lazy else None, raw=raw,
                        window=window, keep_leds=self.kept_leds(tile))

    def guarded_window(self, tile) -> tuple[int, int, int, int]:
        """The raw window a tile reads: fpm tiles add ``options["guard"]`` px of context on every
        side (inside the frame), reconstructed and then dropped; inr tiles read the tile itself."""
        g = int(self.options.get("guard", 0) or 0) if self.method == "fpm" else 0
        if g <= 0:
            return tile.window
        H, W = self.layout.frame_shape
        top, left = max(0, tile.top - g), max(0, tile.left - g)
        bottom, right = min(H, tile.top + tile.height + g), min(W, tile.left + tile.width + g)
        return (top, left, bottom - top, right - left)

    def finished(self) -> dict:
        """``{(row, col): marker}`` of the tiles already done by this job."""
        out = {}
        for t in self.layout.tiles():
            m = tile_done(self.work_dir, t, self.job_hash)
            if m is not None:
                out[(t.row, t.col)] = m
        return out


@dataclasses.dataclass
class TileProgress:
    """One progress report: tiles done of the total (skipped = found finished), time, ETA."""

    tiles_done: int
    n_tiles: int
    skipped: int
    elapsed_s: float
    eta_s: float
    last: dict | None = None
    done: bool = False
    stopped: bool = False
    markers: dict | None = None

    @property
    def fraction(self) -> float:
        return self.tiles_done / max(1, self.n_tiles)

    def text(self) -> str:
        from ..progress import format_seconds

        extra = f" ({self.skipped} kept from an earlier run)" if self.skipped else ""
        return (f"tiles {self.tiles_done}/{self.n_tiles}{extra} elapsed {format_seconds(self.elapsed_s)} "
                f"eta {format_seconds(self.eta_s)}")


def work_dir_for(out) -> Path:
    """``OUT.tiles`` next to the output: where finished tiles are kept."""
    out = Path(out)
    return out.with_name(out.name + ".tiles")


def default_workers() -> int:
    try:
        import torch

        if torch.cuda.is_available():
            return max(1, torch.cuda.device_count())
    except Exception:  # pragma: no cover
        pass
    return max(1, (os.cpu_count() or 1) // 4)


def _client(scheduler: str | None, workers: int | None, processes: bool):
    """``(client, cluster or None, torch threads per tile)``."""
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout="20s"), None, None
        except Exception as exc:  # OSError, TimeoutError, ...
            raise FPMInputError(f"cannot reach the dask scheduler at {scheduler}: {' '.join(str(exc).split())[:160]}") \
                from None
    n = int(workers or default_workers())
    if processes:
        cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                               silence_logs=40)
        return Client(cluster), cluster, max(1, (os.cpu_count() or 1) // n)
    cluster = LocalCluster(n_workers=1, threads_per_worker=n, processes=False, dashboard_address=None,
                           silence_logs=40)
    return Client(cluster), cluster, None


def iter_tiles(job: TiledJob, *, scheduler: str | None = None, workers: int | None = None,
               processes: bool = False, stop=None) -> Iterator[TileProgress]:
    """Run every unfinished tile of ``job`` on dask; yield a :class:`TileProgress` per finished tile.

    The last event has ``done=True`` (all tiles finished; ``markers`` maps ``(row, col)`` to each
    tile's marker) or ``stopped=True`` (``stop`` fired: pending tiles were cancelled; what
    finished is kept for the next run).
    """
    job.work_dir.mkdir(parents=True, exist_ok=True)
    (job.work_dir / "job.json").write_text(json.dumps({"job_hash": job.job_hash, "method": job.method,
                                                       "layout": job.layout.to_dict()}), encoding="utf-8")
    markers = job.finished()
    n = job.layout.n_tiles
    skipped = len(markers)
    t0 = time.perf_counter()
    todo = [t for t in job.layout.tiles() if (t.row, t.col) not in markers]
    yield TileProgress(len(markers), n, skipped, 0.0, float("nan"))
    if not todo:
        yield TileProgress(n, n, skipped, 0.0, 0.0, done=True, markers=markers)
        return
    if job.level is None:
        job.level = job.source.background_level()
    client, cluster, threads = _client(scheduler, workers, processes)
    token = register_stop(stop) if cluster is not None and not processes else None
    try:
        from distributed import as_completed

        futures = [client.submit(run_tile, job.task(t, threads), token,
                                 key=f"fpminr-{job.job_hash[:12]}-{t.name}", pure=False) for t in todo]
        computed = 0
        stopped = False
        for fut in as_completed(futures):
            if should_stop(stop):
                stopped = True
                break
            marker = fut.result()
            if marker.get("stopped"):
                stopped = True
                break
            markers[(marker["row"], marker["col"])] = marker
            computed += 1
            elapsed = time.perf_counter() - t0
            eta = elapsed / computed * (len(todo) - computed)
            yield TileProgress(len(markers), n, skipped, elapsed, eta, last=marker)
        if stopped:
            for f in futures:
                f.cancel()
            yield TileProgress(len(markers), n, skipped, time.perf_counter() - t0, float("nan"), stopped=True,
                               markers=markers)
            return
    finally:
        release_stop(token)
        client.close()
        if cluster is not None:
            cluster.close()
    yield TileProgress(n, n, skipped, time.perf_counter() - t0, 0.0, done=True, markers=markers)
