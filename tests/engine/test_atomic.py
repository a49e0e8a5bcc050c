"""Outputs written atomically get the modes any new file or folder gets, not the private ones of tempfile."""

from __future__ import annotations

import contextlib
import os
import stat

import pytest

from engine.atomic import atomic_file, replace_dir, temp_dir_near, umask


MASKS = (0o022, 0o027, 0o077)


@contextlib.contextmanager
def _umask(mask: int):
    old = os.umask(mask)
    try:
        yield mask
    finally:
        os.umask(old)


@pytest.fixture(params=MASKS)
def mask(request):
    with _umask(request.param) as m:
        yield m


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_atomic_files_and_replaced_folders_follow_the_umask(tmp_path, mask):
    assert umask() == mask
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what any other writer of the same folder produces
    with atomic_file(tmp_path / "seg.dcm") as tmp:
        tmp.write_bytes(b"DICM")
    assert _mode(tmp_path / "seg.dcm") == _mode(plain) == 0o666 & ~mask
    folder = temp_dir_near(tmp_path / "model")
    (folder / "model.json").write_text("{}")
    replace_dir(folder, tmp_path / "model")
    (tmp_path / "other").mkdir()
    assert _mode(tmp_path / "model") == _mode(tmp_path / "other") == 0o777 & ~mask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "other", "plain.txt", "seg.dcm"]  # no temporaries


def test_a_failed_atomic_write_leaves_neither_file_nor_temporary(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_file(tmp_path / "probs.npz") as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_the_demo_dataset_a_user_writes_is_readable_by_their_group(tmp_path):
    from engine.data.demo import demo_dataset_path, write_demo_dataset

    demo_dataset_path()  # the cached copy is made first, under the usual umask
    for mask in MASKS:
        with _umask(mask):
            out = write_demo_dataset(tmp_path / f"demo{mask:o}")
        assert _mode(out) == 0o777 & ~mask  # was 0700 whatever the umask (the copy inside keeps the cache's modes)
