"""Atomic file writes: readers never see a half-written file.

``atomic_write(path)`` yields a temporary path in the destination folder (same file system, so
the final ``os.replace`` is atomic). On success the temporary file replaces ``path``; on any
exception it is removed and ``path`` is left untouched. Temporary names carry the writer's process
id (``.<name>.<pid>.<random>.tmp<suffix>``) so that those of a killed run are recognised and
removed by the next write of the same file (:func:`napari_fpminr.io.safety.clean_stale`).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .safety import clean_stale


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: permissions a plain ``open(path, "w")`` would give (temporary files are created 0600)
FILE_MODE = 0o666 & ~_umask()
DIR_MODE = 0o777 & ~_umask()


@contextlib.contextmanager
def atomic_write(path: str | Path) -> Iterator[Path]:
    """Context manager yielding a temporary sibling of ``path`` to write to.

    The temporary name keeps ``path``'s suffix (some writers choose a format by suffix).
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    clean_stale(path)
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.{os.getpid()}.", suffix=f".tmp{path.suffix}")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
