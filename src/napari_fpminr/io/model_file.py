"""``.fpminr`` model files: safetensors tensors + JSON metadata (never pickle).

Layout (safetensors): every network parameter under ``amplitude.<name>`` / ``phase.<name>``
(float32, except the two feature planes ``*.plane``, the bulk of the model, stored as float16:
:data:`~napari_fpminr.recon.inr.PLANE_STORAGE_DTYPE`), the pupil as ``optics.pupil`` float32 ``(2, h, w)`` (real, imaginary; only when
the optics carry one), and one metadata entry ``"fpminr"`` holding JSON:

    {"format": "fpminr-model", "format_version": 1, "optics": Optics.to_dict(),
     "lr_shape": [h, w], "architecture": INRArchitecture.to_dict(),
     "z_min_um": ..., "z_max_um": ..., "meta": {training summary, source_hash, ...}}

Loading parses the safetensors header and JSON only: no code is ever executed. Writes go to
a temporary sibling file renamed over the target (atomic). Every defect of a file (not
safetensors, truncated, foreign, wrong version, missing or mis-shaped tensor) raises
:class:`FPMInputError` naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import FPMInputError
from ..optics.system import Optics
from ..recon.inr import FPMINR, PLANE_STORAGE_DTYPE, INRArchitecture
from ..recon.model import Model
from .atomic import atomic_write

FORMAT = "fpminr-model"
FORMAT_VERSION = 1
PUPIL_KEY = "optics.pupil"
STACK_PLANES = 161  # the paper's ±20 µm at 0.25 µm, the reference for the compression ratio


def save_model(model: Model, path: str | Path) -> Path:
    """Write ``model`` to ``path`` (``.fpminr``) atomically; returns the path."""
    path = Path(path)
    tensors = {k: v.detach().to("cpu", PLANE_STORAGE_DTYPE if k.endswith(".plane") else torch.float32).contiguous()
               for k, v in model.net.state_dict().items()}
    overflow = [k for k, v in tensors.items() if not torch.isfinite(v).all()]
    if overflow:
        raise FPMInputError(f"cannot save: tensor {overflow[0]} is not finite at its storage precision", path)
    if model.optics.pupil is not None:
        p = np.asarray(model.optics.pupil)
        tensors[PUPIL_KEY] = torch.as_tensor(np.stack([p.real, p.imag]).astype(np.float32))
    header = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "optics": model.optics.to_dict(), "lr_shape": list(model.lr_shape),
        "architecture": model.arch.to_dict(), "z_min_um": model.z_min_um, "z_max_um": model.z_max_um,
        "meta": model.meta,
    }
    try:
        text = json.dumps(header, allow_nan=True, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise FPMInputError(f"model metadata is not JSON-serialisable: {exc}", path) from exc
    if not path.parent.exists():
        raise FPMInputError("output folder does not exist", path)
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata={"fpminr": text})
    return path


def _json_default(obj):
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON-serialisable")


def read_header(path: str | Path) -> dict:
    """The JSON metadata of a model file (validated format and version)."""
    path = Path(path)
    if not path.is_file():
        raise FPMInputError("model file not found", path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw_meta = (f.metadata() or {}).get("fpminr")
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise FPMInputError(f"not a readable .fpminr model file ({_first_line(exc)})", path) from None
    if raw_meta is None:
        raise FPMInputError("safetensors file without fpminr metadata: not an FPM-INR model", path)
    try:
        header = json.loads(raw_meta)
    except json.JSONDecodeError:
        raise FPMInputError("model metadata is not valid JSON", path) from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise FPMInputError("not an FPM-INR model (wrong format tag)", path)
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise FPMInputError(f"unsupported model format version {version!r} (this program reads "
                            f"version {FORMAT_VERSION}); re-train or update napari-fpminr", path)
    return header


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Model:
    """Read a ``.fpminr`` file into a :class:`Model` on ``device`` (safetensors + JSON only)."""
    path = Path(path)
    header = read_header(path)
    try:
        arch = INRArchitecture.from_dict(header["architecture"])
        lr_shape = tuple(int(v) for v in header["lr_shape"])
    except (KeyError, TypeError, ValueError) as exc:
        raise FPMInputError(f"bad model metadata: {_first_line(exc)}", path) from None
    net = FPMINR(arch)
    expected = net.state_dict()
    tensors = {}
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            keys = set(f.keys())
            missing = sorted(set(expected) - keys)
            if missing:
                raise FPMInputError(f"model file lacks tensor(s) {', '.join(missing[:4])}", path)
            for k in expected:
                tensors[k] = f.get_tensor(k)
            pupil_t = f.get_tensor(PUPIL_KEY) if PUPIL_KEY in keys else None
    except FPMInputError:
        raise
    except Exception as exc:  # truncated data section, bad offsets, ...
        raise FPMInputError(f"corrupt or truncated model file ({_first_line(exc)})", path) from None
    for k, t in tensors.items():
        if tuple(t.shape) != tuple(expected[k].shape):
            raise FPMInputError(f"tensor {k} has shape {tuple(t.shape)}, expected {tuple(expected[k].shape)}", path)
        if not torch.isfinite(t).all():
            raise FPMInputError(f"tensor {k} contains NaN or infinite values", path)
    net.load_state_dict(tensors)
    pupil = None
    if pupil_t is not None:
        if pupil_t.ndim != 3 or tuple(pupil_t.shape) != (2, *lr_shape):
            raise FPMInputError(f"pupil tensor has shape {tuple(pupil_t.shape)}, expected (2, {lr_shape[0]}, "
                                f"{lr_shape[1]})", path)
        p = pupil_t.numpy()
        pupil = (p[0] + 1j * p[1]).astype(np.complex64)
    try:
        optics = Optics.from_dict(header["optics"], pupil=pupil)
        model = Model(net, optics, lr_shape, header.get("meta") or {})
    except (KeyError, TypeError, ValueError) as exc:
        raise FPMInputError(f"inconsistent model metadata: {_first_line(exc)}", path) from None
    model.meta.setdefault("file", str(path))
    return model.to(device)


def model_info(path: str | Path) -> str:
    """Text for ``fpminr info MODEL``: optics, z range, parameters, size, compression ratio."""
    path = Path(path)
    model = load_model(path)
    size = path.stat().st_size
    H, W = model.hr_shape
    stack_bytes = STACK_PLANES * 2 * H * W * 4
    training = model.meta.get("training") or {}
    lines = [
        f"FPM-INR model {path.name} (format version {FORMAT_VERSION})",
        model.optics.summary(),
        model.summary(),
        f"file size      {size / 1e6:.3f} MB; a {STACK_PLANES}-plane float32 amplitude+phase stack of the "
        f"same grid is {stack_bytes / 1e6:.1f} MB: compression {stack_bytes / size:.1f}x",
    ]
    if training:
        lines.append(f"training       {training.get('epochs_done')} epochs, {training.get('steps')} steps, "
                     f"{training.get('elapsed_s')} s on {training.get('device')}, final loss "
                     f"{training.get('final_loss') if training.get('final_loss') is None else format(training['final_loss'], '.4g')}"
                     + (" (stopped early)" if training.get("stopped") else ""))
    if model.meta.get("source_hash"):
        lines.append(f"source data    sha256 {model.meta['source_hash'][:16]}…"
                     + (f" ({model.meta['source']})" if model.meta.get("source") else ""))
    return "\n".join(lines)
