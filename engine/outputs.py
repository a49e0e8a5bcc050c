"""Where a command may write: the one rule every writing command follows, and atomic writes.

A command never writes over what it reads. :func:`check_output` refuses an output path that *is* a
source of the command (an input scan or one of its data files, a dataset, a run, a training or model
folder), that *contains* one, or that lies *inside* a source folder, with or without ``--force``.
Paths are resolved with symlinks followed and compared by file identity (device and inode), so a
symlinked or hard-linked output, ``..`` in a path, or a second mount of the same folder cannot get
around the rule. :func:`check_distinct_names` refuses, before any work, inputs that would map to one
output name.

Every output is written under a temporary name next to its destination and moved into place with
``os.replace`` (:func:`atomic_file`, :func:`publish_files`, :func:`replace_dir`), so a crash never
leaves half a file under the final name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

from engine.errors import ConfigError

__all__ = ["Source", "check_output", "check_distinct_names", "check_training_out", "atomic_file", "publish_files",
           "replace_dir", "temp_dir_near", "image_sources", "dataset_sources",
           "run_sources", "check_prediction_outputs"]


class Source:
    """A path a command reads, and what it is (named in refusals): ``Source(path, "input scan")``."""

    def __init__(self, path: str | os.PathLike, what: str):
        self.path = Path(path)
        self.what = what

    def __repr__(self) -> str:
        return f"Source({str(self.path)!r}, {self.what!r})"


def image_sources(path: str | os.PathLike, what: str = "input scan") -> list[Source]:
    """The files reading an image opens (header, detached data files, a DICOM folder) as sources."""
    from engine.data.io import image_files, split_series

    folder = split_series(path)[0]  # a DICOM folder, or FOLDER#SERIES_UID: the whole folder
    files = [folder] if folder.is_dir() else image_files(path)
    return [Source(p, what) for p in files]


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()  # follows symlinks
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _chain(path: Path) -> list[tuple[Path, tuple[int, int]]]:
    """``path`` and each of its existing ancestors (resolved), with their identities, nearest first."""
    out = []
    p = Path(os.path.abspath(os.path.expanduser(path)))
    try:
        p = p.resolve()  # symlinks followed; a missing tail is kept as written
    except (OSError, RuntimeError):
        pass
    for q in (p, *p.parents):
        ident = _identity(q)
        if ident is not None:
            out.append((q, ident))
    return out


def check_output(out: str | os.PathLike, sources: Iterable[Source], *, option: str = "output") -> Path:
    """Refuse ``out`` if it is, contains, or lies inside any of ``sources``; returns ``Path(out)``.

    Raises :class:`~engine.errors.ConfigError` with one line naming the output, the source and what
    it is. ``option`` names the flag in the message (``-o``, ``--out``).
    """
    out = Path(out)
    out_chain = _chain(out)
    out_ids = {ident for _, ident in out_chain}
    out_self = _identity(out)  # None while the output does not exist yet
    for src in sources:
        src_chain = _chain(src.path)
        if not src_chain:
            continue
        src_self = _identity(src.path)
        if src_self is not None and out_self == src_self:
            raise ConfigError(f"{out}: {option} is the {src.what} {src.path}; a command never writes over what it reads")
        if out_self is not None and src_self is not None and out_self in {i for _, i in src_chain[1:]}:
            raise ConfigError(f"{out}: {option} contains the {src.what} {src.path}; choose a folder outside it")
        if src_self is not None and src.path.is_dir() and src_self in out_ids:
            raise ConfigError(f"{out}: {option} lies inside the {src.what} {src.path}; choose a folder outside it")
    return out


def run_sources(run_dir: str | os.PathLike, data_spec: dict | None = None) -> list[Source]:
    """A search run as sources: its folder and, from its data spec, its dataset folder."""
    out = [Source(run_dir, "run")]
    dataset = (data_spec or {}).get("dataset")
    if dataset and str(dataset) != "demo":
        out.append(Source(dataset, "dataset"))
    return out


def dataset_sources(dataset) -> list[Source]:
    """A dataset (an opened :class:`engine.data.Dataset`) as sources: its folder and every case file."""
    out = [Source(dataset.root, "dataset")]
    for case in getattr(dataset, "cases", []):
        for p in list(case.image_paths) + ([case.label_path] if case.label_path else []):
            out += image_sources(p, "dataset file")
    return out


def check_training_out(out: str | os.PathLike, genome: dict, dataset_name: str | None, force: bool) -> None:
    """``train --out``: a new or empty folder, or, with ``force``, a training folder of the same genome
    and dataset (training again replaces it; ``dataset_name`` None: any dataset). Anything else
    non-empty (an exported model folder, a run, someone's files) is refused with or without ``force``."""
    import json

    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return
    if not out.is_dir():
        raise ConfigError(f"{out}: --out exists and is not a folder")
    if not any(out.iterdir()):
        return
    try:
        doc = json.loads((out / "training.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        doc = None
    same = isinstance(doc, dict) and doc.get("genome") == genome and (
        dataset_name is None or doc.get("dataset") == dataset_name)
    if not same or any((out / n).exists() for n in ("model.json", "run.db")):
        raise ConfigError(f"{out}: --out is not empty and is not a training folder of this genome and dataset; "
                          "choose a new or empty folder")
    if not force:
        raise ConfigError(f"{out}: --out holds a training of this genome and dataset; add --force to replace it")


def check_distinct_names(outputs: Mapping[str, Sequence[str | os.PathLike]] | Sequence[tuple[str, str | os.PathLike]],
                         *, option: str = "output") -> None:
    """Refuse two inputs that map to one output name (``[(output name, input), ...]``), before any work."""
    pairs = list(outputs.items()) if isinstance(outputs, Mapping) else list(outputs)
    seen: dict[str, str] = {}
    for name, src in pairs:
        key = str(name)
        if key in seen and seen[key] != str(src):
            raise ConfigError(f"{seen[key]} and {src} would both be written as {key} in the {option} folder; "
                              "give them distinct names or separate runs")
        seen.setdefault(key, str(src))


def check_prediction_outputs(cases, out_dir, model=None, option: str = "-o", names=None,
                             probabilities: bool = False) -> None:
    """Before any work: ``out_dir`` and every file predicting ``cases`` (lists of scan paths) writes
    there must be neither a source (an input scan or its data files, the model folder) nor hold one,
    and no two cases may map to one output name (label map, colour tables, DICOM-SEG, and with
    ``probabilities`` the ``.npz``). ``names`` are the cases' output names (default: their first scan's)."""
    from engine.data.io import split_series
    from engine.export.labels import ITKSNAP_SUFFIX, SLICER_SUFFIX
    from engine.infer.folder import output_name

    sources = [Source(model, "model folder")] if model is not None else []
    for case in cases:
        for p in case:
            sources += image_sources(p)
    out_dir = Path(out_dir)
    check_output(out_dir, sources, option=option)
    outputs = []
    for i, case in enumerate(cases):
        stem = names[i] if names is not None else output_name(Path(case[0]))[: -len(".nii.gz")]
        suffixes = [".nii.gz", SLICER_SUFFIX, ITKSNAP_SUFFIX] + ([".npz"] if probabilities else [])
        outputs += [(stem + suffix, case[0]) for suffix in suffixes]
        if split_series(case[0])[0].is_dir():  # a DICOM series: its DICOM-SEG too
            outputs.append((f"{stem}_seg.dcm", case[0]))
    check_distinct_names(outputs, option=option)
    for name, _ in outputs:
        check_output(out_dir / name, sources, option=option)


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
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes[-2:]), dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


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
    """Move the finished folder ``tmp`` to ``final``. An existing empty ``final`` is replaced; a
    non-empty one only with ``overwrite`` (moved aside first and removed once ``tmp`` is in place)."""
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
        os.replace(tmp, final)
    except BaseException:
        if aside is not None:
            os.replace(aside / final.name, final)
        raise
    finally:
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    return final
