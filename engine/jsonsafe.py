"""Plain JSON data from what the engine computes: the one sanitiser for results, events and state."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def jsonable(obj: Any) -> Any:
    """A JSON-safe copy of ``obj``: mappings with text keys, tuples as lists, paths as text, numpy
    arrays as (nested) lists, numpy and torch scalars as Python numbers, NaN and infinity as null.

    ``json.dumps(jsonable(x), allow_nan=False)`` then never fails on what the engine produces.
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if getattr(obj, "ndim", 0) and callable(getattr(obj, "tolist", None)):  # arrays
        return jsonable(obj.tolist())
    if callable(getattr(obj, "item", None)):  # numpy scalars, 0-d arrays
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
