"""Mosaic model files: one ``.fpminr`` holding the per-tile models of a whole slide.

Layout (safetensors, never pickle), mosaic format version 2 (version 1, whose tiles' low-rank
models are all float16, still reads): every tile's model tensors under
the prefix ``tile.RRR.CCC.`` (exactly the keys of that tile's own ``.fpminr`` file), and one
metadata entry ``"fpminr-mosaic"`` holding JSON:

    {"format": "fpminr-mosaic", "format_version": 2,
     "layout": TileLayout.to_dict(),           # frame, tile size, overlap, upsample, raw pixel
     "z_min_um": .., "z_max_um": .., "dx_hr_um": .., "optics": the frame's Optics.to_dict(),
     "tiles": [{"row", "col", "window": [top, left, h, w] (raw px), "amplitude_scale",
                "best_focus_um", "na_illum_mean", "model": <the tile model's own header>,
                "sha256": <hash of the tile's tensors>}, ...],
     "meta": {...}}

Every number of the header is checked when the file is opened (:func:`check_head`: finite, in
range, consistent with the layout), and each tile's tensors are checked against their hash when
the tile is decoded, so a damaged or edited mosaic is one :class:`FPMInputError` line instead of
NaN or negative amplitudes, a runaway z axis or a huge allocation.

Rendering any z over any region: the tiles that meet the region are decoded there (each model
at its own hr window), multiplied by the layout's blending weights (which sum to 1) and added;
the amplitude is multiplied by the tile's ``amplitude_scale`` (the frame's brightness scale).
``step`` samples every ``step``-th hr pixel (pyramid level ``L``: step ``2**L``). Decoded tile
models are kept in a small LRU cache.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import FPMInputError
from ..optics.system import Optics
from ..recon.inr import FPMINR, INRArchitecture
from ..recon.lowrank import LowRankArchitecture, LowRankField
from ..recon.model import Model
from ..tile_layout import TileLayout
from .atomic import atomic_write
from .model_file import LOWRANK_PREFIX, PUPIL_KEY, _check_layout, _expected_layout

__all__ = ["MOSAIC_FORMAT", "MosaicModel", "is_mosaic", "load_mosaic", "save_mosaic"]

MOSAIC_FORMAT = "fpminr-mosaic"
MOSAIC_VERSION = 2  # 2: tile models may store their weakest low-rank terms in the 16-bit log-polar code
#: versions this program reads (1: before the log-polar code; its tiles read like version-2 models)
MOSAIC_VERSIONS_READ = (1, 2)
META_KEY = "fpminr-mosaic"
#: limits of a plausible mosaic header
MAX_TILES = 100_000
MAX_HR_SIDE = 1 << 21
MAX_Z_UM = 1e4
SCALE_RANGE = (1e-6, 1e6)


def _prefix(row: int, col: int) -> str:
    return f"tile.{row:03d}.{col:03d}."


def save_mosaic(path, layout: TileLayout, tiles: list[dict], work_dir, optics: Optics,
                z_range_um: tuple[float, float], meta: dict | None = None) -> Path:
    """Gather the tile models named by ``tiles`` (markers, files in ``work_dir``) into one file."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    entries = []
    for m in sorted(tiles, key=lambda m: (m["row"], m["col"])):
        src = Path(work_dir) / m["file"]
        try:
            with safe_open(str(src), framework="pt", device="cpu") as f:
                header = json.loads(f.metadata()["fpminr"])
                own = {k: f.get_tensor(k) for k in f.keys()}
        except Exception as exc:  # noqa: BLE001 - a damaged tile file
            raise FPMInputError(f"cannot read the tile model: {' '.join(str(exc).split())[:160]}", src) from None
        tensors.update({_prefix(m["row"], m["col"]) + k: t for k, t in own.items()})
        entry = {k: m.get(k) for k in ("row", "col", "window", "amplitude_scale", "best_focus_um",
                                       "na_illum_mean")} | {"model": header}
        entries.append(json.loads(json.dumps(entry, default=_json_default)))
        entries[-1]["sha256"] = _tile_hash(entries[-1], own)
    head = {"format": MOSAIC_FORMAT, "format_version": MOSAIC_VERSION, "layout": layout.to_dict(),
            "z_min_um": float(z_range_um[0]), "z_max_um": float(z_range_um[1]),
            "dx_hr_um": optics.dx_hr_um, "optics": optics.replace(pupil=None).to_dict(), "tiles": entries,
            "meta": meta or {}}
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(head, default=_json_default)})
    return path


