"""Colour arithmetic of the colour z-stack: sRGB encoding, CIELAB and the CIEDE2000 colour difference.

The three channels of a colour model are white-balanced linear intensity transmittances
``T = |o|² / white`` (bare glass = 1 in every channel), read as linear sRGB primaries: the red,
green and blue acquisitions are taken as the display's R, G, B. ``srgb_uint8`` applies the sRGB
transfer curve (IEC 61966-2-1) for display; ``lab`` converts linear sRGB (D65) to CIELAB and
``ciede2000`` is the CIE 2000 colour difference (Sharma, Wu & Dalal 2005, with their test data in
the tests). Plain numpy; arrays carry the three channels on the last axis.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ciede2000", "lab", "srgb_encode", "srgb_uint8"]

# linear sRGB (D65) -> CIE XYZ, and the D65 white
_RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])
_WHITE_XYZ = _RGB_TO_XYZ.sum(axis=1)


def srgb_encode(linear: np.ndarray) -> np.ndarray:
    """sRGB transfer curve of linear values clipped to [0, 1] (float in [0, 1])."""
    c = np.clip(np.asarray(linear, dtype=np.float32), 0.0, 1.0)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * np.power(c, 1.0 / 2.4) - 0.055).astype(np.float32)


_LUT_SIZE = 4096
_LUT = np.round(255.0 * srgb_encode(np.linspace(0.0, 1.0, _LUT_SIZE))).astype(np.uint8)


def srgb_uint8(linear: np.ndarray) -> np.ndarray:
    """8-bit sRGB of linear values (clipped to [0, 1]; a 4096-entry table, within 1 level of the curve)."""
    x = np.asarray(linear, dtype=np.float32)
    idx = np.clip(x * (_LUT_SIZE - 1) + 0.5, 0, _LUT_SIZE - 1).astype(np.int32)
    return _LUT[idx]


def lab(linear_rgb: np.ndarray) -> np.ndarray:
    """CIELAB ``(..., 3)`` (L*, a*, b*) of linear sRGB ``(..., 3)`` values (D65 white = (100, 0, 0))."""
    rgb = np.clip(np.asarray(linear_rgb, dtype=np.float64), 0.0, None)
    xyz = rgb @ _RGB_TO_XYZ.T / _WHITE_XYZ
    d = 6.0 / 29.0
    f = np.where(xyz > d**3, np.cbrt(xyz), xyz / (3 * d * d) + 4.0 / 29.0)
    L = 116.0 * f[..., 1] - 16.0
    a = 500.0 * (f[..., 0] - f[..., 1])
    b = 200.0 * (f[..., 1] - f[..., 2])
    return np.stack([L, a, b], axis=-1)


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference ΔE00 of CIELAB colours ``(..., 3)`` (kL = kC = kH = 1)."""
    L1, a1, b1 = np.moveaxis(np.asarray(lab1, np.float64), -1, 0)
    L2, a2, b2 = np.moveaxis(np.asarray(lab2, np.float64), -1, 0)
    c_bar = 0.5 * (np.hypot(a1, b1) + np.hypot(a2, b2))
    g = 0.5 * (1.0 - np.sqrt(c_bar**7 / (c_bar**7 + 25.0**7)))
    a1p, a2p = (1.0 + g) * a1, (1.0 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360.0
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360.0
    chroma0 = (c1p * c2p) == 0
    dh = h2p - h1p
    dh = np.where(dh > 180.0, dh - 360.0, np.where(dh < -180.0, dh + 360.0, dh))
    dh = np.where(chroma0, 0.0, dh)
    dL = L2 - L1
    dC = c2p - c1p
    dH = 2.0 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh) / 2.0)
    L_bar = 0.5 * (L1 + L2)
    C_bar = 0.5 * (c1p + c2p)
    h_sum = h1p + h2p
    h_bar = np.where(np.abs(h1p - h2p) <= 180.0, 0.5 * h_sum,
                     np.where(h_sum < 360.0, 0.5 * (h_sum + 360.0), 0.5 * (h_sum - 360.0)))
    h_bar = np.where(chroma0, h_sum, h_bar)
    t = (1.0 - 0.17 * np.cos(np.radians(h_bar - 30.0)) + 0.24 * np.cos(np.radians(2.0 * h_bar))
         + 0.32 * np.cos(np.radians(3.0 * h_bar + 6.0)) - 0.20 * np.cos(np.radians(4.0 * h_bar - 63.0)))
    d_theta = 30.0 * np.exp(-(((h_bar - 275.0) / 25.0) ** 2))
    r_c = 2.0 * np.sqrt(C_bar**7 / (C_bar**7 + 25.0**7))
    s_l = 1.0 + 0.015 * (L_bar - 50.0) ** 2 / np.sqrt(20.0 + (L_bar - 50.0) ** 2)
    s_c = 1.0 + 0.045 * C_bar
    s_h = 1.0 + 0.015 * C_bar * t
    r_t = -np.sin(np.radians(2.0 * d_theta)) * r_c
    tl, tc, th = dL / s_l, dC / s_c, dH / s_h
    return np.sqrt(np.clip(tl**2 + tc**2 + th**2 + r_t * tc * th, 0.0, None))
