"""What the app uses to show a case, from the engine: RAS reorientation, integer label maps, image files."""

from __future__ import annotations

import numpy as np
import pytest

from engine.data.io import is_image_file
from engine.data.validate import integer_labels, label_values_present, to_ras
from engine.errors import DataError


def test_to_ras_flips_and_reorders_axes_and_their_spacing():
    lps = np.diag([-0.8, -0.9, 2.5, 1.0])
    arr = np.arange(4 * 5 * 3, dtype=np.float32).reshape(4, 5, 3)
    out, spacing = to_ras(arr, lps)
    assert spacing == (0.8, 0.9, 2.5)
    np.testing.assert_array_equal(out, arr[::-1, ::-1, :])
    # channels first: each channel the same way
    both, spacing4 = to_ras(np.stack([arr, -arr]), lps)
    np.testing.assert_array_equal(both[1], -out)
    assert spacing4 == spacing
    # axes swapped on disk (voxel axis 0 runs along S by 1 mm, axis 2 along R by 2 mm): back to R, A, S
    swapped = np.array([[0, 0, 2.0, 0], [0, 1.5, 0, 0], [1.0, 0, 0, 0], [0, 0, 0, 1]])
    out, spacing = to_ras(arr, swapped)
    assert out.shape == (3, 5, 4) and spacing == (2.0, 1.5, 1.0)
    assert out.flags.c_contiguous


def test_integer_labels_keep_small_maps_small_and_refuse_non_integers(tmp_path):
    assert integer_labels(np.array([[0.0, 2.0]]), "l.nii").dtype == np.uint8
    assert integer_labels(np.array([0, 300], np.int64), "l.nii").dtype == np.int32
    assert integer_labels(np.zeros(0, np.float32), "l.nii").dtype == np.uint8
    for bad, words in ((np.array([0.0, 1.5]), "non-integer label values"),
                       (np.array([0.0, np.nan]), "NaN or infinite"),
                       (np.array(["a"]), "not integer")):
        with pytest.raises(DataError, match=words) as info:
            integer_labels(bad, tmp_path / "lab.nii.gz")
        assert str(tmp_path / "lab.nii.gz") in str(info.value)


def test_label_values_present_and_image_files():
    assert label_values_present(np.array([0, 3, 3, 1], np.uint8)) == [1, 3]
    assert label_values_present(np.array([0, 1000, 2], np.int32)) == [2, 1000]
    assert label_values_present(np.zeros(4, np.uint8)) == []
    assert all(is_image_file(p) for p in ("a.nii", "b.NII.GZ", "c.mha", "d.mhd", "e.nrrd", "f.nhdr"))
    assert not any(is_image_file(p) for p in ("a.txt", "b.nii.bak", "folder"))
