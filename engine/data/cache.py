"""The user's cache folder and the signatures that key what is stored in it.

Dataset folders are often read-only shares, so everything derived from them (the demo dataset,
fingerprints, preprocessed arrays) lives in ``$EMONAS_CACHE_DIR``, else ``$XDG_CACHE_HOME/emonas``,
else ``~/.cache/emonas``. An entry is keyed by each source file's size, modification time and
content hash, so a replaced file is never served stale.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

_HASHES: dict[tuple, str] = {}  # (path, size, mtime_ns, inode) -> content hash, for this process


def cache_root() -> Path:
    """The cache folder (created on first use)."""
    env = os.environ.get("EMONAS_CACHE_DIR")
    if env:
        root = Path(env)
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg) if xdg else Path.home() / ".cache") / "emonas"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        from engine.errors import DataError

        raise DataError(root, f"cannot create the cache folder ({exc.strerror or exc}); set EMONAS_CACHE_DIR") from None
    return root


def _file_hash(path: Path, st: os.stat_result) -> str:
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
    if key not in _HASHES:
        h = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def file_signature(path: str | os.PathLike) -> list:
    """[name, size, mtime_ns, content hash] of every file reading the image at ``path`` opens: the
    file itself, the data files of a detached header (MetaImage ``.mhd``, NRRD ``.nhdr``), every file
    of a DICOM folder. A changed data file therefore changes the signature of its header.
    """
    from engine.data.io import image_files

    path = Path(path)
    if path.is_dir():
        return [_one_signature(p) for p in image_files(path)]
    files = image_files(path)
    sig = _one_signature(files[0])
    for data in files[1:]:
        sig.append(_one_signature(data))
    return sig


def content_hashes(path: str | os.PathLike) -> list:
    """[name, content hash] of every file reading the image at ``path`` opens (no sizes, no times)."""
    from engine.data.io import image_files

    return [[s[0], s[3]] for s in (_one_signature(p) for p in image_files(path))]


def _one_signature(path: Path) -> list:
    try:
        st = path.stat()
        return [path.name, st.st_size, st.st_mtime_ns, _file_hash(path, st)]
    except OSError as exc:
        from engine.errors import DataError

        raise DataError(path, f"cannot read ({exc.strerror or exc})") from None


def digest(obj: Any, n: int = 16) -> str:
    """A short stable hash of JSON-able ``obj``."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def publish_dir(tmp: Path, final: Path) -> Path:
    """Move a finished temporary folder (:func:`engine.atomic.temp_dir_near`) into place atomically;
    another writer may have won the race."""
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, final)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)  # the same entry written by another process
    return final


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)
