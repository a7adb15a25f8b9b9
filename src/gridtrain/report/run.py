"""Read a training run directory: ``metrics.json``, ``history.jsonl``, ``roc.npz`` and
``validation.npz`` (the validation events' ids and weights, labels and scores, or truth and
prediction).

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
from gridtrain.task import KINDS

VALIDATION_FILE = "validation.npz"

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
    exchange_seconds: float = 0.0  # of ``seconds``, training waited on the parameter server
    overlapped_seconds: float = 0.0  # exchanges travelled while training went on (train.overlap)


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


@dataclass(frozen=True)
class Validation:
    """The validation events as finalize saved them (``validation.npz``), physical units.

    Classifiers: ``labels`` (N,) class indices and ``scores`` (N, K) (binary: (N, 1)); a
    regression: ``truth`` (the targets as stored) and ``prediction`` (N, T). ``names`` are the
    classes or the targets; ``event_id`` (N, K) the events' ids, branches ``event_id_names``
    (None for a run written before they were kept).
    """

    weights: npt.NDArray[np.float64]
    names: tuple[str, ...]
    labels: npt.NDArray[np.int64] | None = None
    scores: npt.NDArray[np.float64] | None = None
    truth: npt.NDArray[np.float64] | None = None
    prediction: npt.NDArray[np.float64] | None = None
    event_id: npt.NDArray[np.uint64] | None = None
    event_id_names: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        if self.truth is not None:
            return "regression"
        return "multiclass" if self.scores is not None and self.scores.shape[1] > 2 else "binary"


@dataclass
class Run:
    """Everything a report is made from; the parts whose files were missing are empty or None."""

    path: Path
    metrics: dict[str, Any] | None
    shards: list[ShardRecord] = field(default_factory=list)
    epochs: list[EpochRecord] = field(default_factory=list)
    roc: RocCurve | None = None
    has_history: bool = False
    validation: Validation | None = None
    config: dict[str, Any] | None = None
    normalisation: dict[str, Any] | None = None  # the dataset's, from the worker spec's manifest

    @property
    def task(self) -> dict[str, Any]:
        """The run's task record (``Task.to_dict``): from metrics.json, else the config's
        ``task`` section; ``{}`` for a run from before tasks (binary)."""
        for record in ((self.metrics or {}).get("task"), (self.config or {}).get("task")):
            if isinstance(record, dict):
                return record
        return {}

    @property
    def kind(self) -> str:
        """``binary``, ``multiclass`` or ``regression``: as recorded, else as the arrays say."""
        for found in (self.task.get("kind"), (self.metrics or {}).get("kind")):
            if found in KINDS:
                return str(found)
        return self.validation.kind if self.validation is not None else "binary"

    @property
    def training_negative_weights(self) -> str | None:
        """What training did with negative weights (``train.negative_weights``), if recorded."""
        metrics = self.metrics or {}
        for value in (
            metrics.get("train_negative_weights"),
            (metrics.get("negative_weights") or {}).get("training")
            if isinstance(metrics.get("negative_weights"), dict)
            else metrics.get("negative_weights"),
            ((self.config or {}).get("train") or {}).get("negative_weights"),
        ):
            if isinstance(value, str):
                return value
        return None


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
        overlapped_seconds=_number(r.get("overlapped_seconds", 0.0)),
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


def read_validation(path: Path) -> Validation:
    """``validation.npz``: ``weights`` and ``names``, with ``labels`` and ``scores`` or
    ``truth`` and ``prediction``; ``KeyError``/``ValueError`` naming what does not fit."""
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    if "weights" not in arrays:
        raise KeyError("no array weights")
    weights = np.asarray(arrays["weights"], dtype=np.float64).reshape(-1)
    names = tuple(str(n) for n in np.asarray(arrays.get("names", ())).reshape(-1))
    n = weights.shape[0]

    def table(name: str) -> npt.NDArray[np.float64]:
        if name not in arrays:
            raise KeyError(f"no array {name}")
        a = np.asarray(arrays[name], dtype=np.float64)
        a = a[:, None] if a.ndim == 1 else a
        if a.ndim != 2 or a.shape[0] != n:
            raise ValueError(f"{name} has shape {a.shape}; expected ({n}, K) like weights")
        return a

    ids: dict[str, Any] = {}
    if "event_id" in arrays:
        event_id = np.asarray(arrays["event_id"], dtype=np.uint64)
        if event_id.ndim != 2 or event_id.shape[0] != n:
            raise ValueError(f"event_id has shape {event_id.shape}; expected ({n}, K)")
        id_names = tuple(str(x) for x in np.asarray(arrays.get("event_id_names", ())).reshape(-1))
        ids = {"event_id": event_id, "event_id_names": id_names}
    if "truth" in arrays or "prediction" in arrays:
        truth, prediction = table("truth"), table("prediction")
        if truth.shape != prediction.shape:
            raise ValueError(f"truth {truth.shape} and prediction {prediction.shape} differ")
        names = names or tuple(f"target {i}" for i in range(truth.shape[1]))
        return Validation(weights, names, truth=truth, prediction=prediction, **ids)
    scores = table("scores")
    if "labels" not in arrays:
        raise KeyError("no array labels")
    labels = np.asarray(arrays["labels"]).reshape(-1).astype(np.int64)
    if labels.shape[0] != n:
        raise ValueError(f"labels has {labels.shape[0]} events, weights {n}")
    if not names:
        names = (
            ("background", "signal")
            if scores.shape[1] == 1
            else tuple(f"class {i}" for i in range(scores.shape[1]))
        )
    return Validation(weights, names, labels=labels, scores=scores, **ids)


def read_config(path: Path) -> dict[str, Any] | None:
    """The run's ``config.yaml`` as a mapping (the task and the negative-weight choice), or None."""
    import yaml

    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        log.warning("%s: unreadable, the report will not show its choices (%s)", path, err)
        return None
    return config if isinstance(config, dict) else None


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
    validation_path = path / VALIDATION_FILE
    if validation_path.is_file():
        try:
            run.validation = read_validation(validation_path)
        except (OSError, ValueError, KeyError) as err:
            log.warning(
                "%s: unreadable, no plots of the validation events (%s)", validation_path, err
            )
    if files.config.is_file():
        run.config = read_config(files.config)
    if files.spec.is_file():
        run.normalisation = read_normalisation(files.spec)
    return run


def read_normalisation(path: Path) -> dict[str, Any] | None:
    """The dataset's ``weights.normalisation`` record (the yields) from the worker spec's
    manifest, or None when the dataset has none."""
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
        found = (spec.get("manifest") or {}).get("weights", {}).get("normalisation")
    except (OSError, ValueError, AttributeError) as err:
        log.warning("%s: unreadable, the report will not show the yields (%s)", path, err)
        return None
    return found if isinstance(found, dict) else None
