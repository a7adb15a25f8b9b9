"""What a training shows in TensorBoard: its curves as they come, its figures at the end.

Layer: train. The driver hands every ``history.jsonl`` record to ``Tracking`` as well; each
closed epoch becomes one event at step = epoch number (1-based) with the training and validation
loss, the validation AUC and accuracy and the updates so far. At the start the run's
hyper-parameters go to TensorBoard's HPARAMS tab; at the end, the final model's metrics, the
workers' throughput, the staleness and the exchange share (from ``metrics.json``) at the last
step. The files are in ``RUN_DIR/tensorboard/``, so ``tensorboard --logdir results/`` shows
every run and tune trial below ``results/`` side by side, each under its folder's path.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from gridtrain.eventfile import EventWriter
from gridtrain.rundir import RunDir
from gridtrain.train.settings import WorkerSpec

log = logging.getLogger(__name__)

_EPOCH_TAGS = {
    "train_loss": "loss/train",
    "val_loss": "loss/validation",
    "val_auc": "auc/validation",
    "val_accuracy": "accuracy/validation",
    "updates": "updates",
}
_FINAL_TAGS = {
    "loss": "final/loss",
    "auc": "final/auc",
    "accuracy": "final/accuracy",
    "wall_time_s": "final/wall_time_s",
    "updates": "final/updates",
    "refused": "final/refused_pushes",
    "macro_auc": "final/macro_auc",
    "log_loss": "final/log_loss",
}


def hyperparameters(spec: WorkerSpec) -> dict[str, object]:
    """The run's choices as TensorBoard's HPARAMS tab shows them: flat names, plain values."""
    s = spec.settings
    values: dict[str, object] = {
        "model": s.model,
        "task": str(spec.manifest.get("task", {}).get("kind", "binary")),
        "epochs": s.epochs,
        "batch_size": s.batch_size,
        "learning_rate": s.learning_rate,
        "workers": s.workers,
        "executor": s.executor,
        "seed": s.seed,
        "every": s.every,
        "wire": s.wire,
        "negative_weights": s.negative_weights,
    }
    values.update(_flat("algorithm", s.algorithm))
    values.update(_flat("model", s.model_params))
    return values


def _flat(prefix: str, params: Mapping[str, Any]) -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in params.items():
        name = f"{prefix}.{key}"
        if isinstance(value, Mapping):
            flat.update(_flat(name, value))
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        elif value is not None:
            flat[name] = str(value)  # a list (hidden: [64, 64]) reads as its text
    return flat


def final_scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The final model's figures from ``metrics.json``: metrics, throughput, staleness, the
    share of the workers' time in the exchange, and per class or per target where the task has
    them."""
    values = {
        tag: float(metrics[key])
        for key, tag in _FINAL_TAGS.items()
        if isinstance(metrics.get(key), int | float)
    }
    staleness = metrics.get("staleness")
    if isinstance(staleness, Mapping):
        for key in ("p50", "p90", "max"):
            if isinstance(staleness.get(key), int | float):
                values[f"staleness/{key}"] = float(staleness[key])
    workers = metrics.get("workers")
    if isinstance(workers, list):
        rates = [w.get("events_per_s") for w in workers if isinstance(w, Mapping)]
        values["throughput/events_per_s"] = float(
            sum(r for r in rates if isinstance(r, int | float))
        )
    for key in ("ps_time_fraction", "ps_wait_fraction", "ps_overlap_fraction"):
        if isinstance(metrics.get(key), int | float):  # the share of time in the exchange
            values[f"exchange/{key}"] = float(metrics[key])
    for name, value in (metrics.get("class_auc") or {}).items():
        if isinstance(value, int | float):
            values[f"final/auc/{name}"] = float(value)
    for name, figures in (metrics.get("targets") or {}).items():
        if isinstance(figures, Mapping):
            for key, value in figures.items():
                if isinstance(value, int | float):
                    values[f"final/{name}/{key}"] = float(value)
    return values


class Tracking:
    """The run's TensorBoard event file, fed by the driver. A write that fails (a full disk)
    is logged once and switches tracking off: the training goes on."""

    def __init__(self, files: RunDir, spec: WorkerSpec) -> None:
        self._writer: EventWriter | None = None
        self._last_step = 0
        try:
            self._writer = EventWriter(files.path / "tensorboard")
            self._writer.hparams(hyperparameters(spec), group=files.path.name)
        except OSError as err:
            self._off(err)

    def _off(self, err: OSError) -> None:
        log.warning("TensorBoard event file not written any more: %s", err)
        self.close()

    def __call__(self, record: Mapping[str, Any]) -> None:
        """A ``history.jsonl`` record: epochs become a step of curves, shards are skipped."""
        if self._writer is None or record.get("type") != "epoch":
            return
        step = int(record["epoch"]) + 1
        values = {
            tag: float(record[key])
            for key, tag in _EPOCH_TAGS.items()
            if isinstance(record.get(key), int | float)
        }
        try:
            self._writer.scalars(step, values, wall_time=record.get("unix_time"))
        except OSError as err:
            self._off(err)
        self._last_step = step

    def final(self, metrics: Mapping[str, Any]) -> None:
        """The final model's figures, at the last epoch's step; closes the file."""
        if self._writer is None:
            return
        step = int(metrics.get("epochs") or self._last_step or 1)
        try:
            self._writer.scalars(step, final_scalars(metrics))
            self._writer.close()
        except OSError as err:
            self._off(err)
        self._writer = None

    def close(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(OSError):
                self._writer.close()
            self._writer = None
