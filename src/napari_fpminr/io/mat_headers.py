"""MATLAB level-5 files: variable headers without decoding data, and numeric arrays decoded safely.

``scipy.io.whosmat`` decompresses every compressed variable in full to list it, so a 3 MB file
can cost gigabytes before anything checks its size. Here only the first few hundred bytes of
each ``miCOMPRESSED`` element are inflated: enough for the ``miMATRIX`` header (array flags,
dimensions, name), which is all the readers need to decide whether to load a variable.

Layout (MATLAB "MAT-File Format", level 5): a 128-byte header (text, version, endian indicator
``IM``/``MI``), then data elements, each an 8-byte tag ``(type, nbytes)`` followed by the data,
padded to 8 bytes except for ``miCOMPRESSED`` (15). A ``miMATRIX`` (14) starts with the sub-
elements array flags (``miUINT32``, class in the low byte, complex flag 0x0800, logical 0x0200), dimensions
(``miINT32``) and name (``miINT8``); small sub-elements may pack type and size into one word.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MI_MATRIX, MI_COMPRESSED = 14, 15
#: MATLAB array classes -> (name, bytes per element); cell/struct/object/sparse have no fixed size
CLASSES = {1: ("cell", 8), 2: ("struct", 8), 3: ("object", 8), 4: ("char", 2), 5: ("sparse", 8),
           6: ("double", 8), 7: ("single", 4), 8: ("int8", 1), 9: ("uint8", 1), 10: ("int16", 2),
           11: ("uint16", 2), 12: ("int32", 4), 13: ("uint32", 4), 14: ("int64", 8), 15: ("uint64", 8),
           16: ("function", 8), 17: ("opaque", 8)}
_HEADER_BYTES = 1024  # inflated per compressed element: tag + flags + dims (<= 32 axes) + name
_READ = 1 << 16


@dataclass(frozen=True)
class MatVariable:
    name: str
    shape: tuple[int, ...]
    class_name: str
    complex: bool
    logical: bool = False

    @property
    def nbytes(self) -> int:
        """Bytes the variable occupies once decoded (declared, not checked against the data)."""
        itemsize = dict(CLASSES.values()).get(self.class_name, 8) * (2 if self.complex else 1)
        return int(np.prod(self.shape, dtype=np.float64)) * itemsize


def _inflate_head(fh, nbytes: int) -> bytes:
    """The first ``_HEADER_BYTES`` of a compressed element of ``nbytes`` compressed bytes."""
    z = zlib.decompressobj()
    out = b""
    left = nbytes
    while left > 0 and len(out) < _HEADER_BYTES:
        chunk = fh.read(min(_READ, left))
        if not chunk:
            break
        left -= len(chunk)
        out += z.decompress(chunk, _HEADER_BYTES - len(out))
        while z.unconsumed_tail and len(out) < _HEADER_BYTES:
            out += z.decompress(z.unconsumed_tail, _HEADER_BYTES - len(out))
        if z.eof:
            break
    return out


def _subelement(buf: bytes, pos: int, order: str) -> tuple[int, bytes, int]:
    """``(type, data, next position)`` of the sub-element at ``pos`` (small format included)."""
    if pos + 8 > len(buf):
        raise ValueError("matrix header cut short")
    word, second = np.frombuffer(buf[pos:pos + 8], dtype=f"{order}u4")
    if word >> 16:  # small data element: type in the low half, size in the high half
        size, dtype = int(word >> 16), int(word & 0xFFFF)
        if size > 4:
            raise ValueError("bad small data element")
        return dtype, buf[pos + 4:pos + 4 + size], pos + 8
    dtype, size = int(word), int(second)
    end = pos + 8 + size
    if end > len(buf):
        raise ValueError("matrix header cut short")
    return dtype, buf[pos + 8:end], end + (-size) % 8


def _parse_matrix(buf: bytes, order: str) -> MatVariable:
    """Parse the header of a ``miMATRIX`` element (``buf`` starts at its tag)."""
    if len(buf) < 8:
        raise ValueError("matrix header cut short")
    dtype = int(np.frombuffer(buf[:4], f"{order}u4")[0])
    if dtype != MI_MATRIX:
        raise ValueError(f"element type {dtype} is not a matrix")
    _, flags, pos = _subelement(buf, 8, order)
    if len(flags) < 4:
        raise ValueError("bad array flags")
    word = int(np.frombuffer(flags[:4], f"{order}u4")[0])
    cls = word & 0xFF
    if cls not in CLASSES:
        raise ValueError(f"unknown array class {cls}")
    _, dims, pos = _subelement(buf, pos, order)
    if len(dims) % 4 or not dims:
        raise ValueError("bad dimensions")
    shape = tuple(int(d) for d in np.frombuffer(dims, f"{order}i4"))
    if any(d < 0 for d in shape):
        raise ValueError("negative dimension")
    _, name, _ = _subelement(buf, pos, order)
    return MatVariable(name.decode("latin-1"), shape, CLASSES[cls][0], bool(word & 0x0800), bool(word & 0x0200))


def mat_v5_variables(path: Path) -> list[MatVariable]:
    """Every top-level variable's header; ``ValueError`` for a truncated or malformed file."""
    path = Path(path)
    size = path.stat().st_size
    out = []
    with open(path, "rb") as fh:
        head = fh.read(128)
        if len(head) < 128:
            raise ValueError("truncated inside the 128-byte header")
        order = {b"IM": "<", b"MI": ">"}.get(head[126:128])
        if order is None:
            raise ValueError("bad endian indicator")
        offset = 128
        while offset < size:
            fh.seek(offset)
            tag = fh.read(8)
            if len(tag) < 8:
                raise ValueError("truncated element tag")
            dtype, nbytes = (int(v) for v in np.frombuffer(tag, dtype=f"{order}u4"))
            if dtype >> 16:
                raise ValueError("small data element at top level")
            if offset + 8 + nbytes > size:
                raise ValueError("truncated: an element runs past the end of the file")
            if dtype == MI_COMPRESSED:
                out.append(_parse_matrix(_inflate_head(fh, nbytes), order))
                offset += 8 + nbytes
            elif dtype == MI_MATRIX:
                out.append(_parse_matrix(tag + fh.read(min(nbytes, _HEADER_BYTES)), order))
                offset += 8 + nbytes + (-nbytes) % 8
            else:
                offset += 8 + nbytes + (-nbytes) % 8
    return out


