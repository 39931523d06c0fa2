"""Output-side guards: never overwrite an input, one line for every write failure, one writer at a time.

* :func:`check_output_path` refuses an output that is, or would replace, an input file (the same
  path, a hard or symbolic link to it, a JSON sidecar, or a folder that contains it), an existing
  folder where a file is due, and a missing or unwritable destination folder.
* :func:`writing` turns the ``OSError`` of a write (disk full, file too large, read-only or
  vanished folder, permission denied) into a one-line :class:`FPMInputError` naming the output.
* :func:`output_lock` is an advisory lock (``flock``) on ``.<name>.lock`` beside the output: a
  second run writing the same output at the same time stops with one line instead of silently
  overwriting the first one's result.
* :func:`clean_stale` removes temporary files and folders left by our own writers in runs that
  died (their process id is gone), and puts back a folder output that a run killed between its
  two renames had moved aside (:mod:`napari_fpminr.io.stack_files`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import FPMInputError

#: temporary names of our writers: ``.<name>.<pid>.<random>.tmp<suffix>``; folder backups
#: ``.<name>.old-<pid>``
_TMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp(\.[^/]*)?$")
_OLD = re.compile(r"^\.(?P<name>.+)\.old-(?P<pid>\d+)$")


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.resolve() == b.resolve():
            return True
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _inside(child: Path, folder: Path) -> bool:
    try:
        child.resolve().relative_to(folder.resolve())
        return True
    except (ValueError, OSError):
        return False


def input_files(path: str | Path) -> list[Path]:
    """An input and its companions that an output must never replace (a TIFF's JSON sidecar)."""
    path = Path(path)
    files = [path]
    if path.suffix.lower() in (".tif", ".tiff"):
        files.append(path.with_suffix(".json"))
    return files


def check_output_path(out: str | Path, inputs: Iterable[str | Path] = (), *, folder_output: bool = False) -> Path:
    """Validate an output path before any work; returns it as a ``Path``.

    ``inputs`` are the files the command reads (use :func:`input_files` to add sidecars);
    ``folder_output`` is True for outputs that are folders (``.zarr``).
    """
    out = Path(out)
    for inp in inputs:
        inp = Path(inp)
        if _same_file(out, inp):
            raise FPMInputError(f"the output would overwrite the input {inp}; choose another -o", out)
        if folder_output and _inside(inp, out):
            raise FPMInputError(f"the output folder would replace the input {inp} inside it; choose another -o",
                                out)
    if out.is_dir() and not folder_output:
        raise FPMInputError("is an existing folder; give a file name for the output", out)
    if folder_output and out.exists():
        if not out.is_dir():
            raise FPMInputError("exists and is not a folder; remove it or choose another -o", out)
        if not ((out / ".zgroup").exists() or (out / "zarr.json").exists()):
            raise FPMInputError("is an existing folder that is not a zarr store; it will not be replaced", out)
    parent = out.parent if str(out.parent) else Path(".")
    probe = parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise FPMInputError(f"cannot write here: {probe} is not a folder", out)
    if not os.access(probe, os.W_OK | os.X_OK):
        raise FPMInputError(f"cannot write here: no write permission in {probe}", out)
    return out


@contextlib.contextmanager
def writing(path: str | Path) -> Iterator[Path]:
    """Convert the ``OSError`` of a write into a one-line ``FPMInputError`` naming ``path``."""
    path = Path(path)
    try:
        yield path
    except FPMInputError:
        raise
    except OSError as exc:
        raise FPMInputError(f"cannot write: {_reason(exc)}", path) from None


def _reason(exc: OSError) -> str:
    reasons = {errno.ENOSPC: "disk full (no space left on device)", errno.EFBIG: "file too large for this disk or limit",
               errno.EROFS: "read-only file system", errno.EACCES: "permission denied",
               errno.EDQUOT: "disk quota exceeded", errno.ENOTDIR: "a part of the path is not a folder"}
    if exc.errno in reasons:
        return reasons[exc.errno]
    detail = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    return detail if exc.errno else f"write failed ({detail})"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            p.unlink()


def clean_stale(path: str | Path) -> None:
    """Tidy what killed runs left beside ``path``; restore a folder output moved aside by one.

    Only names of our own writers are touched, and only when the process that made them is gone.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        siblings = [p for p in folder.iterdir() if p.name.startswith(f".{path.name}.")]
    except OSError:
        return
    for p in sorted(siblings):
        old = _OLD.match(p.name)
        tmp = _TMP.match(p.name)
        match = old or tmp
        if match is None or match.group("name") != path.name or _pid_alive(int(match.group("pid"))):
            continue
        if old is not None and not path.exists():
            with contextlib.suppress(OSError):
                os.replace(p, path)  # the kill came between "old aside" and "new in": put it back
                continue
        _remove(p)


@contextlib.contextmanager
def output_lock(path: str | Path) -> Iterator[None]:
    """Hold an exclusive advisory lock for writing ``path`` (``.<name>.lock`` beside it).

    Raises a one-line error at once (naming the holder's pid, which the lock file records) when
    another run holds it. The lock file is removed on exit; one left by a killed run names a
    process that is gone and holds no lock (the kernel released it): the next run takes it over
    and removes it.
    Missing folders above ``path`` are created (outputs may name new folders) and removed again
    on exit if the run left them empty.
    """
    import fcntl

    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    created = _make_folders(folder, path)
    lock = folder / f".{path.name}.lock"
    try:
        with _locked(lock, path, fcntl):
            yield
    finally:
        for made in created:  # deepest first
            with contextlib.suppress(OSError):
                made.rmdir()  # only if empty


def _make_folders(folder: Path, path: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns those created, deepest first."""
    missing = []
    probe = folder
    while not probe.exists() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    with writing(path):
        folder.mkdir(parents=True, exist_ok=True)
    return missing


@contextlib.contextmanager
def _locked(lock: Path, path: Path, fcntl) -> Iterator[None]:
    while True:
        with writing(path):
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise FPMInputError(f"another fpminr run{holder} is writing this output right now; wait for it to "
                                "finish or choose another -o", path) from None
        try:  # the previous holder may have removed the file between our open and our lock
            same = os.path.samestat(os.fstat(fd), os.stat(lock))
        except OSError:
            same = False
        if same:
            break
        os.close(fd)
    _record_pid(fd)  # a lock file left by a killed run names a gone process: the next run takes it over
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()
        os.close(fd)


def _record_pid(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def _lock_holder(fd: int) -> str:
    """`` (pid N)`` of the run holding a lock, from the pid it recorded (empty when unknown)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return f" (pid {int(text)})" if text.isdigit() else ""
