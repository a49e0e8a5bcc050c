"""Export and deployment: a found network as a self-contained model folder, and prediction from it.

- ``export_model(training_dir, out_dir, formats)`` writes a training folder as a model folder (``model.onnx``, ``model.ts``/``model.pt2``, ``weights.pt``, ``model.json``,
  ``MODEL_CARD.md``); ``verify_model_folder(dir)`` checks it (checksums, schema).
- ``load_model(dir, backend="onnxruntime"|"torch", device="cpu"|"cuda")`` returns an ``ExportedModel``
  whose ``predictor()`` is the engine's inference pipeline over the exported network.

Names load on first use, so that asking whether a folder is a model folder does not import PyTorch.
"""

_WHERE = {"ExportedModel": "deploy", "load_model": "deploy", "write_dicom_seg": "deploy",
          "DEFAULT_FORMATS": "package", "FORMAT_FILES": "package", "SCHEMA_VERSION": "package",
          "export_model": "package", "is_model_folder": "package", "verify_model_folder": "package"}


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


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(f"engine.export.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'engine.export' has no attribute {name!r}")
