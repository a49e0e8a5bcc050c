"""Small generated dataset trees in every layout, written as real image files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engine.data.io import write_image

SHAPE = (14, 16, 12)


def affine_for(orientation: str = "RAS", spacing=(1.0, 1.0, 1.0), origin=(-7.0, -8.0, -6.0), oblique_deg: float = 0.0):
    """A voxel-to-RAS affine with the given axis codes, voxel size, origin and optional oblique tilt."""
    import nibabel as nib

    ornt = nib.orientations.axcodes2ornt(tuple(orientation))
    m = np.zeros((3, 3))
    for src, (dst, flip) in enumerate(ornt):
        m[int(dst), src] = flip * spacing[src]
    if oblique_deg:
        a = np.deg2rad(oblique_deg)
        rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
        b = np.deg2rad(oblique_deg / 2)
        rot = rot @ np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
        m = rot @ m
    aff = np.eye(4)
    aff[:3, :3] = m
    aff[:3, 3] = origin
    return aff


def make_volume(seed: int, shape=SHAPE, n_labels: int = 2, channels: int = 1):
    """A smooth image with ellipsoid structures and the matching label map (values 0..n_labels)."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(np.float32)
    c = np.array(shape, float)[:, None, None, None] / 2 + rng.uniform(-1, 1, (3, 1, 1, 1))
    r = np.sqrt((((grid - c) / (np.array(shape)[:, None, None, None] / 3.2)) ** 2).sum(0))
    label = np.zeros(shape, np.uint8)
    for k in range(n_labels, 0, -1):
        label[r < k / n_labels] = n_labels - k + 1
    image = np.stack([(100 + 50 * label + rng.normal(0, 5, shape)).astype(np.float32) for _ in range(channels)])
    return image, label


def write_case(img_path: Path, lab_path: Path | None, seed: int, affine=None, shape=SHAPE, n_labels=2, channels=1):
    affine = affine_for() if affine is None else affine
    image, label = make_volume(seed, shape, n_labels, channels)
    write_image(img_path, image, affine)
    if lab_path is not None:
        write_image(lab_path, label, affine)
    return image, label


def make_msd(root: Path, n: int = 5, channels: int = 1, n_labels: int = 2, shape=SHAPE, spacing=(1.0, 1.0, 1.0)) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    training = []
    for i in range(n):
        cid = f"case_{i:03d}"
        write_case(root / "imagesTr" / f"{cid}.nii.gz", root / "labelsTr" / f"{cid}.nii.gz", i,
                   affine_for(spacing=spacing), shape, n_labels, channels)
        training.append({"image": f"./imagesTr/{cid}.nii.gz", "label": f"./labelsTr/{cid}.nii.gz"})
    labels = {"0": "background", **{str(k): f"part {k}" for k in range(1, n_labels + 1)}}
    modality = {str(c): ["MRI", "ADC", "T2", "FLAIR"][c] for c in range(channels)}
    meta = {"name": "Task99_Test", "modality": modality, "labels": labels, "numTraining": n, "training": training}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def make_nnunet(root: Path, n: int = 4, channels: int = 2) -> Path:
    for i in range(n):
        cid = f"pro_{i:03d}"
        image, label = make_volume(i, channels=channels)
        for c in range(channels):
            write_image(root / "imagesTr" / f"{cid}_{c:04d}.nii.gz", image[c], affine_for())
        write_image(root / "labelsTr" / f"{cid}.nii.gz", label, affine_for())
    meta = {"channel_names": {"0": "T2", "1": "ADC"}, "labels": {"background": 0, "PZ": 1, "TZ": 2},
            "numTraining": n, "file_ending": ".nii.gz", "name": "Dataset099_Prostate"}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def make_acdc(root: Path, n_patients: int = 3) -> Path:
    for p in range(1, n_patients + 1):
        pid = f"patient{p:03d}"
        for f, seed in ((1, p * 10), (12, p * 10 + 1)):
            d = root / "training" / pid
            write_case(d / f"{pid}_frame{f:02d}.nii.gz", d / f"{pid}_frame{f:02d}_gt.nii.gz", seed,
                       affine_for(spacing=(1.5, 1.5, 5.0)), n_labels=3)
        write_image(root / "training" / pid / f"{pid}_4d.nii.gz", np.zeros(SHAPE + (2,), np.float32), affine_for())
    return root


def make_promise(root: Path, n: int = 3) -> Path:
    for i in range(n):
        write_case(root / f"Case{i:02d}.mhd", root / f"Case{i:02d}_segmentation.mhd", i,
                   affine_for("LPS", spacing=(0.6, 0.6, 3.6)), shape=(40, 40, 8), n_labels=1)
    return root


def make_plain(root: Path, n: int = 3, with_labels_json: bool = False) -> Path:
    for i in range(n):
        write_case(root / "images" / f"scan{i}.nii.gz", root / "labels" / f"scan{i}_seg.nii.gz", i)
    if with_labels_json:
        (root / "labels.json").write_text(json.dumps({"background": 0, "liver": 1, "tumour": 2}))
    return root


def write_dicom_series(folder: Path, depths=None, n: int = 8, gap: float = 2.5, series_uid: str | None = None,
                       prefix: str = "im") -> Path:
    """A real MR series from pydicom's MR_small slice, one file per entry of ``depths`` (mm along the
    slice normal; default ``n`` slices ``gap`` mm apart), new UIDs, files named out of slice order."""
    import copy

    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    src = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    folder.mkdir(parents=True, exist_ok=True)
    orient = np.array([float(v) for v in src.ImageOrientationPatient])
    normal = np.cross(orient[:3], orient[3:])
    pos0 = np.array([float(v) for v in src.ImagePositionPatient])
    depths = [k * gap for k in range(n)] if depths is None else list(depths)
    series = series_uid or generate_uid()
    base = src.pixel_array.astype(np.float64)
    for k, d in enumerate(depths):
        ds = copy.deepcopy(src)
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [f"{v:.4f}" for v in pos0 + d * normal]
        ds.SliceThickness = gap
        ds.PixelData = (base * (1 + 0.1 * k)).astype(src.pixel_array.dtype).tobytes()
        ds.save_as(folder / f"{prefix}{len(depths) - 1 - k:03d}.dcm")  # file order differs from slice order
    return folder
