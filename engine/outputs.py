"""Where a command may write: the one rule every writing command follows, and atomic writes.

A command never writes over what it reads. :func:`check_output` refuses an output path that *is* a
source of the command (an input scan or one of its data files, a dataset, a run, a training or model
folder), that *contains* one, or that lies *inside* a source folder, with or without ``--force``.
Paths are resolved with symlinks followed and compared by file identity (device and inode), so a
symlinked or hard-linked output, ``..`` in a path, or a second mount of the same folder cannot get
around the rule. :func:`check_distinct_names` refuses, before any work, inputs that would map to one
output name.

Every output is written under a temporary name next to its destination and moved into place with
``os.replace`` (:mod:`engine.atomic`), so a crash never leaves half a file under the final name.
What ``emonas predict`` writes is checked by :func:`engine.infer.folder.check_prediction_outputs`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from engine.errors import ConfigError

__all__ = ["Source", "check_output", "check_distinct_names", "check_training_out", "image_sources", "dataset_sources",
           "run_sources"]


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
