"""Tiled runs: a progress generator over tiles with cooperative stop, in this process or on dask.

Every tile is one task (:func:`~napari_fpminr.tiles.worker.run_tile`):

* default: a thread pool in this process (no dask, no sockets), ``workers`` threads each running
  one tile at a time (default: one per GPU, else one per 4 CPU cores, at least 1; torch spreads
  each tile over the cores itself);
* ``processes=True`` (``--workers K`` on the command line): a ``distributed.LocalCluster`` of ``K``
  worker processes, one thread each, torch limited to ``cores // K`` threads per worker. Every
  socket it opens listens on 127.0.0.1 only; its dashboard is served (on 127.0.0.1) only when
  asked for (``dashboard=True``). The workers end with this process, also when it is killed;
* ``scheduler="tcp://host:8786"``: the same tasks sent to an existing cluster. Its workers need
  napari-fpminr installed, the raw file and the work folder at the same paths (a shared file
  system), and should be started with ``--nthreads 1`` so each runs one tile at a time
  (``device="auto"`` takes a worker's GPU where it has one).

On dask a run never waits silently: with no worker available it says so, and gives up after
``scheduler_timeout_s``; a lost scheduler or a tile whose workers keep dying ends the run with one
line (:class:`FPMInputError`). The work folder is created only once the tiles can start.

Resumable: finished tiles are found in the work folder (same job hash, data files whose content
hash matches their marker) and not submitted again; a damaged or foreign tile is computed again
with one warning line. The assembled output depends only on the tile files, so an
interrupted-then-resumed run writes exactly what an uninterrupted one does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import socket
import sys
import time
import warnings
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
#: how long a dask run waits with no worker available before giving up (``--scheduler-timeout``)
SCHEDULER_TIMEOUT_S = 300.0
#: how long an address is tried before the run gives up on reaching a scheduler
CONNECT_TIMEOUT_S = 5.0
_POLL_S = 0.5


@dataclasses.dataclass
class TiledJob:
    """A whole-frame tiled reconstruction: the source, the tiles, the method and its settings.

    ``planes``: the fpm planes (µm), or for inr the z range's end points (min and max are used).
    ``leds``: the board geometry for per-tile NAs (``None``: every tile uses the file's NAs).
    ``calibration``: the illumination calibration the source was corrected with
    (:func:`~napari_fpminr.tiles.source.calibrated`); it enters the job hash.
    ``options``: fpm ``iterations``/``mode``/``recover_pupil``/``correct_intensity``/``device``/``guard``; inr ``train``
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
    calibration: Any = None
    #: ``{tile name: reason}`` of finished tiles that failed their check (computed again)
    rejected: dict = dataclasses.field(default_factory=dict)

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
                "leds": None if self.leds is None else self.leds.to_dict(),
                "calibration": None if self.calibration is None else
                {k: v for k, v in self.calibration.to_dict().items() if k != "report"}}
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
        """``{(row, col): marker}`` of the tiles already done by this job (``rejected``: those
        whose files failed their check)."""
        out = {}
        self.rejected = {}
        if not self.work_dir.is_dir():
            return out
        for t in self.layout.tiles():
            m = tile_done(self.work_dir, t, self.job_hash, self.rejected)
            if m is not None:
                out[(t.row, t.col)] = m
        return out

    def rejected_text(self) -> str | None:
        """One line about the finished tiles computed again because their files failed the check."""
        if not self.rejected:
            return None
        name, reason = next(iter(self.rejected.items()))
        more = f" and {len(self.rejected) - 1} more" if len(self.rejected) > 1 else ""
        return (f"{self.work_dir}: {len(self.rejected)} finished tile(s) failed their check and are computed "
                f"again ({name}: {reason}{more})")


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


class _Threads:
    """Tiles on a thread pool in this process: no dask, no sockets."""

    def __init__(self, n: int):
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="fpminr-tile")
        self.threads = None
        self.in_process = True

    def submit(self, fn, *args, key: str):
        return self.pool.submit(fn, *args)

    def wait(self, pending: set, timeout: float) -> tuple[set, set]:
        from concurrent.futures import FIRST_COMPLETED, wait

        done, rest = wait(pending, timeout=timeout, return_when=FIRST_COMPLETED)
        return set(done), set(rest)

    def check(self) -> None:
        """Threads of this process cannot vanish: nothing to check."""

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


