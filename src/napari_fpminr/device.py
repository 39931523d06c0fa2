"""Compute-device selection (CUDA when present, CPU otherwise, overridable by the user), and the
CPU heap setting the solvers run under (:func:`heap_pages_kept`)."""

from __future__ import annotations

import ctypes
import os
import platform
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .errors import FPMInputError


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/``None`` -> ``cuda`` if available else ``cpu``; ``"cuda"`` without a GPU is an error."""
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FPMInputError("device 'cuda' requested but no CUDA GPU is available; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise FPMInputError(f"unknown device {device!r}; use auto, cpu or cuda") from exc


# --- CPU heap: keep freed pages mapped while a solver runs ---------------------------------------

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc mallopt parameters (malloc.h)
_GLIBC_DEFAULT_TRIM, _GLIBC_DEFAULT_MMAP_MAX = 128 * 1024, 65536
_KEEP_TRIM = 2**31 - 1  # mallopt takes an int: 2 GB of free heap top is never trimmed while kept
_heap_lock = threading.Lock()
_heap_users = 0


def _glibc():
    """The process's glibc (for ``mallopt``/``malloc_trim``), or None elsewhere (macOS, musl, Windows)."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    if "malloc" in os.environ.get("GLIBC_TUNABLES", "") or os.environ.get("FPMINR_KEEP_HEAP", "1") == "0":
        return None  # the user tuned the allocator (or opted out): leave it alone
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


@contextmanager
def heap_pages_kept(device: torch.device | str | None = "cpu") -> Iterator[None]:
    """While inside, freed CPU memory stays mapped in the process (glibc on Linux; elsewhere a no-op).

    Every step of the solvers allocates and frees the same tens of MB of temporaries (LED fields,
    amplitudes, gradients). glibc serves blocks above its mmap threshold (128 KB growing to at
    most 32 MB) by ``mmap`` and unmaps them on free, so each step faults every page of them in
    again — under virtualization that is half the time of a polish step (measured on the 2-core
    CI-like VM, seeded INR on the tilted sample: 128² raw 5.5 → 3.9 s, 256² raw 38 → 19 s).
    Inside, ``mmap`` is off for ``malloc`` and the heap top is never trimmed, so the pages are
    reused; when the last user leaves, glibc's static defaults come back and ``malloc_trim(0)``
    returns the free pages to the system. Nests and is thread-safe (a count of users).
    CUDA devices are unaffected (their memory has its own caching allocator). Set
    ``FPMINR_KEEP_HEAP=0``, or tune malloc yourself through ``GLIBC_TUNABLES``, to opt out.
    """
    global _heap_users
    dev = torch.device(device) if device is not None else torch.device("cpu")
    libc = _glibc() if dev.type == "cpu" else None
    if libc is None:
        yield
        return
    with _heap_lock:
        if _heap_users == 0:
            libc.mallopt(_M_MMAP_MAX, 0)
            libc.mallopt(_M_TRIM_THRESHOLD, _KEEP_TRIM)
        _heap_users += 1
    try:
        yield
    finally:
        with _heap_lock:
            _heap_users -= 1
            if _heap_users == 0:
                libc.mallopt(_M_MMAP_MAX, _GLIBC_DEFAULT_MMAP_MAX)
                libc.mallopt(_M_TRIM_THRESHOLD, _GLIBC_DEFAULT_TRIM)
                libc.malloc_trim(0)
