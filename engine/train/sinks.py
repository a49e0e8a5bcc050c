"""One metrics-logger interface, several sinks: a CSV file (a training folder's curves) and a callback
(the search's workers, the app).

A sink is any object with ``log(record: dict)`` and ``close()``; records are flat-ish plain data
(numbers, strings, one level of nested dicts, flattened as ``key_subkey`` by the CSV sink).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

log = logging.getLogger(__name__)


class MetricsSink(Protocol):
    def log(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """``{"val_dice": {"a": 1}}`` -> ``{"val_dice_a": 1}`` (one level)."""
    out: dict[str, Any] = {}
    for k, v in record.items():
        if isinstance(v, dict):
            for sk, sv in v.items():
                out[f"{k}_{sk}"] = sv
        else:
            out[k] = v
    return out


class CsvSink:
    """Appends one row per record to a CSV file; the columns are those of the first record."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._file = None
        self._writer: csv.DictWriter | None = None

    def log(self, record: dict[str, Any]) -> None:
        row = flatten(record)
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "w", newline="", encoding="utf-8")
            self._writer = csv.DictWriter(self._file, fieldnames=list(row), extrasaction="ignore")
            self._writer.writeheader()
        self._writer.writerow(row)
        self._file.flush()  # type: ignore[union-attr]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class CallbackSink:
    """Forwards each record to ``callback(record)`` (the GUI adapter, a search worker)."""

    def __init__(self, callback: Callable[[dict[str, Any]], None]):
        self.callback = callback

    def log(self, record: dict[str, Any]) -> None:
        self.callback(dict(record))

    def close(self) -> None:
        pass


class MetricsLogger:
    """Fans records out to every sink; a failing sink is logged once and then dropped."""

    def __init__(self, sinks: Iterable[MetricsSink] = ()):
        self.sinks = list(sinks)

    def add(self, sink: MetricsSink) -> None:
        self.sinks.append(sink)

    def log(self, record: dict[str, Any]) -> None:
        for sink in list(self.sinks):
            try:
                sink.log(record)
            except OSError as exc:
                log.warning("metrics sink %s failed and is dropped: %s", type(sink).__name__, exc)
                self.sinks.remove(sink)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