class _Dask:
    """Tiles on a dask.distributed cluster (local worker processes or an existing scheduler)."""

    def __init__(self, client, cluster, where: str, threads: int | None, timeout_s: float):
        self.client, self.cluster, self.where = client, cluster, where
        self.threads = threads
        self.timeout_s = float(timeout_s)
        self.in_process = False
        self._idle_since: float | None = None

    def submit(self, fn, *args, key: str):
        return self.client.submit(fn, *args, key=key, pure=False)

    def wait(self, pending: set, timeout: float) -> tuple[set, set]:
        from distributed import wait

        self._check_scheduler()
        try:
            done, rest = wait(list(pending), timeout=timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:
            return set(), pending
        except Exception as exc:  # noqa: BLE001 - futures cancelled by a lost connection, a closed client
            self._check_scheduler()
            raise self._lost(exc) from None
        return set(done), set(rest)

    def _lost(self, exc: BaseException) -> FPMInputError:
        detail = " ".join(str(exc).split())[:160] or type(exc).__name__
        return FPMInputError(f"lost the dask scheduler at {self.where} ({detail}); finished tiles are kept for "
                             "the next run")

    def _check_scheduler(self) -> None:
        if self.client.status not in ("running", "newly-created"):
            raise self._lost(RuntimeError(f"client {self.client.status}"))

    def check(self) -> None:
        """Give up, in one line, when no worker has been available for ``timeout_s``."""
        self._check_scheduler()
        try:
            workers = self.client.nthreads()
        except Exception as exc:  # noqa: BLE001 - OSError, CommClosedError, RuntimeError of a closed pool
            raise self._lost(exc) from None
        if workers:
            self._idle_since = None
            return
        now = time.monotonic()
        if self._idle_since is None:
            self._idle_since = now
            print(f"tiles: no dask worker is available at {self.where}; waiting up to {self.timeout_s:g} s "
                  "(--scheduler-timeout)", file=sys.stderr)
        elif now - self._idle_since > self.timeout_s:
            raise FPMInputError(f"no dask worker was available at {self.where} for {self.timeout_s:g} s (all "
                                "workers died or none was started); finished tiles are kept for the next run")

    def close(self) -> None:
        import contextlib

        with contextlib.suppress(Exception):
            self.client.close(timeout=5)
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close(timeout=10)


def _reachable(address: str) -> None:
    """Fail at once, in one line, when nothing accepts connections at a ``tcp://host:port`` address."""
    from urllib.parse import urlsplit

    if not address.startswith("tcp://"):
        return
    try:
        parts = urlsplit(address)
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise FPMInputError(f"--scheduler {address}: expected tcp://HOST:PORT")
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise FPMInputError(f"cannot reach the dask scheduler at {address}: {reason}") from None


def _local_cluster(n: int, dashboard: bool):
    """A LocalCluster of ``n`` single-thread worker processes listening on 127.0.0.1 only."""
    from distributed import LocalCluster

    address = "127.0.0.1:8787" if dashboard else "127.0.0.1:0"
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=address if dashboard else None, silence_logs=40,
                           scheduler_kwargs={"dashboard": dashboard, "dashboard_address": address})
    if dashboard:
        print(f"tiles: dask dashboard at {cluster.dashboard_link}", file=sys.stderr)
    return cluster