def _tile_hash(entry: dict, tensors: dict) -> str:
    """sha256 over a tile's header entry (all but its hash; canonical JSON) and its tensors (names,
    dtypes, shapes and bytes, in name order): an edited number or a flipped byte changes it."""
    h = hashlib.sha256()
    h.update(json.dumps({k: v for k, v in entry.items() if k != "sha256"}, sort_keys=True).encode())
    for k in sorted(tensors):
        t = tensors[k].contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _number(value, name: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not lo <= value <= hi:
        raise ValueError(f"{name} {str(value)[:40]} is not a number from {lo:g} to {hi:g}")
    return float(value)


def _check_layout_dict(data) -> TileLayout:
    if not isinstance(data, dict):
        raise ValueError("layout is not an object")
    frame = data.get("frame_shape")
    if not (isinstance(frame, list) and len(frame) == 2):
        raise ValueError("layout frame_shape is not two numbers")
    for v in frame:
        _number(v, "layout frame side", 1, MAX_HR_SIDE)
    _number(data.get("tile"), "layout tile", 16, MAX_HR_SIDE)
    _number(data.get("overlap"), "layout overlap", 0, MAX_HR_SIDE)
    _number(data.get("upsample"), "layout upsample", 1, 32)
    _number(data.get("dx_lr_um"), "layout dx_lr_um", 1e-4, 1e3)
    layout = TileLayout.from_dict(data)
    if max(layout.hr_shape) > MAX_HR_SIDE or layout.n_tiles > MAX_TILES:
        raise ValueError(f"layout of {layout.hr_shape[0]}x{layout.hr_shape[1]} hr px in {layout.n_tiles} tiles is "
                         "beyond what a mosaic holds")
    return layout


def _check_tile_entry(t, layout: TileLayout) -> tuple[int, int]:
    """``(row, col)`` of a valid tile entry (``ValueError`` naming the problem otherwise)."""
    if not isinstance(t, dict):
        raise ValueError("a tile entry is not an object")
    rows, cols = layout.grid_shape
    r = int(_number(t.get("row"), "tile row", 0, rows - 1))
    c = int(_number(t.get("col"), "tile col", 0, cols - 1))
    if t.get("row") != r or t.get("col") != c:
        raise ValueError(f"tile row/col {t.get('row')!r}, {t.get('col')!r} are not whole numbers")
    tile = layout.tile_at(r, c)
    if t.get("window") != list(tile.window):
        raise ValueError(f"tile ({r}, {c}) window {str(t.get('window'))[:60]} is not the layout's {list(tile.window)}")
    _number(t.get("amplitude_scale"), f"tile ({r}, {c}) amplitude_scale", *SCALE_RANGE)
    if t.get("best_focus_um") is not None:
        _number(t.get("best_focus_um"), f"tile ({r}, {c}) best_focus_um", -1e6, 1e6)
    model = t.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("architecture"), dict) \
            or not isinstance(model.get("optics"), dict):
        raise ValueError(f"tile ({r}, {c}) has no model header")
    if model.get("lr_shape") != [tile.height, tile.width]:
        raise ValueError(f"tile ({r}, {c}) model lr_shape {str(model.get('lr_shape'))[:60]} is not its window's "
                         f"{[tile.height, tile.width]}")
    if t.get("sha256") is not None and not (isinstance(t["sha256"], str) and len(t["sha256"]) == 64):
        raise ValueError(f"tile ({r}, {c}) sha256 is malformed")
    return r, c


