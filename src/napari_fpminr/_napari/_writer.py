"""npe2 writer: File > Save Selected Layer(s) on a model layer writes the model as ``.fpminr``.

Only layers created from a model (they carry it in ``metadata['fpminr_model']``) can be saved
this way; the file holds the continuous representation (safetensors + JSON metadata, written
atomically by ``io.model_file.save_model``), not the decoded pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari.utils.notifications import show_error

from ._layers import MODEL_KEY


def write_model(path: str, data: Any, meta: dict[str, Any]) -> list[str]:
    """Save the model behind a model layer; returns ``[path]`` or ``[]`` with a notification."""
    model = (meta.get("metadata") or {}).get(MODEL_KEY)
    if model is None:
        show_error(f"{meta.get('name', 'this layer')} is not an FPM-INR model layer: "
                   "only the amplitude/phase layers of a model can be saved as .fpminr")
        return []
    from ..io.model_file import save_model

    out = Path(path)
    if out.suffix.lower() != ".fpminr":
        out = out.with_name(out.name + ".fpminr")
    saved = save_model(model, out)
    return [str(saved if saved is not None else out)]
