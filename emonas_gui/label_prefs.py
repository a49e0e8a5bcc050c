"""Label colours and visibility chosen by the user, remembered per dataset.

``LabelPrefs(settings, key)`` holds ``colours`` ({value: (r, g, b)}) and ``hidden`` (label values the
user hid) and writes them to ``settings`` under ``key`` on every change; ``key`` None keeps them in
memory only (scans opened without a dataset). ``dataset_key(path)`` is the key of a dataset opened
from ``path`` (a folder or ``"demo"``): a digest of its resolved path, so reopening the same folder
finds the same choices and another dataset starts from the default colours.

Stored as versioned JSON text: ``{"version": 1, "dataset": path, "colours": {"1": [r, g, b]},
"hidden": [2]}``; a record of another version, or unreadable, is ignored (defaults).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

VERSION = 1
GROUP = "labels"


def dataset_ident(path) -> str:
    """What identifies a dataset opened from ``path``: ``"demo"`` or its resolved folder."""
    if str(path) == "demo":
        return "demo"
    try:
        return str(Path(path).expanduser().resolve())
    except OSError:
        return str(Path(path).expanduser().absolute())


def dataset_key(path) -> str | None:
    """The settings key of a dataset's label choices (None for no dataset)."""
    if path is None or str(path) == "":
        return None
    return f"{GROUP}/{hashlib.sha1(dataset_ident(path).encode('utf-8')).hexdigest()[:20]}"


class LabelPrefs:
    """The user's label colours and hidden labels for one dataset (see the module docstring)."""

    def __init__(self, settings, key: str | None, ident: str | None = None):
        self.settings = settings
        self.key = key
        self.ident = ident
        self.colours: dict[int, tuple[int, int, int]] = {}
        self.hidden: set[int] = set()
        if key is not None:
            self._load()

    @classmethod
    def for_dataset(cls, settings, path) -> "LabelPrefs":
        """The choices remembered for the dataset opened from ``path`` (None: in memory only)."""
        key = dataset_key(path)
        return cls(settings, key, None if key is None else dataset_ident(path))

    def _load(self) -> None:
        raw = self.settings.value(self.key)
        if not raw:
            return
        try:
            doc = json.loads(str(raw))
            if not isinstance(doc, dict) or doc.get("version") != VERSION:
                return
            self.colours = {int(v): tuple(int(c) for c in rgb[:3]) for v, rgb in (doc.get("colours") or {}).items()}
            self.hidden = {int(v) for v in doc.get("hidden") or []}
        except (ValueError, TypeError, AttributeError):
            log.warning("label colours of %s are unreadable: the defaults are used", self.ident)
            self.colours, self.hidden = {}, set()

    def save(self) -> None:
        """Write the choices (nothing for a dataset-less set)."""
        if self.key is None:
            return
        doc = {"version": VERSION, "dataset": self.ident,
               "colours": {str(v): list(c) for v, c in sorted(self.colours.items())}, "hidden": sorted(self.hidden)}
        self.settings.setValue(self.key, json.dumps(doc))

    def set_colour(self, value: int, colour) -> None:
        self.colours[int(value)] = tuple(int(c) for c in colour[:3])
        self.save()

    def set_visible(self, value: int, visible: bool) -> None:
        (self.hidden.discard if visible else self.hidden.add)(int(value))
        self.save()

    def apply(self, names_colours: dict) -> dict:
        """``{value: (name, colour)}`` with the chosen colours in place of the defaults."""
        return {v: (name, self.colours.get(int(v), colour)) for v, (name, colour) in names_colours.items()}
