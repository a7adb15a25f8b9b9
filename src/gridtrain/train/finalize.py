"""The outputs of a finished run: final model, validation metrics, ROC curve, metrics.json, plots.

Layer: train, outputs. Runs in the driver after the workers and the parameter server stopped:
builds the model, loads the best validated weights (``restore_best``) or the final center,
evaluates it on the validation shards (staged like a worker stages them) and writes every file
atomically. ``gridtrain report`` redraws the plots from these files without TensorFlow.

The task's metrics (``gridtrain.evaluation``; negative event weights counted as zero) go into
metrics.json with the ``task`` record and ``train_negative_weights``; ``validation.npz`` holds the
validation events in shard order: ``event_id`` (N, K) uint64 (the dataset's event-id branches,
``event_id_names``), ``weights`` (the event weights as converted), ``names`` (classes or
targets) and ``labels`` (N,) with ``scores`` (N, K) (binary: (N, 1)), or ``truth`` and
``prediction`` (N, T) in physical units. ``truth`` is the target exactly as the shard stores it
(float32), read beside the model's inputs, not the standardised training target turned back,
which moves a value near zero by the rounding of (y - mean) / std (1.49e-10 came back as
-4.48e-8). A binary run also writes ``roc.npz``.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gridtrain.data.manifest import Manifest
from gridtrain.data.reweight import applied_histograms
from gridtrain.data.shards import ShardReader
from gridtrain.evaluation import (
    multiclass_metrics,
    negative_weight_summary,
    regression_metrics,
    weighted_roc,
)
from gridtrain.files import atomic_file, atomic_path, write_text
from gridtrain.ps.checkpoint import read_checkpoint, read_initial_weights
from gridtrain.ps.metrics import staleness_summary
from gridtrain.report.run import VALIDATION_FILE, ShardRecord, read_history
from gridtrain.train.inputs import InputBuilder, ShardData, fold_rows
from gridtrain.train.replica import replica, stage_in
from gridtrain.train.settings import WorkerSpec
from gridtrain.train.targets import class_indices, unstandardise
from gridtrain.train.worker import Predictions, predict_shards

if TYPE_CHECKING:
    from gridtrain.rundir import RunDir
    from gridtrain.task import Task

log = logging.getLogger(__name__)


def run_figures(shards: list[ShardRecord], epochs: int) -> dict[str, Any]:
    """Per-worker throughput and the exchange share, from the history's shard records.

    ``ps_time_fraction``: the share of the workers' training time the exchanges took, split into
    ``ps_wait_fraction`` (training stood still: a synchronous exchange, or the wait for an
    overlapped one's reply) and ``ps_overlap_fraction`` (the exchange travelled while training
    went on, ``train.overlap``).
    """
    workers: dict[str, list[ShardRecord]] = defaultdict(list)
    for record in shards:
        workers[record.worker].append(record)

    def total(records: list[ShardRecord], key: str) -> float:
        return sum(v for v in (getattr(r, key) for r in records) if math.isfinite(v))

    busy = sum(total(records, "seconds") for records in workers.values())
    waiting = sum(total(records, "exchange_seconds") for records in workers.values())
    overlapped = sum(total(records, "overlapped_seconds") for records in workers.values())
    rows = []
    for name, records in sorted(workers.items()):
        events, seconds = sum(r.events for r in records), total(records, "seconds")
        rows.append(
            {
                "name": name,
                "shards": len(records),
                "events": events,
                "seconds": round(seconds, 3),
                "events_per_s": round(events / seconds, 1) if seconds else 0.0,
            }
        )
    return {
        "workers": rows,
        "ps_time_fraction": round((waiting + overlapped) / busy, 4) if busy else 0.0,
        "ps_wait_fraction": round(waiting / busy, 4) if busy else 0.0,
        "ps_overlap_fraction": round(overlapped / busy, 4) if busy else 0.0,
        "epochs": epochs,
    }


def task_metrics(
    files: RunDir, task: Task, predicted: Predictions, stored: dict[str, Any]
) -> dict[str, Any]:
    """The task's validation metrics; writes validation.npz (and roc.npz for a binary task).

    ``stored``: what the validation shards hold, in the order ``predicted`` scored them:
    ``event_id`` (N, K), ``event_id_names`` and, for a regression, ``target`` (N, T).
    """
    metrics: dict[str, Any] = dict(predicted.validation_record(task))  # loss as in training
    event_weights = predicted.event_weights
    arrays: dict[str, Any] = {
        "weights": event_weights,
        "event_id": stored["event_id"],
        "event_id_names": np.asarray(stored["event_id_names"]),
    }
    if task.is_classifier:
        labels = class_indices(task, predicted.y)
        scores = predicted.outputs
        arrays.update(labels=labels, scores=scores, names=np.asarray(task.classes))
        if task.kind == "binary":
            metrics["kind"] = "binary"
            metrics["negative_weights"] = negative_weight_summary(event_weights)
            fpr, tpr, thresholds = weighted_roc(labels, scores[:, 0], event_weights)
            with atomic_file(files.roc) as handle:
                np.savez(handle, fpr=fpr, tpr=tpr, thresholds=thresholds)
        else:
            full = multiclass_metrics(labels, scores, event_weights, task.classes)
            metrics.update({k: v for k, v in full.items() if k != "accuracy"})
    else:
        names = [t.name for t in task.targets]
        truth = np.asarray(stored["target"], dtype=np.float64).reshape(predicted.y.shape)
        prediction = unstandardise(task, predicted.outputs)
        arrays.update(truth=truth, prediction=prediction, names=np.asarray(names))
        metrics.update(regression_metrics(truth, prediction, event_weights, names))
    with atomic_file(files.path / VALIDATION_FILE) as handle:
        np.savez(handle, **arrays)
    return metrics


def write_outputs(files: RunDir, spec: WorkerSpec, *, plots: bool = True) -> dict[str, Any]:
    from gridtrain.models import model_input_names, save_model
    from gridtrain.report import write_report

    settings = spec.settings
    model = replica(spec)
    checkpoint = read_checkpoint(files.checkpoint)
    state = json.loads(files.state.read_text())
    leases = state["leases"]
    if settings.restore_best and files.best.exists():
        weights = read_initial_weights(files.best)
        log.info("final model: the weights validated best (epoch %s)", leases.get("best_epoch"))
    else:
        weights = checkpoint.center
    model.set_weights(weights)
    manifest = Manifest.from_dict(spec.manifest)
    builder = InputBuilder(  # k-fold: the fold's own events only
        manifest,
        spec.features,
        spec.groups,
        model_input_names(model),
        settings.negative_weights,
        fold_rows(manifest, settings.fold, settings.folds, validation=True),
    )
    entries = {entry.path: entry for entry in manifest.shards.get("validation", [])}
    metrics: dict[str, Any] = {}
    validation_events = 0  # a k-fold run's fold: its own events of every shard
    if entries:
        exact = ["event_id"] + ([] if builder.task.is_classifier else ["target"])
        stored: dict[str, list[np.ndarray]] = {name: [] for name in exact}
        with tempfile.TemporaryDirectory(prefix="gridtrain-final-") as scratch:
            stagein = stage_in(spec, Path(scratch))

            def load(shard: str) -> ShardData:
                entry = entries[shard]
                location = spec.locations[shard]
                local = stagein.get(location, entry.bytes, entry.adler32)
                data = builder.load(local)
                with ShardReader(local, exact) as reader:  # as stored, beside what was scored
                    raw = reader.read()
                if builder.rows is not None:
                    keep = builder.rows(raw["event_id"])
                    raw = {name: array[keep] for name, array in raw.items()}
                for name, array in raw.items():
                    stored[name].append(array)
                stagein.release(location)
                return data

            try:
                predicted = predict_shards(model, list(entries), load)
            finally:
                stagein.close()
        found: dict[str, Any] = {name: np.concatenate(parts) for name, parts in stored.items()}
        found["event_id_names"] = manifest.event_id
        validation_events = len(found["event_id"])
        metrics.update(task_metrics(files, builder.task, predicted, found))
    metrics["task"] = builder.task.to_dict()
    metrics["train_negative_weights"] = settings.negative_weights
    if builder.task.is_classifier and "reweight" in manifest.weights:  # for the report's plots
        reweight = manifest.weights["reweight"]
        metrics["reweight"] = applied_histograms(reweight, settings.negative_weights)
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)  # saved with its state, loads quietly
    with atomic_path(files.model) as tmp_model:
        save_model(model, tmp_model)
    shards, epochs = read_history(files.history) if files.history.exists() else ([], [])
    metrics.update(run_figures(shards, len(epochs)))
    metrics.update(
        {
            "best_epoch": leases.get("best_epoch"),
            "stopped": leases.get("stopped", ""),
            "stopped_early": str(leases.get("stopped", "")).startswith("early stop"),
            "wall_time_s": state["wall_time_s"],
            "updates": checkpoint.version,
            "refused": state.get("refused", 0),
            "algorithm": settings.algorithm_config().to_dict(),
            "every": settings.every,
            "model": settings.model,
            "staleness": staleness_summary(state.get("staleness", {})),
            "validation_events": validation_events,
        }
    )
    write_text(files.metrics, json.dumps(metrics, indent=1) + "\n")
    if plots:
        write_report(files.path)
    return metrics
