"""Draw the LED board as seen from the camera, for the user guide (docs/images/led_board_camera_view.png).

The example rig of the user guide: an 8x8 board, 8 mm pitch, 180 mm below the sample, objective
NA 0.1, LEDs taken row by row (``--led-order raster``). The picture uses the board coordinates of
``fpminr import``: x along image columns (right), y along image rows (down), origin on the board
below the sample centre. Each LED is labelled with its frame number; the LEDs inside the
bright-field circle (illumination NA < objective NA) are filled.

Run: ``python scripts/make_board_picture.py [OUT.png]`` (needs Pillow and the package).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from napari_fpminr.io.frames import grid_offsets
from napari_fpminr.optics.led_array import LEDArray

ROWS = COLS = 8
PITCH_MM, DISTANCE_MM, NA_OBJ = 8.0, 180.0, 0.1
SIZE, MARGIN = 760, 120                     # picture side and margin (px)
SCALE = (SIZE - 2 * MARGIN) / (COLS * PITCH_MM)   # px per mm


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: fixed bitmap font
        return ImageFont.load_default()


def _to_px(x_mm: float, y_mm: float) -> tuple[float, float]:
    """Board mm -> picture px: x right, y down, origin (the optical axis) in the middle."""
    return SIZE / 2 + x_mm * SCALE, SIZE / 2 + y_mm * SCALE


def _arrow(draw, start, end, text, font, anchor):
    draw.line([start, end], fill="black", width=3)
    direction = np.subtract(end, start) / np.hypot(*np.subtract(end, start))
    normal = np.array([-direction[1], direction[0]])
    tip = np.array(end)
    head = [tuple(tip), tuple(tip - 14 * direction + 7 * normal), tuple(tip - 14 * direction - 7 * normal)]
    draw.polygon(head, fill="black")
    draw.text(tuple(tip + 10 * direction), text, fill="black", font=font, anchor=anchor)


def draw_board(out: Path) -> Path:
    leds = LEDArray(offsets=grid_offsets(ROWS, COLS, "raster"), pitch_mm=PITCH_MM, distance_mm=DISTANCE_MM)
    pos = leds.positions_mm()
    bright = np.hypot(*leds.na_at().T) < NA_OBJ
    img = Image.new("RGB", (SIZE, SIZE), "white")
    draw = ImageDraw.Draw(img)
    small, big = _font(13), _font(18)
    radius_mm = DISTANCE_MM * np.tan(np.arcsin(NA_OBJ))    # where the illumination NA equals NA_obj
    cx, cy = _to_px(0, 0)
    r = radius_mm * SCALE
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=(70, 130, 200), width=2)
    led_r = 0.32 * PITCH_MM * SCALE
    for i, ((x, y), bf) in enumerate(zip(pos, bright)):
        px, py = _to_px(x, y)
        draw.ellipse([px - led_r, py - led_r, px + led_r, py + led_r], outline="black", width=2,
                     fill=(255, 205, 60) if bf else (235, 235, 235))
        draw.text((px, py), str(i + 1), fill="black", font=small, anchor="mm")
    draw.line([cx - 9, cy, cx + 9, cy], fill="red", width=2)
    draw.line([cx, cy - 9, cx, cy + 9], fill="red", width=2)
    x0, y0 = 24, 24
    _arrow(draw, (x0, y0), (x0 + 110, y0), "+x_mm: image columns (right)", small, "lm")
    _arrow(draw, (x0, y0), (x0, y0 + 70), "", small, "mt")
    draw.text((x0 + 8, y0 + 72), "+y_mm: image rows (down)", fill="black", font=small, anchor="lt")
    draw.text((SIZE / 2, SIZE - 66), "the LED board as seen from the camera (in the frame of the displayed image)",
              fill="black", font=big, anchor="mm")
    draw.text((SIZE / 2, SIZE - 42), f"{ROWS}x{COLS} LEDs, {PITCH_MM:g} mm pitch, {DISTANCE_MM:g} mm below the sample, "
              f"NA {NA_OBJ:g}; numbers: frame order of --led-order raster", fill="black", font=small, anchor="mm")
    draw.text((SIZE / 2, SIZE - 20), "red cross: (0, 0), the point below the sample centre; blue circle: illumination "
              "NA = objective NA (yellow: bright-field LEDs)", fill="black", font=small, anchor="mm")
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out, optimize=True)
    return out


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "docs" / "images" / \
        "led_board_camera_view.png"
    print(draw_board(target))
