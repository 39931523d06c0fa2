"""A mosaic's pyramid levels decoded at their own resolution: anti-aliased, batched, cached.

Level ``L`` (step ``s = 2**L`` hr px) holds, at level pixel ``(j, i)``, the **area average** of
the blended full-resolution image over the hr block ``[j·s, (j+1)·s) × [i·s, (i+1)·s)``: for the
amplitude ``mean(Σ_t w_t·scale_t·|o_t|)``, what a precomputed pyramid (2×2 averaging, as the
OME-Zarr writer does) shows. Level 0 is :meth:`MosaicModel.render` (to ``rank_tol``). The phase of a
coarser level is the blended phase of the complex field low-passed to the level's band.

How. A low-rank tile's field ``o_t`` is band-limited: its spectral coefficients lie inside the
synthetic aperture (:mod:`napari_fpminr.recon.lowrank`). So it can be decoded at the points of
any regular grid of step ``d`` hr px, offset by a fraction of a pixel, with one inverse FFT of the
grid's own size: each coefficient is multiplied by the phase ramp of the offset and folded onto
the small grid ("Per z" below: how it is evaluated). Level ``L`` decodes on the grid of step
``d = s / k`` (``k = ANTIALIAS = 2`` from level 1 on) at the centre of every ``d × d`` block, takes ``|·|``, multiplies by the tile's
blending weight averaged over each block (precomputed per tile and level) and averages ``k × k``
blocks. Level 1 is thus exact (every hr pixel, 2×2 mean); a coarser level is the midpoint rule on
``d``-blocks, and where the aperture does not fit the step-``d`` grid the coefficients beyond its
Nyquist frequency are left out first. Low-passing the complex field alone (``k = 1``) is not
enough for phase-rich samples: on the benchmark's slide (cells of phase up to 3 rad, 2 µm out of
focus) level 2 scores 24.6 dB against the area average that way, 41.8 dB with ``k = 2``, and
point subsampling 17.1 dB (docs/benchmarks.md, "Browsing"). The cost of a level is ``k²``
times its pixel count, so it falls 4× per level instead of rising.

Per z, nothing is transformed: the transform is linear, so each tile keeps (once per level) its
``R`` component fields ``S_c`` on the decode grid, and a plane is ``Σ_c u_c(z)·S_c``, one matmul
per tile (tiles whose fields would exceed ``FIELDS_MAX_BYTES`` keep sparse coefficients instead:
one scatter and one batched ``ifft2`` per plane). The fields are first re-factored to the fewest
terms that reproduce every plane within ``rank_tol`` (:func:`_truncated`; ``RANK_TOL`` = 1e-4, the
order of the float16 rounding of the stored coefficients): a refocused stack over a few µm needs
5 of the 8 terms of the benchmark's tiles at level 0.

Zoomed out (levels whose decode grid is coarser than hr, i.e. from level 2 on), even that is not
repeated per plane: a zoomed-out view holds every tile of the slide, so each tile's amplitude image
at the level is decoded once at the **nodes** of its z line (the depths between which the model
interpolates linearly) and a plane is the linear interpolation of two node images, ``O(pixels)``
per tile. Between nodes this interpolates the amplitude where the model interpolates the field;
the difference is second order in the node spacing and never negative (``|·|`` is convex), and
where ``g(f) = |(1-f)·a + f·b|`` deviates from its chord, it does so by at most twice the
deviation at ``f = 1/2`` (a concave function vanishing at both ends). So each interval's midpoint
is decoded too (exactly: the line is linear), and an interval whose midpoint image differs from
the mean of its ends by ``e`` (RMS, relative to the tile's images) is cut into
``ceil(sqrt(2·e / node_tol))`` equal parts (the error falls with the square of the length): every
plane is then within ``node_tol`` (``NODE_TOL`` = 2e-3) of the field decode. ``NODE_TOL`` is chosen
so that, even added coherently to the level's own quadrature error (41.9 dB on the benchmark's
slide, 8e-3 of the peak), the level stays at 40 dB. On the benchmark's slide (17 nodes 0.25 µm
apart) every interval is halved once: 33 node images per tile, 195 MB for the 361 tiles at level 2,
where the level's component fields took 361 MB (they are not kept), and a new zoomed-out plane
costs 0.3-0.5x a full-resolution 1920x1080 view instead of about 2x (docs/benchmarks.md). The
phase is not interpolated (it wraps): its coarse levels are decoded per plane.

All tiles a request needs that are not cached are decoded in ONE batch per group of equal grid
geometry (one amplitude, weighting and pooling pass over the group). The prepared tile models
(:mod:`.tile_decode`: coefficients, component fields per level, node images) are kept in an LRU
within ``model_budget_bytes``;
decoded tile images (per tile, depth, level and part) in an LRU within ``image_budget_bytes``.
Tiles of the feature-plane + MLP kind are decoded at full resolution and block-averaged (exact,
slower). All methods are thread-safe; :meth:`MosaicPyramid.region` takes a ``cancelled`` callable
so that a superseded background prefetch does not start its batch.
"""

