"""The 16-bit log-polar code of a low-rank field's weak terms (:class:`.lowrank.LowRankField` storage).

The code: 8-bit log-magnitude (codes 1..255 evenly spaced in dB over LOGPOLAR_RANGE_DB
below the term's peak, code 0 = zero) and 8-bit phase (256 steps of 2π/256). Relative error of one
coefficient inside the range: log step 60/254 dB -> 2.7 % (RMS 0.79 %), phase step 24.5 mrad (RMS
0.71 %): about -40 dB of the term's energy, whatever the term's spectrum looks like (a uniform 8-bit
code of real/imag parts would lose the term's many weak bins to the peak's step).
"""

from __future__ import annotations

import math

import torch

__all__ = ["LOGPOLAR_ENCODING", "LOGPOLAR_RANGE_DB", "TERM_ENCODINGS", "decode_logpolar", "encode_logpolar",
           "snap_scale"]

LOGPOLAR_ENCODING = "logpolar8"
LOGPOLAR_RANGE_DB = 60.0
TERM_ENCODINGS = ("float16", LOGPOLAR_ENCODING)


def snap_scale(x: torch.Tensor) -> torch.Tensor:
    """``x`` (positive float32) to the nearest value with a 17-bit mantissa (relative step ≤ 2^-16)."""
    mantissa, exponent = torch.frexp(x)
    return torch.ldexp(torch.round(mantissa * 2.0 ** 17) / 2.0 ** 17, exponent.to(x.dtype))


def encode_logpolar(coef: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The 16-bit log-polar code of complex ``coef`` (R_c, K) relative to each row's peak modulus
    ``scale`` (R_c,): uint8 (2, R_c, K), [0] the magnitude code, [1] the phase code.

    Magnitude ``m``: codes 1..255 are ``scale · 10^(-(255 - m)·Δ/20)``, ``Δ = LOGPOLAR_RANGE_DB/254``
    (nearest in dB), code 0 is zero (below half the range's floor). Phase ``p``: ``2π·p/256`` (nearest).
    """
    step_db = LOGPOLAR_RANGE_DB / 254
    c = coef.to(torch.complex128)
    rel = c.abs() / scale.to(torch.float64)[:, None].clamp_min(1e-300)
    db = 20 * torch.log10(rel.clamp_min(1e-300))
    mag = torch.round(255 + db / step_db).clamp(1, 255)
    mag = torch.where(rel < 0.5 * 10 ** (-LOGPOLAR_RANGE_DB / 20), torch.zeros_like(mag), mag)
    phase = torch.remainder(torch.round(c.angle() * (128 / math.pi)), 256)
    phase = torch.where(mag > 0, phase, torch.zeros_like(phase))  # a zero has no phase
    return torch.stack([mag, phase]).to(torch.uint8).contiguous()


def decode_logpolar(codes: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Complex64 (R_c, K) of the codes :func:`encode_logpolar` writes (tables in float64, then float32:
    memory and file decode bit-identically)."""
    levels = torch.arange(256, dtype=torch.float64)
    magnitude = 10 ** (-(255 - levels) * (LOGPOLAR_RANGE_DB / 254) / 20)
    magnitude[0] = 0.0
    angle = levels * (math.pi / 128)
    unit = torch.stack([angle.cos(), angle.sin()], 1).to(torch.float32)  # (256, 2)
    m, p = codes[0].long().cpu(), codes[1].long().cpu()
    vals = magnitude.to(torch.float32)[m][..., None] * unit[p] * scale.float().cpu()[:, None, None]
    return torch.view_as_complex(vals.contiguous())
