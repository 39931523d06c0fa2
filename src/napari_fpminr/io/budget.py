"""Memory and output-size budgets: estimate before allocating, refuse with one clear line.

The machine's limit is the memory the kernel reports as available (``MemAvailable``) and the free
space of the output folder; ``fpminr --max-memory`` / ``--max-output`` (:func:`limits`) lower them.
Readers call :func:`check_memory` with the bytes a file *declares* (array shapes in its headers)
before they decode anything, so a small compressed file that would expand to gigabytes is refused
up front, and so is a reconstruction or render whose estimated peak exceeds the budget.

Sizes are written and parsed with binary units: ``"512M"``, ``"4G"``, ``"1.5GiB"``, ``"2000000"``.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import FPMInputError

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
#: fraction of the available memory a single job may plan to use (the rest is headroom)
AVAILABLE_SHARE = 0.8


@dataclass(frozen=True)
class Limits:
    """User limits in bytes (``None``: only the machine's own limit applies)."""

    max_memory: int | None = None
    max_output: int | None = None


_LIMITS: contextvars.ContextVar[Limits] = contextvars.ContextVar("fpminr_limits", default=Limits())


def parse_size(text: str | int | float) -> int:
    """Bytes from ``"512M"``, ``"4G"``, ``"1.5GiB"``, ``"100k"`` or a plain number of bytes."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value, unit = float(text), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([kmgtKMGT]?)(?:i?[bB])?\s*", str(text))
        if not match:
            raise FPMInputError(f"cannot read the size {text!r} (write e.g. 512M, 4G or 1.5GiB)")
        value, unit = float(match.group(1)), match.group(2).lower()
    nbytes = value * _UNITS[unit]
    if not nbytes > 0 or nbytes != nbytes or nbytes == float("inf"):
        raise FPMInputError(f"a size limit must be positive, got {text!r}")
    return int(nbytes)


def format_bytes(nbytes: float) -> str:
    """``1536 -> "1.5 KiB"``; sizes in the messages the user reads."""
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} PiB"  # pragma: no cover


@contextlib.contextmanager
def limits(max_memory: int | None = None, max_output: int | None = None) -> Iterator[Limits]:
    """Apply user limits (bytes) to every estimate made inside the ``with`` block."""
    token = _LIMITS.set(Limits(max_memory, max_output))
    try:
        yield _LIMITS.get()
    finally:
        _LIMITS.reset(token)


def available_memory() -> int:
    """Bytes the kernel reports as available (``MemAvailable``), or physical memory as a fallback."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 1 << 40


def memory_budget() -> tuple[int, str]:
    """``(bytes, where the limit comes from)``: the smaller of ``--max-memory`` and the machine's."""
    machine = int(available_memory() * AVAILABLE_SHARE)
    user = _LIMITS.get().max_memory
    if user is not None and user <= machine:
        return user, "--max-memory"
    return machine, "available memory"


def output_budget(folder: Path) -> tuple[int, str]:
    """``(bytes, source)``: the smaller of ``--max-output`` and the free space in ``folder``."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = 1 << 62
    user = _LIMITS.get().max_output
    if user is not None and user <= free:
        return user, "--max-output"
    return free, "free disk space"


def check_memory(nbytes: float, what: str, path: str | Path | None = None, hint: str = "") -> None:
    """Refuse work whose estimated peak memory ``nbytes`` exceeds :func:`memory_budget`."""
    budget, source = memory_budget()
    if nbytes > budget:
        tail = f"; {hint}" if hint else ""
        raise FPMInputError(f"{what} needs about {format_bytes(nbytes)} of memory, more than the "
                            f"{format_bytes(budget)} allowed ({source}){tail}", path)


def check_output(nbytes: float, what: str, path: str | Path, hint: str = "") -> None:
    """Refuse an output whose estimated size exceeds :func:`output_budget` of its folder."""
    folder = Path(path).parent if str(Path(path).parent) else Path(".")
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    budget, source = output_budget(folder)
    if nbytes > budget:
        tail = f"; {hint}" if hint else ""
        raise FPMInputError(f"{what} would write about {format_bytes(nbytes)}, more than the "
                            f"{format_bytes(budget)} allowed ({source}){tail}", path)


# ---- estimates of peak memory and output size ----------------------------------------------
# Measured on CPU (peak RSS above the interpreter with torch loaded, 2026-12, paper optics, 69
# LEDs): INR training at 64²/128²/256² raw px (2x upsampling) 0.14/0.28/0.58 GB with all LEDs per
# chunk, 0.43 GB at 256² with one LED per chunk; the 1024² x 100-LED run peaked at 9.4 GB.
# The default pipeline (conventional seed + low-rank polish, TrainConfig defaults) measured 336 and
# 702 MiB at 128² and 256² (estimates 352 and 809 MiB). The constants below reproduce these within
# about +25 % (estimates err on the large side).
PROCESS_OVERHEAD = 200 << 20
INR_BYTES_PER_HR_PIXEL = 1400  # features, activations and gradients of both networks, q = 32
INR_BYTES_PER_LED_PIXEL = 48  # per LED of a forward chunk, per raw pixel (windows, fields, grads)
RAW_COPIES = 3  # intensities as float32: the file's array, the normalised copy, the device tensor
FPM_CHUNK_BYTES = 64 << 20  # conventional solver's working set on CPU (recon.conventional._auto_chunk)
STACK_COPIES = 3  # rendered planes: the per-batch pieces, their concatenation, the writer's copy


def raw_bytes(n_leds: int, lr_shape: tuple[int, int]) -> int:
    """Memory held by the raw intensities and their working copies (float32)."""
    return RAW_COPIES * 4 * n_leds * lr_shape[0] * lr_shape[1]


def inr_training_bytes(n_leds: int, lr_shape: tuple[int, int], hr_shape: tuple[int, int], *,
                       q: int = 32, led_batch: int | None = None) -> int:
    """Estimated peak memory of INR training (:func:`napari_fpminr.recon.train.iter_train`)."""
    batch = min(n_leds, led_batch or n_leds)
    hr_px = hr_shape[0] * hr_shape[1]
    lr_px = lr_shape[0] * lr_shape[1]
    return int(PROCESS_OVERHEAD + raw_bytes(n_leds, lr_shape) + INR_BYTES_PER_HR_PIXEL * hr_px * q / 32
               + INR_BYTES_PER_LED_PIXEL * lr_px * batch)


def led_batch_for(budget: int, n_leds: int, lr_shape: tuple[int, int], hr_shape: tuple[int, int], *,
                  q: int = 32) -> int | None:
    """Largest LED chunk whose training estimate fits ``budget``: ``None`` = all LEDs, 0 = none fits."""
    if inr_training_bytes(n_leds, lr_shape, hr_shape, q=q) <= budget:
        return None
    fixed = inr_training_bytes(n_leds, lr_shape, hr_shape, q=q, led_batch=1) - \
        INR_BYTES_PER_LED_PIXEL * lr_shape[0] * lr_shape[1]
    per_led = INR_BYTES_PER_LED_PIXEL * lr_shape[0] * lr_shape[1]
    return max(0, min(n_leds, int((budget - fixed) // per_led)))


def stack_bytes(n_planes: int, hr_shape: tuple[int, int], channels: int) -> int:
    """Uncompressed size of a float32 stack of ``n_planes`` x ``channels`` planes (the output size)."""
    return 4 * n_planes * channels * hr_shape[0] * hr_shape[1]


def fpm_bytes(n_leds: int, lr_shape: tuple[int, int], hr_shape: tuple[int, int], n_planes: int) -> int:
    """Estimated peak memory of a conventional reconstruction written as a stack (amplitude + phase)."""
    return int(PROCESS_OVERHEAD + raw_bytes(n_leds, lr_shape) + FPM_CHUNK_BYTES
               + STACK_COPIES * stack_bytes(n_planes, hr_shape, 2))


def render_bytes(hr_shape: tuple[int, int], n_planes: int, channels: int, *, all_in_focus: bool = False) -> int:
    """Estimated peak memory of rendering ``n_planes`` planes (and fusing them, for all-in-focus)."""
    copies = STACK_COPIES + (3 if all_in_focus else 0)  # focus measures work on tensors of the stack's size
    return int(PROCESS_OVERHEAD + copies * stack_bytes(n_planes, hr_shape, channels))