def check_head(head: dict) -> tuple[TileLayout, float, float, float, dict]:
    """``(layout, z_min, z_max, dx_hr_um, tiles)`` of a mosaic header whose every number is checked.

    ``ValueError``/``TypeError``/``KeyError`` (one line) on anything missing, non-finite, out of
    range or inconsistent with the layout.
    """
    layout = _check_layout_dict(head.get("layout"))
    z_min = _number(head.get("z_min_um"), "z_min_um", -MAX_Z_UM, MAX_Z_UM)
    z_max = _number(head.get("z_max_um"), "z_max_um", -MAX_Z_UM, MAX_Z_UM)
    if not z_max > z_min:
        raise ValueError(f"z range {z_min:g}..{z_max:g} um is empty or reversed")
    dx = _number(head.get("dx_hr_um"), "dx_hr_um", 1e-6, 1e3)
    if not math.isclose(dx, layout.dx_lr_um / layout.upsample, rel_tol=1e-3):
        raise ValueError(f"dx_hr_um {dx:g} does not match the layout's {layout.dx_lr_um / layout.upsample:g}")
    entries = head.get("tiles")
    if not isinstance(entries, list) or len(entries) != layout.n_tiles:
        n = len(entries) if isinstance(entries, list) else "no"
        raise ValueError(f"mosaic lists {n} tiles, its layout has {layout.n_tiles}")
    tiles = {}
    for t in entries:
        key = _check_tile_entry(t, layout)
        if key in tiles:
            raise ValueError(f"tile {key} is listed twice")
        tiles[key] = t
    return layout, z_min, z_max, dx, tiles


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def _read_head(path: Path) -> dict | None:
    try:
        with safe_open(str(path), framework="pt") as f:
            text = (f.metadata() or {}).get(META_KEY)
    except Exception:
        return None
    if text is None:
        return None
    try:
        head = json.loads(text)
    except (ValueError, RecursionError):
        raise FPMInputError("mosaic metadata is not valid JSON", path) from None
    if not isinstance(head, dict):
        raise FPMInputError("mosaic metadata is not a JSON object", path)
    return head


def is_mosaic(path) -> bool:
    """A ``.fpminr`` file holding a mosaic (never raises)."""
    try:
        return _read_head(Path(path)) is not None
    except FPMInputError:
        return True


