"""Atomic writes: every output is built under a temporary name next to its destination and moved into
place with ``os.replace``, so a crash never leaves half a file under the final name.

Where a command may write at all is :mod:`engine.outputs`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

from engine.errors import ConfigError

__all__ = ["atomic_file", "publish_files", "replace_dir", "temp_dir_near", "umask"]


def temp_dir_near(final: Path) -> Path:
    """A fresh private folder on the same file system as ``final``, for building outputs to move in."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp.", dir=final.parent))


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """``with atomic_file(p) as tmp:`` write ``tmp`` (same suffix as ``p``); it replaces ``p`` on success.

    On any failure the temporary file is removed and ``p`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _new_temp_file(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def _new_temp_file(path: Path) -> Path:
    """Create an empty file under a fresh name next to ``path`` and return it.

    Unlike ``tempfile.mkstemp`` (always mode 0600), the file gets the mode any new file gets (0666 less
    the umask), so what replaces ``path`` is as readable as the label maps written beside it.
    """
    suffix = ".tmp" + "".join(path.suffixes[-2:])
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name next to {path}")


def publish_files(tmp_dir: Path, out_dir: Path, last: Sequence[str] = ()) -> list[Path]:
    """Move each file of ``tmp_dir`` into ``out_dir`` with ``os.replace`` (the names in ``last``, such
    as a header or an index file, after the others) and remove ``tmp_dir``; returns the final paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = sorted(p.name for p in tmp_dir.iterdir())
    order = [n for n in names if n not in last] + [n for n in last if n in names]
    moved = []
    try:
        for n in order:
            os.replace(tmp_dir / n, out_dir / n)
            moved.append(out_dir / n)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return moved


def replace_dir(tmp: Path, final: Path, *, overwrite: bool = False) -> Path:
    """Move the finished folder ``tmp`` to ``final``, with the mode any new folder gets (0777 less the
    umask). An existing empty ``final`` is replaced; a non-empty one only with ``overwrite`` (moved aside
    first and removed once ``tmp`` is in place)."""
    final = Path(final)
    aside = None
    if final.is_symlink() or (final.exists() and not final.is_dir()):
        if not overwrite:
            raise ConfigError(f"{final}: already exists and is not a folder")
        final.unlink()
    elif final.is_dir() and any(final.iterdir()):
        if not overwrite:
            raise ConfigError(f"{final}: already exists and is not empty")
        aside = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=final.parent))
        os.replace(final, aside / final.name)
    try:
        os.chmod(tmp, 0o777 & ~umask())  # mkdtemp makes folders private; an output is as shared as any new folder
        os.replace(tmp, final)
    except BaseException:
        if aside is not None:
            os.replace(aside / final.name, final)
        raise
    finally:
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    return final
