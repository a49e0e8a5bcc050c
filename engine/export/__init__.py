"""Export and deployment: a found network as a self-contained model folder, and prediction from it.

- ``export_model(training_dir, out_dir, formats)`` writes a training folder as a model folder (``model.onnx``, ``model.ts``/``model.pt2``, ``weights.pt``, ``model.json``,
  ``MODEL_CARD.md``); ``verify_model_folder(dir)`` checks it (checksums, schema).
- ``load_model(dir, backend="onnxruntime"|"torch", device="cpu"|"cuda")`` returns an ``ExportedModel``
  whose ``predictor()`` is the engine's inference pipeline over the exported network.
"""

from engine.export.deploy import ExportedModel, load_model, write_dicom_seg
from engine.export.package import (
    DEFAULT_FORMATS,
    FORMAT_FILES,
    SCHEMA_VERSION,
    export_model,
    is_model_folder,
    verify_model_folder,
)

__all__ = [
    "DEFAULT_FORMATS",
    "FORMAT_FILES",
    "SCHEMA_VERSION",
    "ExportedModel",
    "export_model",
    "is_model_folder",
    "load_model",
    "verify_model_folder",
    "write_dicom_seg",
]