def _pool(scheduler: str | None, workers: int | None, processes: bool, dashboard: bool = False,
          scheduler_timeout_s: float = SCHEDULER_TIMEOUT_S):
    """Where the tiles run: :class:`_Threads` in this process, else :class:`_Dask`."""
    from distributed import Client

    if scheduler:
        _reachable(scheduler)
        try:
            client = Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S * 2:g}s")
        except Exception as exc:  # noqa: BLE001 - OSError, TimeoutError, ...
            raise FPMInputError(f"cannot reach the dask scheduler at {scheduler}: "
                                f"{' '.join(str(exc).split())[:160]}") from None
        return _Dask(client, None, scheduler, None, scheduler_timeout_s)
    n = int(workers or default_workers())
    if not processes:
        return _Threads(n)
    cluster = _local_cluster(n, dashboard)
    client = Client(cluster)
    from ._watch_parent import WatchParent

    client.register_plugin(WatchParent())
    return _Dask(client, cluster, f"{n} local worker processes", max(1, (os.cpu_count() or 1) // n),
                 scheduler_timeout_s)


def _start_work_dir(job: TiledJob) -> bool:
    """Create the work folder and write ``job.json``; True when the folder was created now."""
    created = not job.work_dir.exists()
    job.work_dir.mkdir(parents=True, exist_ok=True)
    from ..io.atomic import atomic_write

    with atomic_write(job.work_dir / "job.json") as tmp:
        tmp.write_text(json.dumps({"job_hash": job.job_hash, "method": job.method,
                                   "layout": job.layout.to_dict()}), encoding="utf-8")
    return created


def _drop_if_useless(job: TiledJob, created: bool) -> None:
    """After a failure: remove a work folder made by this run that holds no finished tile."""
    if created and job.work_dir.is_dir() and not any(job.work_dir.glob("tile_*.json")):
        shutil.rmtree(job.work_dir, ignore_errors=True)


def iter_tiles(job: TiledJob, *, scheduler: str | None = None, workers: int | None = None,
               processes: bool = False, stop=None, dashboard: bool = False,
               scheduler_timeout_s: float = SCHEDULER_TIMEOUT_S) -> Iterator[TileProgress]:
    """Run every unfinished tile of ``job``; yield a :class:`TileProgress` per finished tile.

    The last event has ``done=True`` (all tiles finished; ``markers`` maps ``(row, col)`` to each
    tile's marker) or ``stopped=True`` (``stop`` fired: pending tiles were cancelled; what
    finished is kept for the next run). Finished tiles whose files fail their check are computed
    again, with one warning.
    """
    markers = job.finished()
    note = job.rejected_text()
    if note:
        warnings.warn(note, stacklevel=2)
    n = job.layout.n_tiles
    skipped = len(markers)
    todo = [t for t in job.layout.tiles() if (t.row, t.col) not in markers]
    yield TileProgress(len(markers), n, skipped, 0.0, float("nan"))
    if not todo:
        yield TileProgress(n, n, skipped, 0.0, 0.0, done=True, markers=markers)
        return
    if job.level is None:
        job.level = job.source.background_level()
    pool = _pool(scheduler, workers, processes, dashboard, scheduler_timeout_s)
    created = False
    try:
        created = _start_work_dir(job)
        yield from _run_pool(job, pool, todo, markers, skipped, stop)
    except BaseException:
        _drop_if_useless(job, created)
        raise
    finally:
        pool.close()


def _run_pool(job: TiledJob, pool, todo: list, markers: dict, skipped: int, stop) -> Iterator[TileProgress]:
    """Submit ``todo`` to ``pool``; yield a progress event per finished tile, then the last one."""
    n = job.layout.n_tiles
    t0 = time.perf_counter()
    token = register_stop(stop) if pool.in_process else None
    try:
        pending = {pool.submit(run_tile, job.task(t, pool.threads), token,
                               key=f"fpminr-{job.job_hash[:12]}-{t.name}") for t in todo}
        computed = 0
        stopped = False
        while pending and not stopped:
            stopped = should_stop(stop)
            done, pending = (set(), pending) if stopped else pool.wait(pending, _POLL_S)
            if not done and not stopped:
                pool.check()
            for fut in done:
                marker = _result(fut)
                if marker.get("stopped"):
                    stopped = True
                    continue
                markers[(marker["row"], marker["col"])] = marker
                computed += 1
                elapsed = time.perf_counter() - t0
                yield TileProgress(len(markers), n, skipped, elapsed, elapsed / computed * (len(todo) - computed),
                                   last=marker)
        if stopped:
            for f in pending:
                f.cancel()
            yield TileProgress(len(markers), n, skipped, time.perf_counter() - t0, float("nan"), stopped=True,
                               markers=markers)
            return
    finally:
        release_stop(token)
    yield TileProgress(n, n, skipped, time.perf_counter() - t0, 0.0, done=True, markers=markers)


def _result(fut) -> dict:
    """A finished tile's marker; a tile whose workers kept dying is one line."""
    try:
        return fut.result()
    except FPMInputError:
        raise
    except Exception as exc:
        if type(exc).__name__ == "KilledWorker":
            raise FPMInputError(f"the workers running a tile died again and again ({' '.join(str(exc).split())[:160]}"
                                "); finished tiles are kept for the next run") from None
        raise