from __future__ import annotations

import math
import threading
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .tile_decode import ByteLRU, PreparedTile, axis_geometry, block_means

__all__ = ["ANTIALIAS", "NODE_TOL", "RANK_TOL", "MosaicPyramid", "level_steps"]

ANTIALIAS = 2  # d-blocks averaged per level pixel and axis (levels >= 1)
#: intra-op threads of a decode: its batched ops are small, and on the shared 2-core machine a
#: 1024² view took 37 ms on one thread and 105 ms on two (thread synchronisation under load)
DECODE_THREADS = 1
MODEL_BUDGET_BYTES = 2 << 30
IMAGE_BUDGET_BYTES = 512 << 20
WORKSPACE_MAX = 16 << 20  # complex elements of a reused decode buffer (128 MB)
FIELDS_MAX_BYTES = 64 << 20  # per tile and level: component fields up to this, else sparse coefficients
#: node images (levels whose decode grid is coarser than hr): the z line's intervals are cut so that
#: the amplitude interpolated at a midpoint is within NODE_TOL / 2 (relative RMS) of the decoded one,
#: hence within NODE_TOL at any depth; at most NODE_MAX_PARTS parts per interval
NODE_TOL = 2e-3
#: component fields are re-factored to the fewest terms whose dropped singular values are below
#: RANK_TOL times the first (:func:`_truncated`): about the float16 storage rounding of the model's
#: own coefficients (2**-11 of each component's peak), so nothing the model file resolves is lost
RANK_TOL = 1e-4
NODE_MAX_PARTS = 16


def _weighted_pooled(field: torch.Tensor, part: str, wr: torch.Tensor, wc: torch.Tensor, ky: int, kx: int,
                     pad_y: int, pad_x: int) -> torch.Tensor:
    """``|field|`` (or its phase) of ``(B, ny, nx)`` decode grids, weighted ``wr ⊗ wc``, averaged over
    ``ky x kx`` blocks."""
    B, ny, nx = field.shape
    if part == "amplitude":
        re = torch.view_as_real(field)
        img = re[..., 0] * re[..., 0]
        img.addcmul_(re[..., 1], re[..., 1]).sqrt_()
    else:
        img = field.angle()
    img.mul_(wr[:, :, None]).mul_(wc[:, None, :])
    if ky > 1 or kx > 1:
        back_y, back_x = -(pad_y + ny) % ky, -(pad_x + nx) % kx
        if pad_y or pad_x or back_y or back_x:
            img = F.pad(img, (pad_x, back_x, pad_y, back_y))
        rows = img[:, 0::ky]  # block sums by strided slices: several times faster than avg_pool2d here
        for i in range(1, ky):
            rows = rows + img[:, i::ky]
        img = rows[:, :, 0::kx]
        for i in range(1, kx):
            img = img + rows[:, :, i::kx]
        img = img.mul_(1.0 / (ky * kx))
    return img


