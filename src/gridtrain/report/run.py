"""Read a training run directory: ``metrics.json``, ``history.jsonl`` and ``roc.npz``.

Layer: report, reading. It turns the files the training engine writes into records and never
writes anything; a run killed mid-write is expected, so a truncated last line of the history and
missing optional files are tolerated (logged), and only a run directory with nothing to report on
is an error.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gridtrain.errors import GridtrainError
from gridtrain.rundir import RunDir

log = logging.getLogger(__name__)


class RunDirError(GridtrainError, FileNotFoundError):
    """A run directory is missing, or holds none of the files a report is made from."""


@dataclass(frozen=True)
class ShardRecord:
    """One training shard completed by a worker (``"type": "shard"`` in the history).

    What the worker reported may be absent (a worker that failed to report its loss, say): the
    loss and seconds are then NaN, events 0 and version None.
    """

    time: float
    epoch: int
    shard: str
    worker: str
    version: int | None
    loss: float
    events: int
    seconds: float
    exchange_seconds: float = 0.0  # of ``seconds``, spent exchanging with the parameter server


@dataclass(frozen=True)
class EpochRecord:
    """The end of an epoch and its validation (``"type": "epoch"`` in the history)."""

    time: float
    epoch: int
    version: int
    updates: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    val_auc: float


@dataclass(frozen=True)
class RocCurve:
    fpr: npt.NDArray[np.float64]
    tpr: npt.NDArray[np.float64]
    thresholds: npt.NDArray[np.float64]


@dataclass
class Run:
    """Everything a report is made from; the parts whose files were missing are empty or None."""

    path: Path
    metrics: dict[str, Any] | None
    shards: list[ShardRecord] = field(default_factory=list)
    epochs: list[EpochRecord] = field(default_factory=list)
    roc: RocCurve | None = None
    has_history: bool = False


def _number(value: Any) -> float:
    """A JSON number, or NaN for null (a metric that could not be computed)."""
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _shard(r: dict[str, Any]) -> ShardRecord:
    return ShardRecord(
        time=_number(r["time"]),
        epoch=_integer(r["epoch"]),
        shard=str(r["shard"]),
        worker=str(r["worker"]),
        version=None if r.get("version") is None else _integer(r["version"]),
        loss=_number(r.get("loss")),
        events=_integer(r.get("events", 0)),
        seconds=_number(r.get("seconds")),
        exchange_seconds=_number(r.get("exchange_seconds", 0.0)),
    )


def _epoch(r: dict[str, Any]) -> EpochRecord:
    return EpochRecord(
        time=_number(r["time"]),
        epoch=_integer(r["epoch"]),
        version=_integer(r["version"]),
        updates=_integer(r.get("updates", r["version"])),
        train_loss=_number(r.get("train_loss")),
        val_loss=_number(r.get("val_loss")),
        val_accuracy=_number(r.get("val_accuracy")),
        val_auc=_number(r.get("val_auc")),
    )


def read_history(path: Path) -> tuple[list[ShardRecord], list[EpochRecord]]:
    """The shard and epoch records of ``history.jsonl``, in file order.

    Unknown record types and extra keys are ignored (newer engines may add some); a record that
    cannot be read is skipped with a warning, except a truncated last line, which a run killed
    mid-write leaves and which is only noted.
    """
    shards: list[ShardRecord] = []
    epochs: list[EpochRecord] = []
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            kind = record.get("type") if isinstance(record, dict) else None
            if kind == "shard":
                shards.append(_shard(record))
            elif kind == "epoch":
                epochs.append(_epoch(record))
        except (ValueError, KeyError, TypeError) as err:
            if number - 1 == last and isinstance(err, json.JSONDecodeError):
                log.info("%s:%d: ignoring a truncated last record", path, number)
            else:
                log.warning("%s:%d: skipping an unreadable record (%s)", path, number, err)
    return shards, epochs


def read_metrics(path: Path) -> dict[str, Any]:
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RunDirError(
            f"{path}: not valid JSON ({err}); the training engine writes it once at the end, so "
            "re-run 'gridtrain train --resume' on the run directory"
        ) from None
    if not isinstance(metrics, dict):
        raise RunDirError(f"{path}: expected a JSON object, found {type(metrics).__name__}")
    return metrics


def read_roc(path: Path) -> RocCurve:
    with np.load(path) as data:
        missing = {"fpr", "tpr"} - set(data.files)
        if missing:
            raise KeyError(f"no array {', '.join(sorted(missing))}")
        fpr = np.asarray(data["fpr"], dtype=np.float64)
        tpr = np.asarray(data["tpr"], dtype=np.float64)
        thresholds = (
            np.asarray(data["thresholds"], dtype=np.float64)
            if "thresholds" in data.files
            else np.full(fpr.shape, np.nan)
        )
    if fpr.ndim != 1 or fpr.shape != tpr.shape or fpr.size < 2:
        raise ValueError(f"fpr and tpr have shapes {fpr.shape} and {tpr.shape}")
    return RocCurve(fpr, tpr, thresholds)


def load_run(run_dir: str | Path) -> Run:
    """Read a run directory; ``RunDirError`` when it is missing or has no metrics nor history."""
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirError(
            f"{path}: no such run directory; run 'gridtrain train' first, or give the run "
            "directory it printed"
        )
    files = RunDir(path)
    metrics_path, history_path, roc_path = files.metrics, files.history, files.roc
    if not metrics_path.is_file() and not history_path.is_file():
        raise RunDirError(
            f"{path}: neither {metrics_path.name} nor {history_path.name} is there; not a "
            "gridtrain run directory, or its training has not started: run 'gridtrain train' first"
        )
    run = Run(path=path, metrics=read_metrics(metrics_path) if metrics_path.is_file() else None)
    if history_path.is_file():
        run.shards, run.epochs = read_history(history_path)
        run.has_history = True
    if roc_path.is_file():
        try:
            run.roc = read_roc(roc_path)
        except (OSError, ValueError, KeyError) as err:
            log.warning("%s: unreadable, no ROC curve (%s)", roc_path, err)
    return run
