"""FPM-INR representation: a continuous z-stack as two small feature-plane networks.

Each network (one for the amplitude, one for the phase, shared/DESIGN.md §1) maps a point
``(x, y, z)`` of the sample volume to one real number:

    f(x, y, z) = W3 · relu(W2 · relu(W1 · (M(x, y) ⊙ u(z)) + b1) + b2) + b3

* ``M`` is a 2D feature plane of ``Q`` channels on a coarse grid (hr/4 per axis by default),
  sampled **bilinearly** at any hr position (hr pixel ``i`` sits at coarse coordinate
  ``(i + 0.5)·Hc/H - 0.5``, edges clamped);
* ``u`` is a feature line of ``n_z`` nodes uniformly spaced over ``[z_min_um, z_max_um]``,
  **linearly** interpolated for any continuous ``z`` (clamped outside the range);
* ``⊙`` is the channel-wise product and ``W1..W3`` an MLP ``Q→Q→Q→1`` with ReLU.

Speed (identical function, cheaper evaluation): bilinear upsampling is linear and acts per
channel, ``u(z)`` is constant over ``(x, y)`` and ``W1`` only mixes channels, so

    W1 · (up(M) ⊙ u(z)) + b1 = up(W1 · (M ⊙ u(z)) + b1)

(bilinear weights sum to one, so the bias passes through). The first layer is therefore
evaluated on the coarse grid (16× fewer points) and only its output is upsampled; the ReLU and
the two remaining layers run at the requested hr pixels. The hr part is evaluated in row
chunks so that the working set stays in cache.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class INRArchitecture:
    """Shape of the representation (stored in model files).

    Attributes:
        hr_shape: ``(H, W)`` of the high-resolution grid the feature plane covers (pixels).
        z_min_um, z_max_um: the z range covered by the feature line (µm).
        n_z: number of nodes of the z feature line.
        q: feature channels ``Q`` (also the hidden width of the MLP).
        plane_downsample: hr pixels per feature-plane node along each axis.
    """

    hr_shape: tuple[int, int]
    z_min_um: float
    z_max_um: float
    n_z: int = 33
    q: int = 32
    plane_downsample: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "hr_shape", (int(self.hr_shape[0]), int(self.hr_shape[1])))
        if min(self.hr_shape) < 2:
            raise ValueError(f"hr_shape must be at least 2x2, got {self.hr_shape}")
        if not float(self.z_max_um) > float(self.z_min_um):
            raise ValueError(f"z range must be increasing, got [{self.z_min_um}, {self.z_max_um}] um")
        if int(self.n_z) < 2 or int(self.q) < 1 or int(self.plane_downsample) < 1:
            raise ValueError("n_z must be >= 2, q >= 1 and plane_downsample >= 1")

    @property
    def plane_shape(self) -> tuple[int, int]:
        d = int(self.plane_downsample)
        return (max(2, -(-self.hr_shape[0] // d)), max(2, -(-self.hr_shape[1] // d)))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hr_shape"] = list(self.hr_shape)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "INRArchitecture":
        return cls(hr_shape=tuple(d["hr_shape"]), z_min_um=float(d["z_min_um"]), z_max_um=float(d["z_max_um"]),
                   n_z=int(d["n_z"]), q=int(d["q"]), plane_downsample=int(d["plane_downsample"]))


def _axis_interp(coords_hr: torch.Tensor, n_hr: int, n_coarse: int):
    """Bilinear sampling indices/weights along one axis for hr pixel indices ``coords_hr``."""
    c = (coords_hr.to(torch.float32) + 0.5) * (n_coarse / n_hr) - 0.5
    c = c.clamp(0.0, n_coarse - 1.0)
    i0 = c.floor().long().clamp(max=n_coarse - 2)
    w1 = (c - i0.to(c.dtype)).clamp(0.0, 1.0)
    return i0, i0 + 1, w1


class FeatureNet(nn.Module):
    """One real-valued field ``f(x, y, z)`` (amplitude or phase); see the module docstring."""

    def __init__(self, arch: INRArchitecture, out_bias: float = 0.0, generator: torch.Generator | None = None):
        super().__init__()
        self.arch = arch
        q = arch.q
        hc, wc = arch.plane_shape
        g = generator
        # plane: channels last so the first layer is one matmul; initialised around 1 with small
        # noise so that M ⊙ u starts near u (a smooth, z-dependent but laterally flat field).
        self.plane = nn.Parameter(1.0 + 0.1 * torch.randn(hc, wc, q, generator=g))
        self.zline = nn.Parameter(1.0 + 0.1 * torch.randn(arch.n_z, q, generator=g))
        self.w1 = nn.Parameter(_kaiming(q, q, g))
        self.b1 = nn.Parameter(torch.zeros(q))
        self.w2 = nn.Parameter(_kaiming(q, q, g))
        self.b2 = nn.Parameter(torch.zeros(q))
        self.w3 = nn.Parameter(_kaiming(1, q, g) * 0.1)
        self.b3 = nn.Parameter(torch.full((1,), float(out_bias)))

    # ---- pieces ---------------------------------------------------------------------------
    def z_features(self, z_um: torch.Tensor) -> torch.Tensor:
        """``u(z)`` for ``Z`` depths: linear interpolation of the z line, ``(Z, Q)``."""
        a = self.arch
        t = (z_um.to(self.zline.dtype) - a.z_min_um) / (a.z_max_um - a.z_min_um) * (a.n_z - 1)
        t = t.clamp(0.0, a.n_z - 1.0)
        i0 = t.floor().long().clamp(max=a.n_z - 2)
        w = (t - i0.to(t.dtype))[:, None]
        return self.zline[i0] * (1 - w) + self.zline[i0 + 1] * w

    def coarse_first_layer(self, z_um: torch.Tensor) -> torch.Tensor:
        """``W1·(M ⊙ u(z)) + b1`` on the coarse grid, ``(Z, Hc, Wc, Q)`` (pre-activation)."""
        u = self.z_features(z_um)  # (Z, Q)
        w_eff = self.w1[None, :, :] * u[:, None, :]  # (Z, Qout, Qin): W1 · diag(u)
        hc, wc, q = self.plane.shape
        flat = self.plane.reshape(1, hc * wc, q)
        out = torch.baddbmm(self.b1.view(1, 1, q), flat.expand(len(u), -1, -1), w_eff.transpose(1, 2))
        return out.reshape(len(u), hc, wc, q)

    def head(self, h1: torch.Tensor) -> torch.Tensor:
        """ReLU and the two hr layers: ``(..., Q)`` pre-activations -> ``(...)`` values."""
        h = torch.relu(h1)
        h = torch.relu(torch.addmm(self.b2, h.reshape(-1, h.shape[-1]), self.w2.t()))
        return torch.addmm(self.b3, h, self.w3.t()).reshape(h1.shape[:-1])

    def forward(self, z_um: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                row_chunk: int = 16) -> torch.Tensor:
        """Evaluate at depths ``z_um`` (Z,) on the hr pixel grid ``rows × cols`` -> ``(Z, h, w)``.

        ``rows``/``cols`` are hr pixel indices (any integers or floats, e.g. a region with a
        step). Without autograd the hr part runs in chunks of ``row_chunk`` rows with reused
        buffers (same result, far less memory traffic).
        """
        H, W = self.arch.hr_shape
        hc, wc = self.arch.plane_shape
        coarse = self.coarse_first_layer(z_um)  # (Z, Hc, Wc, Q)
        c0, c1, cw = _axis_interp(cols, W, wc)
        r0, r1, rw = _axis_interp(rows, H, hc)
        if torch.is_grad_enabled():
            xs = torch.lerp(coarse[:, :, c0], coarse[:, :, c1], cw[:, None])  # columns: (Z, Hc, w, Q)
            return self.head(torch.lerp(xs[:, r0], xs[:, r1], rw[:, None, None]))
        fast = H // hc == W // wc and _unit_range(rows, H, hc) and _unit_range(cols, W, wc)
        if fast:
            return self._head_chunked_upsample(coarse, int(rows[0]), len(rows), int(cols[0]), len(cols),
                                               max(1, int(row_chunk)))
        return self._head_chunked(coarse, c0, c1, cw, r0, r1, rw, max(1, int(row_chunk)))

    def _head_chunked_upsample(self, coarse, top, h, left, w, chunk):
        """No-autograd evaluation of a unit-step region when the feature plane divides the hr grid.

        Same function as :meth:`_head_chunked`, without gathers. With an integer factor ``d``,
        hr pixel ``i = d·m + p`` sits at coarse coordinate ``m + t_p``, ``t_p = (p + 0.5)/d - 0.5``,
        so each *phase* ``p`` is one ``lerp`` with a scalar weight between two shifted slices of
        the coarse rows (columns), exactly the weights of :func:`_axis_interp` (``t_p`` is a
        dyadic fraction, exact in float32). The coarse plane is padded by one replicated row and
        column, which reproduces the clamped edges. Per chunk of whole coarse rows, the columns
        then the rows are interpolated into reused channels-last buffers, and the ReLU and the
        two hr layers run in place (``addmm`` into a reused buffer, ``mv`` for the last layer).
        """
        z, hc, wc, q = coarse.shape
        d = self.arch.hr_shape[0] // hc
        dev, dt = coarse.device, coarse.dtype
        pad = F.pad(coarse.permute(0, 3, 1, 2), (1, 1, 1, 1), mode="replicate").permute(0, 2, 3, 1)
        phases = [((p + 0.5) / d - 0.5) for p in range(d)]
        src = [(0, 1.0 + t) if t < 0 else (1, t) for t in phases]  # (first padded offset, weight)
        cm0, cm1 = left // d, (left + w - 1) // d + 1
        ncm, c_off = cm1 - cm0, left - d * cm0
        mchunk = max(1, -(-chunk // d))
        xs = torch.empty(mchunk + 2, ncm, d, q, device=dev, dtype=dt)
        up = torch.empty(mchunk, d, ncm * d, q, device=dev, dtype=dt)
        buf2 = torch.empty(mchunk * d * w, q, device=dev, dtype=dt)
        out = torch.empty(z, h * w, device=dev, dtype=dt)
        w2t = self.w2.t().to(dt)
        w3v, b2, b3 = self.w3[0].to(dt), self.b2.to(dt), self.b3.to(dt)
        for k in range(z):
            r = top
            while r < top + h:
                m0 = r // d
                m1 = min(m0 + mchunk, (top + h - 1) // d + 1)
                nm = m1 - m0
                band = pad[k, m0:m1 + 2, cm0:cm1 + 2]  # padded rows m0-1 .. m1, cols cm0-1 .. cm1
                xv = xs[:nm + 2]
                for p, (o, wt) in enumerate(src):
                    torch.lerp(band[:, o:o + ncm], band[:, o + 1:o + 1 + ncm], wt, out=xv[:, :, p])
                xv = xv.view(nm + 2, ncm * d, q)
                uv = up[:nm]
                for p, (o, wt) in enumerate(src):
                    torch.lerp(xv[o:o + nm], xv[o + 1:o + 1 + nm], wt, out=uv[:, p])
                j0 = r - d * m0
                n = min(d * nm - j0, top + h - r)
                h1 = uv.view(nm * d, ncm * d, q)[j0:j0 + n, c_off:c_off + w]
                h1 = h1.reshape(n * w, q)  # a view for full-width chunks, a copy otherwise
                s = r - top
                h2 = torch.addmm(b2, h1.relu_(), w2t, out=buf2[:n * w]).relu_()
                torch.mv(h2, w3v, out=out[k, s * w:(s + n) * w]).add_(b3)
                r += n
        return out.view(z, h, w)

    def forward_full(self, z_um: torch.Tensor) -> torch.Tensor:
        """Whole hr grid at depths ``z_um`` -> ``(Z, H, W)``; the training path (fast backward).

        Same function as :meth:`forward` on the full grid: ``F.interpolate(..., "bilinear",
        align_corners=False)`` to size ``(H, W)`` samples hr pixel ``i`` at coarse coordinate
        ``(i + 0.5)·Hc/H - 0.5`` with clamped edges, like :func:`_axis_interp`. Channels-first
        layout: the hr layers are ``(Q, Q) @ (Q, H·W)`` matmuls.
        """
        H, W = self.arch.hr_shape
        coarse = self.coarse_first_layer(z_um).permute(0, 3, 1, 2)  # (Z, Q, Hc, Wc)
        h1 = F.interpolate(coarse, size=(H, W), mode="bilinear", align_corners=False)
        h = torch.relu(h1).flatten(2)  # (Z, Q, H·W)
        h = torch.relu(torch.matmul(self.w2, h) + self.b2[:, None])
        return (torch.matmul(self.w3, h) + self.b3[:, None]).reshape(len(z_um), H, W)

    def _head_chunked(self, coarse, c0, c1, cw, r0, r1, rw, chunk):
        """No-autograd evaluation in chunks of ``chunk`` output rows, buffers reused.

        Each chunk interpolates only the few coarse rows it needs along x, then along y, applies
        ReLU and the two hr layers in place: the working set stays in cache.
        """
        z, _, _, q = coarse.shape
        h, w = len(r0), len(c0)
        dev, dt = coarse.device, coarse.dtype
        out = torch.empty(z, h * w, 1, device=dev, dtype=dt)
        buf = torch.empty(chunk, w, q, device=dev, dtype=dt)
        buf2 = torch.empty(chunk * w, q, device=dev, dtype=dt)
        cwx = cw[:, None].to(dt)
        w2t, w3t = self.w2.t().to(dt), self.w3.t().to(dt)
        b2, b3 = self.b2.to(dt), self.b3.to(dt)
        for k in range(z):
            for s in range(0, h, chunk):
                n = min(chunk, h - s)
                i0, i1 = r0[s:s + n], r1[s:s + n]
                lo, hi = int(torch.minimum(i0, i1).min()), int(torch.maximum(i0, i1).max())
                band = coarse[k, lo:hi + 1]  # the coarse rows this chunk needs
                xs = torch.lerp(band[:, c0], band[:, c1], cwx)  # (rows, w, Q)
                wt = rw[s:s + n, None, None].expand(n, w, q)
                h1 = torch.lerp(xs[i0 - lo], xs[i1 - lo], wt, out=buf[:n]).relu_()
                h2 = torch.addmm(b2, h1.view(-1, q), w2t, out=buf2[:n * w]).relu_()
                torch.addmm(b3, h2, w3t, out=out[k, s * w:(s + n) * w])
        return out.view(z, h, w)

def _unit_range(idx: torch.Tensor, n_hr: int, n_coarse: int) -> bool:
    """True when ``idx`` are consecutive integer hr indices and the plane divides the hr axis."""
    if idx.numel() == 0 or idx.dtype.is_floating_point or n_hr % n_coarse:
        return False
    if idx.numel() == 1:
        return True
    return bool((idx[1:] - idx[:-1] == 1).all())


def _kaiming(n_out: int, n_in: int, g: torch.Generator | None) -> torch.Tensor:
    bound = (6.0 / n_in) ** 0.5 / 2 ** 0.5
    return (torch.rand(n_out, n_in, generator=g) * 2 - 1) * bound


#: Precision of the feature planes in ``.fpminr`` files (they are ~99 % of the parameters).
PLANE_STORAGE_DTYPE = torch.float16


class FPMINR(nn.Module):
    """The two networks of FPM-INR: complex field ``amplitude · exp(i·phase)`` at any ``z``."""

    def __init__(self, arch: INRArchitecture, seed: int = 0):
        super().__init__()
        self.arch = arch
        g = torch.Generator().manual_seed(int(seed))
        # amplitude starts ≈ 1 (transparent sample), phase ≈ 0
        self.amplitude = FeatureNet(arch, out_bias=1.0, generator=g)
        self.phase = FeatureNet(arch, out_bias=0.0, generator=g)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---- the representation interface shared with recon.lowrank.LowRankField ---------------
    @torch.no_grad()
    def decode(self, z_um: torch.Tensor, parts: tuple[str, ...], region=None, step: int = 1
               ) -> tuple[torch.Tensor, ...]:
        """``parts`` ("amplitude", "phase") as ``(Z, h, w)`` tensors over ``region``/``step`` (no autograd)."""
        rows, cols = self.grid(region, step)
        # CPU: small row chunks stay in cache; GPU: big chunks, few kernel launches
        chunk = 32 if rows.device.type == "cpu" else 512
        return self(z_um, rows, cols, parts=tuple(parts), row_chunk=chunk)

    def storage_tensors(self) -> dict[str, torch.Tensor]:
        """What a model file holds: every parameter, the feature planes at :data:`PLANE_STORAGE_DTYPE`."""
        return {k: v.detach().to("cpu", PLANE_STORAGE_DTYPE if k.endswith(".plane") else torch.float32).contiguous()
                for k, v in self.state_dict().items()}

    @staticmethod
    def layout_for(a: INRArchitecture) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        """Shape and dtype of every stored tensor, from the architecture alone (no allocation)."""
        hc, wc = a.plane_shape
        q = a.q
        net = {"plane": (hc, wc, q), "zline": (a.n_z, q), "w1": (q, q), "b1": (q,), "w2": (q, q), "b2": (q,),
               "w3": (1, q), "b3": (1,)}
        return {f"{part}.{k}": (shape, PLANE_STORAGE_DTYPE if k == "plane" else torch.float32)
                for part in ("amplitude", "phase") for k, shape in net.items()}

    @torch.no_grad()
    def load_storage_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        self.load_state_dict({k: v.float() for k, v in tensors.items()})

    def round_to_storage_(self) -> "FPMINR":
        return self.round_planes_to_storage_()

    @torch.no_grad()
    def round_planes_to_storage_(self) -> "FPMINR":
        """Round both feature planes to :data:`PLANE_STORAGE_DTYPE` values, in place.

        Model files store the planes at half precision (relative step 2^-11, far below the
        reconstruction error; measured decode change in docs/benchmarks.md). Training ends with
        this rounding so that the in-memory model and its saved file decode identically.
        """
        for net in (self.amplitude, self.phase):
            net.plane.copy_(net.plane.to(PLANE_STORAGE_DTYPE).to(net.plane.dtype))
        return self

    def grid(self, region: tuple[int, int, int, int] | None = None, step: int = 1):
        """hr pixel indices ``(rows, cols)`` of a region ``(top, left, height, width)`` with a step."""
        H, W = self.arch.hr_shape
        top, left, height, width = (0, 0, H, W) if region is None else (int(v) for v in region)
        if step < 1 or height < 1 or width < 1 or top < 0 or left < 0 or top + height > H or left + width > W:
            raise ValueError(f"region {region} with step {step} is outside the {H}x{W} hr grid")
        dev = self.amplitude.plane.device
        rows = torch.arange(top, top + height, int(step), device=dev)
        cols = torch.arange(left, left + width, int(step), device=dev)
        return rows, cols

    def forward(self, z_um: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                parts: tuple[str, ...] = ("amplitude", "phase"), row_chunk: int = 16):
        """Tuple of ``(Z, h, w)`` tensors, one per requested part."""
        return tuple(getattr(self, p)(z_um, rows, cols, row_chunk) for p in parts)


# ---- learnable pupil (joint aberration recovery) -------------------------------------------
def noll_to_nm(j: int) -> tuple[int, int]:
    """Noll index ``j >= 1`` -> Zernike radial order ``n`` and signed azimuthal order ``m``."""
    if j < 1:
        raise ValueError("Noll indices start at 1")
    n = 0
    while (n + 1) * (n + 2) // 2 < j:
        n += 1
    k = j - n * (n + 1) // 2 - 1  # position within order n
    # |m| grows through order n in pairs (one 0 for even n); even j -> cos (m > 0), odd -> sin
    m_list = []
    for mm in range(n % 2, n + 1, 2):
        m_list.extend([mm] if mm == 0 else [mm, mm])
    m_abs = m_list[k]
    m = m_abs if (m_abs == 0 or j % 2 == 0) else -m_abs
    return n, m


def zernike(j: int, rho: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Noll-normalised Zernike polynomial ``Z_j(rho, theta)`` (rms 1 over the unit disk)."""
    n, m = noll_to_nm(j)
    ma = abs(m)
    radial = torch.zeros_like(rho)
    for s in range((n - ma) // 2 + 1):
        c = ((-1) ** s * math.factorial(n - s)
             / (math.factorial(s) * math.factorial((n + ma) // 2 - s) * math.factorial((n - ma) // 2 - s)))
        radial = radial + c * rho ** (n - 2 * s)
    if m == 0:
        return math.sqrt(n + 1) * radial
    ang = torch.cos(ma * theta) if m > 0 else torch.sin(ma * theta)
    return math.sqrt(2 * (n + 1)) * radial * ang


class PupilPhase(nn.Module):
    """Pupil ``P = P0 · exp(i · Σ_j c_j Z_j(k / k_max))`` with learnable coefficients ``c_j`` (rad).

    ``k_max = na_obj / λ``; ``P0`` is the starting (ideal or calibrated) pupil on the raw grid.
    Piston, tilts and defocus (Noll 1–4) are excluded by default: in a z-stack reconstruction
    they are indistinguishable from a constant phase, a lateral shift and a shift of ``z``.
    """

    def __init__(self, base_pupil: torch.Tensor, fy: torch.Tensor, fx: torch.Tensor, k_max: float,
                 modes: tuple[int, ...]):
        super().__init__()
        self.modes = tuple(int(j) for j in modes)
        rho = torch.hypot(fx, fy) / k_max
        theta = torch.atan2(fy, fx)
        basis = torch.stack([zernike(j, rho, theta) for j in self.modes]) if self.modes else \
            torch.zeros((0,) + tuple(rho.shape))
        self.register_buffer("basis", (basis * (rho <= 1)).to(torch.float32))
        self.register_buffer("base", base_pupil.to(torch.complex64))
        self.coefficients = nn.Parameter(torch.zeros(len(self.modes), device=base_pupil.device))

    def forward(self) -> torch.Tensor:
        phase = torch.einsum("j,jhw->hw", self.coefficients, self.basis)
        return self.base * torch.polar(torch.ones_like(phase), phase)
