"""Device selection and the CPU heap setting the solvers run under."""

from __future__ import annotations

import ctypes
import platform
import sys

import numpy as np
import pytest
import torch

from napari_fpminr import device as dev
from napari_fpminr.device import heap_pages_kept, resolve_device
from napari_fpminr.errors import FPMInputError


def test_auto_device_is_cpu_without_cuda_and_cuda_request_fails_clearly():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(FPMInputError, match="no CUDA GPU"):
        resolve_device("cuda")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _mmapped_blocks():
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = _MallInfo2
    return int(libc.mallinfo2().hblks)


glibc_only = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc"
    or not hasattr(ctypes.CDLL(None), "mallinfo2") or dev._glibc() is None,
    reason="needs glibc >= 2.33 (mallinfo2) and no user malloc tuning")


@glibc_only
def test_large_buffers_come_from_the_kept_heap_inside_and_from_mmap_again_after():
    """Inside, a 64 MB buffer is not mmapped (so its pages survive being freed and reused);
    after the last user leaves, glibc's behaviour is back."""
    with heap_pages_kept("cpu"):
        with heap_pages_kept("cpu"):  # nests
            before = _mmapped_blocks()
            a = np.ones(8 << 20)  # 64 MB
            assert _mmapped_blocks() == before
            del a
        b = np.ones(8 << 20)
        assert _mmapped_blocks() == before  # still kept: one user left
        del b
    assert dev._heap_users == 0
    before = _mmapped_blocks()
    c = np.ones(8 << 20)
    assert _mmapped_blocks() == before + 1
    del c


def test_heap_setting_is_released_on_error_and_ignored_for_cuda():
    with pytest.raises(RuntimeError):
        with heap_pages_kept("cpu"):
            raise RuntimeError("boom")
    assert dev._heap_users == 0
    with heap_pages_kept("cuda"):
        assert dev._heap_users == 0
