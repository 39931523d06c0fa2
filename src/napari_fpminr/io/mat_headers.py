"""Names, shapes and classes of a MATLAB level-5 file's variables, without decoding their data.

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