# ---- numeric arrays, decoded here rather than by scipy ---------------------------------------
# scipy's compiled level-5 decoder trusts the headers: a flipped "complex" flag or a wrong byte
# count makes it read past its buffer and crash the interpreter (found by tests/io/test_fuzz_readers).
# The readers need numeric arrays only, so they are decoded here with every size checked.
_MI_TYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
_NUMERIC = {"double", "single", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64"}


def _numeric_part(buf: bytes, pos: int, order: str, n: int, what: str) -> tuple[np.ndarray, int]:
    dtype, data, pos = _subelement(buf, pos, order)
    if dtype not in _MI_TYPES:
        raise ValueError(f"{what}: unsupported data type {dtype}")
    dt = np.dtype(_MI_TYPES[dtype]).newbyteorder(order)
    if len(data) != n * dt.itemsize:
        raise ValueError(f"{what}: {len(data)} bytes of data for {n} values of {dt.itemsize} bytes")
    return np.frombuffer(data, dtype=dt), pos


def decode_matrix(buf: bytes, order: str) -> tuple[str, np.ndarray]:
    """Decode a whole ``miMATRIX`` element of a numeric class into ``(name, array)`` (MATLAB axes)."""
    var = _parse_matrix(buf, order)
    if var.class_name not in _NUMERIC:
        raise ValueError(f"'{var.name}' is a MATLAB {var.class_name}, not a numeric array")
    pos = 8
    for _ in range(3):  # flags, dims, name
        _, _, pos = _subelement(buf, pos, order)
    n = int(np.prod(var.shape, dtype=np.int64))
    real, pos = _numeric_part(buf, pos, order, n, var.name)
    arr = real
    if var.complex:
        imag, _ = _numeric_part(buf, pos, order, n, var.name)
        arr = real.astype(np.result_type(real.dtype, np.float32)) + 1j * imag
    if var.logical:
        arr = arr != 0
    return var.name, np.asarray(arr).reshape(var.shape, order="F")


def read_mat_v5(path: Path, names) -> dict[str, np.ndarray]:
    """The named numeric variables of a level-5 file (others are skipped without decoding).

    Call after checking the declared sizes (:func:`mat_v5_variables`): a compressed element is
    inflated only up to the size its header declares, never further.
    """
    names = set(names)
    out: dict[str, np.ndarray] = {}
    path = Path(path)
    size = path.stat().st_size
    variables = {v.name: v for v in mat_v5_variables(path)}
    with open(path, "rb") as fh:
        head = fh.read(128)
        order = {b"IM": "<", b"MI": ">"}[head[126:128]]
        offset = 128
        while offset < size:
            fh.seek(offset)
            dtype, nbytes = (int(v) for v in np.frombuffer(fh.read(8), dtype=f"{order}u4"))
            step = 8 + nbytes + (0 if dtype == MI_COMPRESSED else (-nbytes) % 8)
            if dtype in (MI_MATRIX, MI_COMPRESSED):
                head_buf = _inflate_head(fh, nbytes) if dtype == MI_COMPRESSED else \
                    np.array([dtype, nbytes], f"{order}u4").tobytes() + fh.read(min(nbytes, _HEADER_BYTES))
                name = _parse_matrix(head_buf, order).name
                if name in names and name not in out:
                    fh.seek(offset + 8)
                    if dtype == MI_COMPRESSED:
                        buf = _inflate_all(fh, nbytes, variables[name].nbytes + _HEADER_BYTES + 64)
                    else:
                        buf = np.array([dtype, nbytes], f"{order}u4").tobytes() + fh.read(nbytes)
                    key, arr = decode_matrix(buf, order)
                    out[key] = arr
            offset += step
    return out


def _inflate_all(fh, nbytes: int, limit: int) -> bytes:
    """Inflate a compressed element of ``nbytes``, refusing output beyond ``limit`` bytes."""
    z = zlib.decompressobj()
    parts, total, left = [], 0, nbytes
    while left > 0:
        chunk = fh.read(min(1 << 20, left))
        if not chunk:
            raise ValueError("compressed element cut short")
        left -= len(chunk)
        part = z.decompress(chunk, limit + 1 - total)
        total += len(part)
        parts.append(part)
        if total > limit or z.unconsumed_tail:
            raise ValueError("compressed element expands beyond its declared size")
        if z.eof:
            break
    return b"".join(parts)
