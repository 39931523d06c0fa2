"""``.fpminr`` model files: safetensors tensors + JSON metadata (never pickle).

Layout (safetensors), format version 3: the representation's tensors, one metadata entry
``"fpminr"`` holding JSON, and the pupil as ``optics.pupil`` float32 ``(2, h, w)`` (real,
imaginary; only when the optics carry one):

    {"format": "fpminr-model", "format_version": 3, "representation": "lowrank" | "mlp",
     "optics": Optics.to_dict(), "lr_shape": [h, w], "architecture": <arch>.to_dict(),
     "z_min_um": ..., "z_max_um": ..., "meta": {training summary, source_hash, ...}}

* ``lowrank`` (:class:`~napari_fpminr.recon.lowrank.LowRankField`): with ``R_c`` the
  architecture's ``coarse_terms`` (the weakest terms of a compacted field), ``lowrank.coefficients``
  float16 ``(2, R - R_c, K)`` relative to each term's peak, ``lowrank.coefficients_logpolar`` uint8
  ``(2, R_c, K)`` (magnitude and phase codes of the last ``R_c`` terms; only when ``R_c > 0``),
  ``lowrank.coefficient_scale`` float32 ``(R,)``, ``lowrank.z_line`` float32 ``(2, n_z, R)``.
* ``mlp`` (:class:`~napari_fpminr.recon.inr.FPMINR`): every parameter under ``amplitude.<name>`` /
  ``phase.<name>``, float32 except the feature planes ``*.plane`` (float16).

Version 1 files (the MLP before the seeded pipeline: same tensors, no ``representation``) and
version 2 files (every low-rank term float16: no ``coarse_terms`` in the architecture) still load. Loading parses the safetensors header and JSON only: no code is ever executed. Before
anything is allocated, the architecture in the JSON is checked against the shapes and dtypes
of the stored tensors (read from the safetensors header), so a hostile header cannot make the
loader allocate more than the tensors it carries. Writes go to a temporary sibling file renamed
over the target (atomic). Every defect of a file (not safetensors, truncated, foreign, wrong
version, missing, mis-shaped or mis-typed tensor, inconsistent metadata) raises
:class:`FPMInputError` naming the file.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import FPMInputError
from ..optics.system import Optics
from ..recon.inr import FPMINR, INRArchitecture
from ..recon.lowrank import LowRankArchitecture, LowRankField, expected_aperture_bins
from ..recon.model import Model
from .atomic import atomic_write

FORMAT = "fpminr-model"
FORMAT_VERSION = 3
COLOUR_FORMAT = "fpminr-colour-model"  # napari_fpminr.colour.file: three channel models in one file
READABLE_VERSIONS = (1, 2, 3)
LOWRANK_PREFIX = "lowrank."
_DTYPE_NAMES = {torch.float16: "F16", torch.float32: "F32", torch.uint8: "U8"}
PUPIL_KEY = "optics.pupil"
STACK_PLANES = 161  # the paper's ±20 µm at 0.25 µm, the reference for the compression ratio


def save_model(model: Model, path: str | Path) -> Path:
    """Write ``model`` to ``path`` (``.fpminr``) atomically; returns the path."""
    path = Path(path)
    tensors = model_tensors(model, path)
    header = {"format": FORMAT, "format_version": FORMAT_VERSION, **model_header(model)}
    return write_tensor_file(tensors, header, path, "model")


def write_tensor_file(tensors: dict, header: dict, path: Path, what: str) -> Path:
    """``tensors`` and the JSON ``header`` as one safetensors file, written atomically (no pickle)."""
    try:
        text = json.dumps(header, allow_nan=True, default=_json_default)
    except (TypeError, ValueError) as exc:
        raise FPMInputError(f"{what} metadata is not JSON-serialisable: {exc}", path) from exc
    if not path.parent.exists():
        raise FPMInputError("output folder does not exist", path)
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata={"fpminr": text})
    return path


def model_tensors(model: Model, path: Path) -> dict[str, torch.Tensor]:
    """The tensors a file holds for ``model`` (keys as in a ``.fpminr`` file; refused when not finite)."""
    prefix = LOWRANK_PREFIX if model.representation == "lowrank" else ""
    tensors = {prefix + k: v for k, v in model.net.storage_tensors().items()}
    overflow = [k for k, v in tensors.items() if not torch.isfinite(v).all()]
    if overflow:
        raise FPMInputError(f"cannot save: tensor {overflow[0]} is not finite at its storage precision", path)
    if model.optics.pupil is not None:
        p = np.asarray(model.optics.pupil)
        tensors[PUPIL_KEY] = torch.as_tensor(np.stack([p.real, p.imag]).astype(np.float32))
    return tensors


def model_header(model: Model) -> dict:
    """The JSON facts of ``model`` (a ``.fpminr`` header without its format tag and version)."""
    return {"representation": model.representation, "optics": model.optics.to_dict(),
            "lr_shape": list(model.lr_shape), "architecture": model.arch.to_dict(),
            "z_min_um": model.z_min_um, "z_max_um": model.z_max_um, "meta": model.meta}


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
    except RecursionError:
        raise FPMInputError("model metadata is nested too deeply", path) from None
    if isinstance(header, dict) and header.get("format") == COLOUR_FORMAT:
        raise FPMInputError("a colour model (three channels): this command reads single-channel models", path)
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise FPMInputError("not an FPM-INR model (wrong format tag)", path)
    version = header.get("format_version")
    if version not in READABLE_VERSIONS:
        raise FPMInputError(f"unsupported model format version {version!r} (this program reads versions "
                            f"{', '.join(map(str, READABLE_VERSIONS))}); re-train or update napari-fpminr", path)
    if version == 1:
        header = dict(header, representation="mlp")
    arch = header.get("architecture")
    if version == 2 and isinstance(arch, dict) and arch.get("coarse_terms"):
        raise FPMInputError("format version 2 stores every low-rank term as float16, but the metadata names "
                            "log-polar terms (coarse_terms)", path)
    if header.get("representation") not in ("lowrank", "mlp"):
        raise FPMInputError(f"unknown representation {header.get('representation')!r} in model metadata", path)
    return header


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def load_model(path: str | Path, device: str | torch.device = "cpu") -> Model:
    """Read a ``.fpminr`` file into a :class:`Model` on ``device`` (safetensors + JSON only)."""
    path = Path(path)
    header = read_header(path)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            model = model_from_file(f, header, path)
    except FPMInputError:
        raise
    except Exception as exc:  # truncated data section, bad offsets, ...
        raise FPMInputError(f"corrupt or truncated model file ({_first_line(exc)})", path) from None
    model.meta.setdefault("file", str(path))
    return model.to(device)


def model_from_file(f, header: dict, path: Path, key_prefix: str = "") -> Model:
    """The :class:`Model` whose facts are ``header`` (:func:`model_header`) and whose tensors are
    those of the open safetensors file ``f`` under ``key_prefix``; every defect raises
    :class:`FPMInputError` naming ``path``."""
    kind = header.get("representation")
    if kind not in ("lowrank", "mlp"):
        raise FPMInputError(f"unknown representation {kind!r} in model metadata", path)
    try:
        arch_cls = LowRankArchitecture if kind == "lowrank" else INRArchitecture
        arch = arch_cls.from_dict(header["architecture"])
        lr_shape = tuple(int(v) for v in header["lr_shape"])
        optics = Optics.from_dict(header["optics"])
        if len(lr_shape) != 2 or (lr_shape[0] * optics.upsample, lr_shape[1] * optics.upsample) != arch.hr_shape:
            raise ValueError(f"hr grid {arch.hr_shape} is not the raw size {lr_shape} x upsample {optics.upsample}")
    except (KeyError, TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise FPMInputError(f"bad model metadata: {_first_line(exc)}", path) from None
    prefix = key_prefix + (LOWRANK_PREFIX if kind == "lowrank" else "")
    stored = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
    layout = _expected_layout(kind, arch, stored, prefix, path)
    _check_layout(stored, layout, path)
    tensors = {k[len(prefix):]: f.get_tensor(k) for k in layout}
    pupil_key = key_prefix + PUPIL_KEY
    pupil_t = f.get_tensor(pupil_key) if pupil_key in stored else None
    for k, t in tensors.items():
        if not torch.isfinite(t).all():
            raise FPMInputError(f"tensor {prefix}{k} contains NaN or infinite values", path)
    net = LowRankField(arch) if kind == "lowrank" else FPMINR(arch)
    if kind == "lowrank" and net.index.numel() != tensors["coefficients"].shape[-1]:
        raise FPMInputError(f"tensor {prefix}coefficients has {tensors['coefficients'].shape[-1]} coefficients; "
                            f"the architecture's aperture has {net.index.numel()}", path)
    net.load_storage_tensors(tensors)
    pupil = None
    if pupil_t is not None:
        if pupil_t.ndim != 3 or tuple(pupil_t.shape) != (2, *lr_shape) or pupil_t.dtype != torch.float32:
            raise FPMInputError(f"pupil tensor has shape {tuple(pupil_t.shape)} ({pupil_t.dtype}), expected "
                                f"(2, {lr_shape[0]}, {lr_shape[1]}) float32", path)
        if not torch.isfinite(pupil_t).all():
            raise FPMInputError("pupil tensor contains NaN or infinite values", path)
        p = pupil_t.numpy()
        pupil = (p[0] + 1j * p[1]).astype(np.complex64)
    meta = header.get("meta")
    try:
        return Model(net, optics.replace(pupil=pupil), lr_shape, meta if isinstance(meta, dict) else {})
    except (KeyError, TypeError, ValueError) as exc:
        raise FPMInputError(f"inconsistent model metadata: {_first_line(exc)}", path) from None


def _expected_layout(kind: str, arch, stored: dict, prefix: str, path: Path) -> dict:
    """Stored key -> (shape, dtype name) the architecture implies, computed without allocating."""
    if kind == "mlp":
        return {k: (shape, _DTYPE_NAMES[dt]) for k, (shape, dt) in FPMINR.layout_for(arch).items()}
    key = prefix + "coefficients"
    if key not in stored or len(stored[key][0]) != 3:
        raise FPMInputError(f"model file lacks tensor {key} (2, rank, coefficients)", path)
    n_coef = int(stored[key][0][2])
    expect = expected_aperture_bins(arch.hr_shape, arch.dx_hr_um, arch.aperture_cycles_per_um)
    # the disk's area estimate is within its perimeter in bins of the exact count
    slack = 8.0 * math.sqrt(max(expect, 1.0)) + 16.0
    if abs(n_coef - expect) > slack:
        raise FPMInputError(f"tensor {key} holds {n_coef} coefficients per term, but the architecture's "
                            f"aperture has about {expect:.0f}", path)
    return {prefix + k: (shape, _DTYPE_NAMES[dt]) for k, (shape, dt) in LowRankField.layout_for(arch, n_coef).items()}


def _check_layout(stored: dict, layout: dict, path: Path) -> None:
    missing = sorted(set(layout) - set(stored))
    if missing:
        raise FPMInputError(f"model file lacks tensor(s) {', '.join(missing[:4])}", path)
    for k, (shape, dtype) in layout.items():
        if stored[k][0] != tuple(shape):
            raise FPMInputError(f"tensor {k} has shape {stored[k][0]}, expected {tuple(shape)}", path)
        if stored[k][1] != dtype:
            raise FPMInputError(f"tensor {k} is {stored[k][1]}, expected {dtype}", path)


def model_info(path: str | Path) -> str:
    """Text for ``fpminr info MODEL``: optics, z range, representation, size, compression ratio.

    Odd but harmless metadata (a non-numeric loss, a non-string hash) is shown as it is, never
    an error: ``info`` accepts whatever ``render`` accepts.
    """
    path = Path(path)
    header = read_header(path)
    model = load_model(path)
    size = path.stat().st_size
    H, W = model.hr_shape
    stack_bytes = STACK_PLANES * 2 * H * W * 4
    training = model.meta.get("training")
    training = training if isinstance(training, dict) else {}
    lines = [
        f"FPM-INR model {path.name} (format version {header.get('format_version')}, {model.representation})",
        model.optics.summary(),
        model.summary(),
        f"file size      {size / 1e6:.3f} MB; a {STACK_PLANES}-plane float32 amplitude+phase stack of the "
        f"same grid is {stack_bytes / 1e6:.1f} MB: compression {stack_bytes / size:.1f}x",
    ]
    if training:
        how = training.get("init") or "random"
        work = (f"seeded pipeline ({training.get('seed_nodes')} seed planes)" if how == "seeded"
                else f"random init, {training.get('epochs_done')} epochs")
        lines.append(f"training       {work}, {training.get('steps')} steps, {training.get('elapsed_s')} s on "
                     f"{training.get('device')}, final loss {_fmt(training.get('final_loss'))}"
                     + (" (stopped early)" if training.get("stopped") else ""))
    source_hash = model.meta.get("source_hash")
    if source_hash:
        lines.append(f"source data    sha256 {str(source_hash)[:16]}…"
                     + (f" ({model.meta['source']})" if model.meta.get("source") else ""))
    return "\n".join(lines)


def _fmt(value) -> str:
    return format(value, ".4g") if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)
