"""LED-array geometry -> illumination numerical apertures (shared/DESIGN.md §1-2).

Coordinates: ``x`` horizontal (image columns), ``y`` vertical (image rows), millimetres for
positions on the LED board. The LED plane lies ``distance_mm`` below the sample plane, or below
the bottom face of a glass slab (microscope slide) of thickness ``slab_thickness_mm`` and
refractive index ``slab_index`` that carries the sample on its top face.

Illumination NA. A ray from an LED at lateral distance ``l`` from the patch centre reaches the
centre after crossing ``distance_mm`` of air at angle ``θa`` and the slab at the refracted angle
``θg`` (Snell: ``sin θa = n·sin θg``)::

    distance_mm · tan θa + slab_thickness_mm · tan θg = l

On leaving the parallel slab the ray regains the angle ``θa`` (the sample is treated as being in
air), so the illumination NA is ``sin θa``. Without a slab this reduces to
``l / sqrt(l² + distance_mm²)``. The equation is monotonic in ``θa`` and is solved for all LEDs
at once by bisection on the entry point of the ray into the slab.

Sign: with the forward model's convention (LED window centred at ``-(na_x, na_y)/λ``) an LED at
azimuth ``φ = atan2(y, x)`` has ``(na_x, na_y) = -NA_ill · (cos φ, sin φ)`` (as in the UConn
reference code).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "illumination_na",
    "led_positions_mm",
    "raster_offsets",
    "refracted_sine",
    "spiral_offsets",
]


def spiral_offsets(n_leds: int) -> np.ndarray:
    """Integer ``(dx, dy)`` LED offsets (in pitches) of a square spiral out from the centre.

    The walk starts at ``(0, 0)`` and takes legs of ``+x 1, +y 1, -x 2, -y 2, +x 3, +y 3, ...``
    (the UConn acquisition order). ``n_leds = k²`` (odd ``k``) covers a ``k × k`` square.
    """
    if n_leds < 1:
        raise ValueError(f"n_leds must be >= 1, got {n_leds}")
    # leg lengths 1,1,2,2,3,3,... with directions +x,+y,-x,-y repeating
    n_legs = 2 * int(np.ceil(np.sqrt(n_leds))) + 2
    lengths = np.repeat(np.arange(1, n_legs // 2 + 2), 2)[:n_legs]
    dirs = np.array([[1, 0], [0, 1], [-1, 0], [0, -1]])
    steps = np.repeat(dirs[np.arange(n_legs) % 4], lengths, axis=0)[: n_leds - 1]
    return np.concatenate([np.zeros((1, 2), dtype=np.int64), np.cumsum(steps, axis=0)]).astype(np.int64)


def raster_offsets(n_rows: int, n_cols: int) -> np.ndarray:
    """``(dx, dy)`` offsets (in pitches) of a centred raster, row by row (y outer, x inner).

    Offsets are ``index - (n - 1)/2``, i.e. half-integers for an even grid size.
    """
    if n_rows < 1 or n_cols < 1:
        raise ValueError(f"grid size must be >= 1, got {n_rows}x{n_cols}")
    dy, dx = np.meshgrid(np.arange(n_rows) - (n_rows - 1) / 2, np.arange(n_cols) - (n_cols - 1) / 2,
                         indexing="ij")
    return np.stack([dx.ravel(), dy.ravel()], axis=1)


def led_positions_mm(offsets: np.ndarray, pitch_mm: float, centre_mm=(0.0, 0.0),
                     rotation_deg: float = 0.0, transform=None) -> np.ndarray:
    """LED ``(x, y)`` positions in mm relative to the patch centre.

    ``x0 = centre_x + dx·pitch``, ``y0 = centre_y + dy·pitch`` (``centre_mm`` is the offset of the
    ``(0, 0)`` LED from the patch centre, in board coordinates), then the board's orientation
    ``transform`` (a 2×2 matrix, :mod:`.orientation`; identity when ``None``) maps board
    coordinates to camera ones, and the board is rotated by ``rotation_deg`` counter-clockwise
    about the patch centre.
    """
    off = np.asarray(offsets, dtype=np.float64).reshape(-1, 2)
    x0 = float(centre_mm[0]) + off[:, 0] * float(pitch_mm)
    y0 = float(centre_mm[1]) + off[:, 1] * float(pitch_mm)
    if transform is not None:
        m = np.asarray(transform, dtype=np.float64)
        x0, y0 = m[0, 0] * x0 + m[0, 1] * y0, m[1, 0] * x0 + m[1, 1] * y0
    t = np.deg2rad(float(rotation_deg))
    return np.stack([x0 * np.cos(t) - y0 * np.sin(t), x0 * np.sin(t) + y0 * np.cos(t)], axis=1)


def refracted_sine(lateral_mm: np.ndarray, distance_mm: float, slab_thickness_mm: float = 0.0,
                   slab_index: float = 1.0, tol_mm: float = 1e-10) -> np.ndarray:
    """``sin θa`` of the ray from an LED at ``lateral_mm`` that reaches the patch centre.

    Solves ``distance·tan θa + t·tan θg = l`` with ``sin θa = n·sin θg`` for every LED at once
    by bisection on the ray's entry point ``s`` into the slab (``0 <= s <= l``, measured from the
    patch centre): ``s = t·tan θg`` and ``tan θa = (l - s)/distance``. Vectorized (``distance_mm``
    may be an array broadcasting against ``lateral_mm``: many board heights at once); ``tol_mm`` is
    the tolerance on ``s``.
    """
    lat = np.abs(np.asarray(lateral_mm, dtype=np.float64))
    distance_mm = np.asarray(distance_mm, dtype=np.float64)  # a number, or one per LED (broadcast)
    t = float(slab_thickness_mm)
    n = float(slab_index)
    if not np.all(distance_mm > 0):
        raise ValueError(f"LED distance must be positive, got {distance_mm.min()} mm")
    if distance_mm.ndim:
        lat, distance_mm = np.broadcast_arrays(lat, distance_mm)
    else:
        distance_mm = float(distance_mm)
    if t < 0 or n < 1.0:
        raise ValueError(f"slab needs thickness >= 0 and index >= 1, got {t} mm, n={n}")
    if t == 0:
        return lat / np.hypot(lat, distance_mm)

    def residual(s):  # increasing in s: the glass path needed minus the glass path taken
        sin_a = (lat - s) / np.hypot(lat - s, distance_mm)
        sin_g = sin_a / n
        return s - t * sin_g / np.sqrt(1.0 - sin_g**2)

    lo = np.zeros_like(lat)
    hi = lat.copy()
    n_iter = int(np.ceil(np.log2(max(float(lat.max(initial=0.0)), tol_mm) / tol_mm))) + 1
    for _ in range(max(n_iter, 1)):
        mid = 0.5 * (lo + hi)
        pos = residual(mid) > 0
        hi = np.where(pos, mid, hi)
        lo = np.where(pos, lo, mid)
    s = 0.5 * (lo + hi)
    return (lat - s) / np.hypot(lat - s, distance_mm)


def illumination_na(positions_mm: np.ndarray, distance_mm: float, slab_thickness_mm: float = 0.0,
                    slab_index: float = 1.0) -> np.ndarray:
    """``(N, 2)`` illumination NA ``(na_x, na_y) = -NA_ill·(cos φ, sin φ)`` for LEDs at ``(x, y)`` mm."""
    pos = np.asarray(positions_mm, dtype=np.float64).reshape(-1, 2)
    lateral = np.hypot(pos[:, 0], pos[:, 1])
    na_abs = refracted_sine(lateral, distance_mm, slab_thickness_mm, slab_index)
    phi = np.arctan2(pos[:, 1], pos[:, 0])
    return np.stack([-na_abs * np.cos(phi), -na_abs * np.sin(phi)], axis=1)
