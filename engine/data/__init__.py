"""Data layer: medical image I/O with geometry, dataset layouts, fingerprint and plan, cached
preprocessing and its inverse, dataset checks, and the built-in demo dataset.

Public API::

    open_dataset(path_or_"demo", skip_bad=False) -> Dataset
    Dataset.cases / .modalities / .labels / .num_classes / .layout / .root / .split(...) -> Split
    make_plan(dataset, memory_budget_bytes=None, overrides=None) -> Plan
    preprocess_dataset(dataset, plan, case_ids=None, cache_dir=None, progress=None) -> {id: PreprocessedCase}
    preprocess_images(images, plan) -> (array, properties);  restore_label(label, properties) -> array
    read_image(path) -> Image;  write_label(path, array, reference)
    check_dataset(path, skip_bad=False) -> report dict;  demo_dataset_path(), write_demo_dataset(out)
"""

from engine.data.cache import cache_root
from engine.data.check import check_dataset, format_report
from engine.data.dataset import Dataset, Split, open_dataset
from engine.data.demo import demo_dataset_path, write_demo_dataset
from engine.data.io import Image, ImageHeader, read_header, read_image, read_label, write_image, write_label
from engine.data.layouts import IGNORE_LABEL, Case, FileProblem, detect_layout, split_ignore
from engine.data.plan import SCHEMA_VERSION, Plan, dataset_fingerprint, make_plan
from engine.data.preprocess import (
    PreprocessedCase,
    preprocess_dataset,
    preprocess_images,
    preprocess_label,
    restore_label,
)

__all__ = [
    "IGNORE_LABEL",
    "Case",
    "Dataset",
    "Image",
    "ImageHeader",
    "Plan",
    "PreprocessedCase",
    "FileProblem",
    "SCHEMA_VERSION",
    "Split",
    "cache_root",
    "check_dataset",
    "dataset_fingerprint",
    "demo_dataset_path",
    "detect_layout",
    "format_report",
    "make_plan",
    "open_dataset",
    "split_ignore",
    "preprocess_dataset",
    "preprocess_images",
    "preprocess_label",
    "read_header",
    "read_image",
    "read_label",
    "restore_label",
    "write_demo_dataset",
    "write_image",
    "write_label",
]