class MosaicModel:
    """A whole-slide model: per-tile models blended on the frame's hr grid."""

    def __init__(self, path: Path, head: dict, cache_tiles: int = 64):
        self.path = Path(path)
        self.head = head
        try:
            self.layout, self.z_min_um, self.z_max_um, self.dx_hr_um, self.tiles = check_head(head)
        except FPMInputError as exc:
            raise FPMInputError(f"bad mosaic metadata: {exc.args[0] if exc.args else exc}", path) from None
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise FPMInputError(f"bad mosaic metadata: {' '.join(str(exc).split())[:160]}", path) from None
        self._cache: OrderedDict = OrderedDict()
        self._cache_size = int(cache_tiles)
        self.decoded_tiles = 0  # tile models built so far (for tests and benchmarks)

    @property
    def hr_shape(self) -> tuple[int, int]:
        return self.layout.hr_shape

    @property
    def meta(self) -> dict:
        return dict(self.head.get("meta") or {}, file=str(self.path))

    def z_planes(self, z_step_um: float = 0.25) -> np.ndarray:
        n = int(round((self.z_max_um - self.z_min_um) / z_step_um)) + 1
        return np.linspace(self.z_min_um, self.z_max_um, max(n, 2))

    def best_focus_map(self) -> np.ndarray:
        """``(rows, cols)`` best-focus depth of every tile (µm)."""
        r, c = self.layout.grid_shape
        out = np.full((r, c), np.nan)
        for (i, j), t in self.tiles.items():
            out[i, j] = float(t.get("best_focus_um", np.nan))
        return out

    def tile_model(self, row: int, col: int) -> Model:
        key = (row, col)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        model = self._load_tile(row, col)
        self._cache[key] = model
        self.decoded_tiles += 1
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return model

    def _load_tile(self, row: int, col: int) -> Model:
        entry = self.tiles.get((row, col))
        if entry is None:
            raise FPMInputError(f"mosaic has no tile ({row}, {col})", self.path)
        header = entry["model"]
        kind = header.get("representation")
        prefix_tile = _prefix(row, col)
        try:
            arch_cls = LowRankArchitecture if kind == "lowrank" else INRArchitecture
            arch = arch_cls.from_dict(header["architecture"])
            lr_shape = tuple(int(v) for v in header["lr_shape"])
            optics = Optics.from_dict(header["optics"])
            prefix = LOWRANK_PREFIX if kind == "lowrank" else ""
            with safe_open(str(self.path), framework="pt", device="cpu") as f:
                stored = {k[len(prefix_tile):]: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype())
                          for k in f.keys() if k.startswith(prefix_tile)}
                layout = _expected_layout(kind, arch, stored, prefix, self.path)
                _check_layout(stored, layout, self.path)
                tensors = {k[len(prefix):]: f.get_tensor(prefix_tile + k) for k in layout}
                pupil_t = f.get_tensor(prefix_tile + PUPIL_KEY) if PUPIL_KEY in stored else None
                if entry.get("sha256") is not None and \
                        _tile_hash(entry, {k: f.get_tensor(prefix_tile + k) for k in stored}) != entry["sha256"]:
                    raise FPMInputError(f"tile ({row}, {col}) of the mosaic is damaged or edited (its header and "
                                        "tensors do not match their hash)", self.path)
        except FPMInputError:
            raise
        except Exception as exc:
            raise FPMInputError(f"tile ({row}, {col}) of the mosaic cannot be read: "
                                f"{' '.join(str(exc).split())[:160]}", self.path) from None
        net = LowRankField(arch) if kind == "lowrank" else FPMINR(arch)
        net.load_storage_tensors(tensors)
        pupil = None
        if pupil_t is not None:
            p = pupil_t.numpy()
            pupil = (p[0] + 1j * p[1]).astype(np.complex64)
        return Model(net, optics.replace(pupil=pupil), lr_shape, dict(header.get("meta") or {}))

    def render(self, z_um, region=None, step: int = 1, parts=("amplitude", "phase")) -> tuple[np.ndarray, ...]:
        """Blended ``parts`` at depths ``z_um`` over the hr ``region`` (top, left, h, w), every ``step`` px."""
        z = np.atleast_1d(np.asarray(z_um, np.float64))
        H, W = self.hr_shape
        top, left, h, w = (0, 0, H, W) if region is None else (int(v) for v in region)
        step = int(step)
        if step < 1 or h < 1 or w < 1 or top < 0 or left < 0 or top + h > H or left + w > W:
            raise FPMInputError(f"region {region} (step {step}) is outside the mosaic's {H}x{W} hr px", self.path)
        ys = top + step * np.arange(-(-h // step))
        xs = left + step * np.arange(-(-w // step))
        outs = [np.zeros((z.size, ys.size, xs.size), np.float32) for _ in parts]
        for tile in self.layout.tiles_touching(top, left, h, w):
            t0, l0, th, tw = self.layout.hr_window(tile)
            iy = np.flatnonzero((ys >= t0) & (ys < t0 + th))
            ix = np.flatnonzero((xs >= l0) & (xs < l0 + tw))
            if iy.size == 0 or ix.size == 0:
                continue
            ly, lx = int(ys[iy[0]] - t0), int(xs[ix[0]] - l0)
            sub = (ly, lx, (iy.size - 1) * step + 1, (ix.size - 1) * step + 1)
            model = self.tile_model(tile.row, tile.col)
            decoded = model.render_parts(z, tuple(parts), sub, step)
            weight = self.layout.weight(tile)[ly::step, lx::step][: iy.size, : ix.size]
            scale = float(self.tiles[(tile.row, tile.col)]["amplitude_scale"])
            ys_sl = slice(iy[0], iy[-1] + 1)
            xs_sl = slice(ix[0], ix[-1] + 1)
            for k, (part, arr) in enumerate(zip(parts, decoded)):
                factor = weight * (scale if part == "amplitude" else 1.0)
                outs[k][:, ys_sl, xs_sl] += arr * factor
        return tuple(outs)

    def summary(self) -> str:
        lay = self.layout
        r, c = lay.grid_shape
        bf = self.best_focus_map()
        return "\n".join([
            f"mosaic         {r} x {c} tiles of {lay.tile} raw px, overlap {lay.overlap} px",
            f"frame          {lay.frame_shape[0]} x {lay.frame_shape[1]} raw px -> {self.hr_shape[0]} x "
            f"{self.hr_shape[1]} hr px of {self.dx_hr_um:.4f} um",
            f"z range        {self.z_min_um:g} .. {self.z_max_um:g} um",
            f"best focus     {np.nanmin(bf):.2f} .. {np.nanmax(bf):.2f} um across tiles",
        ])


def load_mosaic(path, cache_tiles: int = 64) -> MosaicModel:
    """Open a mosaic ``.fpminr`` (reads the JSON header only; tiles are decoded on demand)."""
    path = Path(path)
    if not path.is_file():
        raise FPMInputError("mosaic file not found", path)
    head = _read_head(path)
    if head is None or head.get("format") != MOSAIC_FORMAT:
        raise FPMInputError("not an FPM-INR mosaic model", path)
    if head.get("format_version") not in MOSAIC_VERSIONS_READ:
        raise FPMInputError(f"unsupported mosaic format version {head.get('format_version')!r} (this program "
                            f"reads versions {', '.join(map(str, MOSAIC_VERSIONS_READ))})", path)
    return MosaicModel(path, head, cache_tiles)