def _truncated(line: np.ndarray, coef: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """The z line ``A`` (n_z, R) and the terms ``C`` (R, n) re-factored to the fewest terms ``R'``.

    ``C``: component fields on a grid, or their spectral coefficients (the grid's DFT is unitary up
    to a factor, so both give the same ``R'`` and the same relative bound). Every plane is
    ``w(z)ᵀ·A·C`` with ``w`` the interpolation weights (``|w| <= 1``). With ``A = Q·R_A`` (QR) and
    ``R_A·C = U·Σ·Vᴴ`` (SVD), ``A' = Q·U'`` and ``C' = U'ᴴ·R_A·C`` keep the ``R'`` singular values
    above ``tol·ρ``, ``ρ = ||R_A·C||_F / √n_z`` the RMS norm of the fields at the nodes: every
    plane's field then differs by at most ``σ_{R'+1} <= tol·ρ`` (2-norm over the grid), i.e. by
    ``tol`` relative to a plane of average energy, and so does its amplitude (``||a| - |b|| <= |a - b|``).
    ``Σ`` comes from the Gram matrix in float64 (its small eigenvalues are ~1e-9 of the largest).
    """
    # torch, not numpy: its BLAS threads follow the decode's torch.set_num_threads (numpy's OpenBLAS
    # threads made this 7x slower on the shared 2-core machine)
    Q, RA = torch.linalg.qr(torch.from_numpy(line).to(torch.complex128))
    c = torch.from_numpy(np.ascontiguousarray(coef))
    c2 = c.to(torch.complex128)
    lam, V = torch.linalg.eigh(RA @ (c2 @ c2.mH) @ RA.mH)  # U·Σ²·Uᴴ, ascending
    lam = lam.clamp_min(0).flip(0)
    rho = math.sqrt(float(lam.sum()) / line.shape[0])
    keep = max(1, int((lam.sqrt() > tol * rho).sum()))
    U = V.flip(1)[:, :keep]
    proj = (U.mH @ RA).to(torch.complex64)  # (R', R)
    return (Q @ U).to(torch.complex64).numpy(), (proj @ c).numpy()


def _interpolate(nodes, z_um: float) -> np.ndarray:
    """Linear interpolation in z of a tile's node images (clamped to the nodes' range, as the z line)."""
    zs, images = nodes
    z = min(max(float(z_um), zs[0]), zs[-1])
    j = min(max(int(np.searchsorted(zs, z, side="right")) - 1, 0), zs.size - 2)
    f = (z - zs[j]) / (zs[j + 1] - zs[j])
    if f <= 0.0:
        return images[j].copy()
    if f >= 1.0:
        return images[j + 1].copy()
    out = images[j + 1] - images[j]
    out *= np.float32(f)
    out += images[j]
    return out


def level_steps(hr_shape: tuple[int, int], preview_px: int = 512) -> list[int]:
    """Steps ``1, 2, 4, ...`` until the whole field fits ``preview_px`` on its longer side."""
    H, W = hr_shape
    steps = [1]
    while max(H, W) // steps[-1] > preview_px:
        steps.append(steps[-1] * 2)
    return steps


class MosaicPyramid:
    """Anti-aliased, batched, cached pyramid of one :class:`~napari_fpminr.io.mosaic_file.MosaicModel`."""

    def __init__(self, mosaic, model_budget_bytes: int = MODEL_BUDGET_BYTES,
                 image_budget_bytes: int = IMAGE_BUDGET_BYTES, antialias: int = ANTIALIAS,
                 node_images: bool = True, node_tol: float = NODE_TOL, rank_tol: float = RANK_TOL):
        self.mosaic = mosaic
        self.antialias = int(antialias)
        self.node_images = bool(node_images)
        self.node_tol = float(node_tol)
        self.rank_tol = float(rank_tol)
        self._models = ByteLRU(model_budget_bytes)
        self._images = ByteLRU(image_budget_bytes)
        self._lock = threading.RLock()
        self._decode_lock = threading.Lock()
        self._buffers: dict = {}
        self.decoded_tiles = 0   # tile images decoded so far (tests, benchmarks)
        self.decode_batches = 0  # batched decode calls so far

    @property
    def hr_shape(self) -> tuple[int, int]:
        return self.mosaic.hr_shape

    def level_shape(self, step: int) -> tuple[int, int]:
        H, W = self.hr_shape
        return (-(-H // step), -(-W // step))

    # ---- tiles ---------------------------------------------------------------------------------
    def _prepared(self, tile) -> PreparedTile:
        with self._lock:
            item = self._models.get((tile.row, tile.col))
        if item is not None:
            return item[0]
        prep = PreparedTile(self.mosaic, tile)
        with self._lock:
            self._models.put(prep.key, prep, prep.nbytes())
        return prep

    def load_tiles(self, tiles=None) -> None:
        """Prepare (read, check, convert) ``tiles`` (default: all) within the model budget."""
        for tile in (tiles if tiles is not None else self.mosaic.layout.tiles()):
            self._prepared(tile)

    def _weights(self, prep: PreparedTile, s: int, k: int, gy, gx) -> tuple[np.ndarray, np.ndarray]:
        key = (s, k)
        w = prep.weights.get(key)
        if w is None:
            dy, _, g0y, _, ny, _, _ = gy
            dx, _, g0x, _, nx, _, _ = gx
            w = (block_means(prep.w_row, g0y * dy - prep.t0, dy, ny),
                 block_means(prep.w_col, g0x * dx - prep.l0, dx, nx))
            prep.weights[key] = w
        return w

    def _folded(self, prep: PreparedTile, gy, gx, store: bool = True):
        """``(fields (R', n), None, line (n_z, R'))`` or ``(coefficients (R', K_d), flat bins, line)`` of the
        decode grid ``gy x gx`` (cached in the tile unless ``store`` is false); ``R' < R`` where
        ``rank_tol`` truncates the terms (:func:`_truncated`)."""
        dy, _, _, py, ny, _, _ = gy
        dx, _, _, px, nx, _, _ = gx
        key = (dy, dx, py, px)
        item = prep.folded.get(key)
        if item is None:
            keep = np.flatnonzero((prep.my >= -(ny // 2)) & (prep.my < ny - ny // 2)
                                  & (prep.mx >= -(nx // 2)) & (prep.mx < nx - nx // 2))
            my, mx = prep.my[keep].astype(np.int64), prep.mx[keep].astype(np.int64)
            flat = (my % ny) * nx + (mx % nx)
            if py == 0 and px == 0 and keep.size == prep.coef.shape[1]:
                coef = prep.coef  # the full grid, no offset: the coefficients themselves (shared, no copy)
            else:
                ramp = np.exp(2j * math.pi * (my * (py / prep.th) + mx * (px / prep.tw))).astype(np.complex64)
                coef = prep.coef[:, keep] * ramp[None]
            line = prep.line
            if self.rank_tol > 0:  # before the transforms: fewer of them (the grid's DFT is unitary up to a factor)
                line, coef = _truncated(line, coef, self.rank_tol)
            if coef.shape[0] * ny * nx * 8 <= FIELDS_MAX_BYTES:
                # keep the R component fields on the decode grid: the transform is linear, so a plane
                # is then one matmul of the z line with them, and no FFT (a 1920x1080 view: 58 ms
                # against 87-97 ms with the spectra scattered and transformed per plane)
                dense = torch.zeros(coef.shape[0], ny * nx, dtype=torch.complex64)
                dense[:, torch.from_numpy(flat)] = torch.from_numpy(np.ascontiguousarray(coef))
                fields = torch.fft.ifft2(dense.reshape(-1, ny, nx), norm="forward").reshape(-1, ny * nx)
                item = (fields.contiguous(), None, line)
            else:
                item = (torch.from_numpy(coef if coef is prep.coef else np.ascontiguousarray(coef)),
                        torch.from_numpy(flat), line)
            if store:
                prep.folded[key] = item
                with self._lock:
                    self._models.put(prep.key, prep, prep.nbytes())
        return item

    # ---- decoding --------------------------------------------------------------------------------
    def _workspace(self, name: str, numel: int) -> torch.Tensor:
        """A reused complex64 buffer (decodes hold the decode lock): no page faults per batch."""
        buf = self._buffers.get(name)
        if buf is None or buf.numel() < numel:
            buf = torch.empty(numel, dtype=torch.complex64)
            if numel <= WORKSPACE_MAX:
                self._buffers[name] = buf
        return buf[:numel]

    def tile_images(self, tiles, z_um: float, step: int, part: str = "amplitude",
                    cancelled: Callable[[], bool] | None = None) -> list:
        """``[(level_top, level_left, float32 image)]`` of ``tiles`` (cached, missing ones decoded in one batch)."""
        zk = round(float(z_um), 6)
        keys = [(t.row, t.col, zk, int(step), part) for t in tiles]
        with self._lock:
            found = {k: self._images.get(k) for k in keys}
        missing = [t for t, k in zip(tiles, keys) if found[k] is None]
        if missing:
            if cancelled is not None and cancelled():
                return []
            fresh: dict = {}
            with self._decode_lock:
                with self._lock:  # another thread may have decoded some meanwhile
                    missing = [t for t in missing if self._images.get((t.row, t.col, zk, int(step), part)) is None]
                if missing:
                    before = torch.get_num_threads()
                    torch.set_num_threads(DECODE_THREADS)
                    try:
                        fresh = self._decode(missing, float(z_um), int(step), part)
                    finally:
                        torch.set_num_threads(before)
            with self._lock:  # what was decoded now is used even if the image budget evicted it already
                found = {k: (fresh[k],) if k in fresh else self._images.get(k) for k in keys}
        return [found[k][0] for k in keys if found[k] is not None]

    def _decode(self, tiles, z_um: float, s: int, part: str) -> dict:
        """Decode ``tiles`` (cached, and returned as ``{key: (level_top, level_left, image)}``)."""
        k = min(self.antialias if part == "amplitude" else 1, s)  # the phase: of the low-passed field
        groups: dict = {}
        fresh: dict = {}
        interpolated: dict = {}
        for tile in tiles:
            prep = self._prepared(tile)
            if prep.model is not None:
                fresh.update(self._decode_by_model(prep, z_um, s, part))
                continue
            gy = axis_geometry(prep.t0, prep.th, s, k)
            gx = axis_geometry(prep.l0, prep.tw, s, k)
            if part == "amplitude" and self.node_images and max(gy[0], gx[0]) > 1:
                nodes = self._node_images(prep, s, gy, gx)
                if nodes is not None:
                    interpolated[(prep.key[0], prep.key[1], round(z_um, 6), s, part)] = (gy[5], gx[5],
                                                                                       _interpolate(nodes, z_um))
                    continue
            groups.setdefault((gy[0], gx[0], gy[4], gx[4], gy[1], gx[1], gy[6], gx[6]), []).append((prep, gy, gx))
        if interpolated:
            with self._lock:
                for key, item in interpolated.items():
                    self._images.put(key, item, item[2].nbytes)
                self.decoded_tiles += len(interpolated)
            fresh.update(interpolated)
        for (_, _, ny, nx, ky, kx, pad_y, pad_x), members in groups.items():
            fresh.update(self._decode_group(members, z_um, s, part, ny, nx, ky, kx, pad_y, pad_x))
        return fresh

    def _decode_group(self, members, z_um, s, part, ny, nx, ky, kx, pad_y, pad_x) -> dict:
        B = len(members)
        folded = [self._folded(p, gy, gx) for p, gy, gx in members]
        field = self._workspace("field", B * ny * nx).reshape(B, ny * nx)
        sparse = [b for b, (_, f, _) in enumerate(folded) if f is not None]
        if sparse:  # spectra scattered from the coefficients, one batched inverse FFT
            spec = self._workspace("spec", len(sparse) * ny * nx).reshape(len(sparse), ny * nx)
            for i, b in enumerate(sparse):
                (c, f, line), p = folded[b], members[b][0]
                spec[i].zero_().scatter_(0, f, torch.matmul(torch.from_numpy(p.u(z_um, line))[None], c)[0])
            planes = torch.fft.ifft2(spec.reshape(-1, ny, nx), norm="forward").reshape(-1, ny * nx)
            if len(sparse) == B:
                field = planes
            else:
                field[torch.as_tensor(sparse)] = planes
        for b, (c, f, line) in enumerate(folded):
            if f is None:  # component fields: the plane is their combination
                torch.matmul(torch.from_numpy(members[b][0].u(z_um, line))[None], c, out=field[b:b + 1])
        w = [self._weights(p, s, ky, gy, gx) for p, gy, gx in members]
        wr = torch.as_tensor(np.stack([a for a, _ in w]), dtype=torch.float32)
        wc = torch.as_tensor(np.stack([b for _, b in w]), dtype=torch.float32)
        if part == "amplitude":
            wr = wr * torch.tensor([p.scale for p, _, _ in members], dtype=torch.float32)[:, None]
        out = _weighted_pooled(field.reshape(B, ny, nx), part, wr, wc, ky, kx, pad_y, pad_x).numpy()
        fresh = {(p.key[0], p.key[1], round(z_um, 6), s, part): (gy[5], gx[5], out[b])
                 for b, (p, gy, gx) in enumerate(members)}
        with self._lock:
            for key, item in fresh.items():
                self._images.put(key, item, item[2].nbytes)
            self.decoded_tiles += B
            self.decode_batches += 1
        return fresh

    def _node_images(self, prep: PreparedTile, s: int, gy, gx):
        """The tile's amplitude images at level ``s`` at its node depths, ``(z (N,), images (N, h, w))``.

        Built once per tile and level (``None`` where the component fields would exceed
        ``FIELDS_MAX_BYTES``): the z line's nodes decoded like any plane, and every interval whose
        midpoint, decoded, differs from the mean of its ends by more than ``node_tol / 2`` (RMS,
        relative to the tile's images) cut into equal parts (see the module's docstring).
        """
        if s in prep.nodes:
            return prep.nodes[s]
        item = prep.folded.get((gy[0], gx[0], gy[3], gx[3]))  # the fields if a decode left them
        fields, flat, line = item if item is not None else self._folded(prep, gy, gx, store=False)
        if flat is not None or fields.shape[1] * (line.shape[0] + 1) * 4 > FIELDS_MAX_BYTES:
            prep.nodes[s] = None
            return None
        ky, kx, pad_y, pad_x = gy[1], gx[1], gy[6], gx[6]
        wr, wc = self._weights(prep, s, ky, gy, gx)
        wr = torch.as_tensor(wr * prep.scale, dtype=torch.float32)[None]
        wc = torch.as_tensor(wc, dtype=torch.float32)[None]

        def images(f: torch.Tensor) -> torch.Tensor:
            b = f.shape[0]
            return _weighted_pooled(f.reshape(b, gy[4], gx[4]), "amplitude", wr.expand(b, -1), wc.expand(b, -1),
                                    ky, kx, pad_y, pad_x)

        z0, z1, n_z = prep.z_range
        zs = np.linspace(z0, z1, n_z)
        nf = torch.matmul(torch.from_numpy(line), fields)  # (n_z, n): the fields at the nodes
        na = images(nf)
        mid = images((nf[:-1] + nf[1:]).mul_(0.5))  # exact fields at the midpoints: the line is linear in z
        err = (na[:-1] + na[1:]).mul_(0.5).sub_(mid).square_().flatten(1).mean(1).sqrt_()
        err = (err / (float(na.square().mean().sqrt()) + 1e-30)).tolist()
        # the interpolation error is second order in the interval's length: an interval whose midpoint
        # error is e is cut into m = ceil(sqrt(2 e / node_tol)) equal parts (m = 2: its midpoint)
        parts = [min(max(1, math.ceil(math.sqrt(2.0 * e / self.node_tol) - 1e-9)), NODE_MAX_PARTS) for e in err]
        out_z, out_a = [zs[:1]], [na[:1]]
        for i, m in enumerate(parts):
            if m == 2:
                out_z.append(np.array([0.5 * (zs[i] + zs[i + 1])])), out_a.append(mid[i:i + 1])
            elif m > 2:
                f = torch.arange(1, m, dtype=torch.float32)[:, None] / m
                out_z.append(zs[i] + (zs[i + 1] - zs[i]) * f[:, 0].double().numpy())
                out_a.append(images(nf[i][None] * (1 - f) + nf[i + 1][None] * f))
            out_z.append(zs[i + 1:i + 2]), out_a.append(na[i + 1:i + 2])
        item = (np.concatenate(out_z), torch.cat(out_a).numpy())
        prep.nodes[s] = item
        with self._lock:
            self._models.put(prep.key, prep, prep.nbytes())
        return item

    def _decode_by_model(self, prep: PreparedTile, z_um: float, s: int, part: str) -> dict:
        """Feature-plane + MLP tiles: full resolution, weighted, block-averaged onto the level grid."""
        (img,) = prep.model.render_parts([z_um], (part,))
        img = img[0] * (prep.scale if part == "amplitude" else 1.0) * np.outer(prep.w_row, prep.w_col)
        y0, x0 = prep.t0 // s, prep.l0 // s
        pad_y, pad_x = prep.t0 - y0 * s, prep.l0 - x0 * s
        h, w = -(-(pad_y + prep.th) // s), -(-(pad_x + prep.tw) // s)
        canvas = np.zeros((h * s, w * s), np.float64)
        canvas[pad_y:pad_y + prep.th, pad_x:pad_x + prep.tw] = img
        a = canvas.reshape(h, s, w, s).mean(axis=(1, 3)).astype(np.float32)
        key = (prep.key[0], prep.key[1], round(z_um, 6), s, part)
        with self._lock:
            self._images.put(key, (y0, x0, a), a.nbytes)
            self.decoded_tiles += 1
        return {key: (y0, x0, a)}

    # ---- regions -----------------------------------------------------------------------------------
    def has(self, z_um: float, step: int, hr_region, part: str = "amplitude") -> bool:
        """Every tile under the hr region is decoded at ``z_um`` and level ``step`` (cached)."""
        zk = round(float(z_um), 6)
        tiles = self.mosaic.layout.tiles_touching(*hr_region)
        with self._lock:
            return all((t.row, t.col, zk, int(step), part) in self._images.items for t in tiles)

    def region(self, z_um: float, step: int, region, part: str = "amplitude",
               cancelled: Callable[[], bool] | None = None) -> np.ndarray | None:
        """Level ``step``'s float32 image over the level-pixel ``region`` (top, left, h, w); ``None`` if cancelled."""
        top, left, h, w = (int(v) for v in region)
        H, W = self.hr_shape
        out = np.zeros((h, w), np.float32)
        hr = (top * step, left * step, min(h * step, H - top * step), min(w * step, W - left * step))
        tiles = self.mosaic.layout.tiles_touching(*hr)
        images = self.tile_images(tiles, z_um, step, part, cancelled)
        if len(images) < len(tiles):
            return None
        for y0, x0, a in images:
            ys, xs = max(top, y0), max(left, x0)
            ye, xe = min(top + h, y0 + a.shape[0]), min(left + w, x0 + a.shape[1])
            if ye > ys and xe > xs:
                out[ys - top:ye - top, xs - left:xe - left] += a[ys - y0:ye - y0, xs - x0:xe - x0]
        return out
