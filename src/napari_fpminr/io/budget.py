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
