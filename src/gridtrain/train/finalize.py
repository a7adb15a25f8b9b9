"""The outputs of a finished run: final model, validation metrics, ROC curve, metrics.json, plots.

Layer: train, outputs. Runs in the driver after the workers and the parameter server stopped:
builds the model, loads the best validated weights (``restore_best``) or the final center,
evaluates it on the validation shards (staged like a worker stages them) and writes every file
atomically. ``gridtrain report`` redraws the plots from these files without TensorFlow.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gridtrain.config import StageConfig
from gridtrain.data.manifest import Manifest
from gridtrain.evaluation import weighted_roc
from gridtrain.ps.checkpoint import read_checkpoint
from gridtrain.stage import StageIn
from gridtrain.train.data import InputBuilder, ShardData
from gridtrain.train.settings import WorkerSpec
from gridtrain.train.worker import evaluate, predict_shards

if TYPE_CHECKING:
    from gridtrain.train.driver import RunDir

log = logging.getLogger(__name__)


def read_history(path: Path) -> list[dict[str, Any]]:
    """The records of history.jsonl; a torn last line (a killed run) is skipped."""
    records: list[dict[str, Any]] = []
    if not path.exists():
        return records
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s: skipping an incomplete line", path)
    return records


def run_figures(history: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-worker throughput, epochs and the exchange share, from the history records."""
    workers: dict[str, dict[str, float]] = defaultdict(
        lambda: {"shards": 0, "events": 0, "seconds": 0.0, "exchange_seconds": 0.0}
    )
    for record in history:
        if record.get("type") == "shard":
            totals = workers[record["worker"]]
            totals["shards"] += 1
            for key in ("events", "seconds", "exchange_seconds"):
                totals[key] += record.get(key, 0)
    busy = sum(w["seconds"] for w in workers.values())
    exchanging = sum(w["exchange_seconds"] for w in workers.values())
    return {
        "workers": [
            {
                "name": name,
                "shards": int(w["shards"]),
                "events": int(w["events"]),
                "seconds": round(w["seconds"], 3),
                "events_per_s": round(w["events"] / w["seconds"], 1) if w["seconds"] else 0.0,
            }
            for name, w in sorted(workers.items())
        ],
        "ps_time_fraction": round(exchanging / busy, 4) if busy else 0.0,
        "epochs": sum(record.get("type") == "epoch" for record in history),
    }


def _atomic_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def write_outputs(files: RunDir, spec: WorkerSpec, *, plots: bool = True) -> dict[str, Any]:
    from gridtrain.models import InputSpec, build_model, model_input_names
    from gridtrain.report import write_report
    from gridtrain.train.driver import _load_weights, staleness_summary

    settings = spec.settings
    model = build_model(
        settings.model,
        settings.model_params,
        InputSpec(spec.features, spec.groups),
        learning_rate=settings.learning_rate,
        seed=settings.seed,
    )
    checkpoint = read_checkpoint(files.checkpoint)
    state = json.loads(files.state.read_text())
    if settings.restore_best and files.best.exists():
        weights, meta = _load_weights(files.best)
        log.info("final model: the best validated weights (epoch %s)", meta.get("epoch"))
    else:
        weights = checkpoint.center
    model.set_weights(weights)
    manifest = Manifest.from_dict(spec.manifest)
    builder = InputBuilder(manifest, spec.features, spec.groups, model_input_names(model))
    entries = {entry.path: entry for entry in manifest.shards.get("validation", [])}
    metrics: dict[str, Any] = {}
    if entries:
        with tempfile.TemporaryDirectory(prefix="gridtrain-final-") as scratch:
            stage = StageConfig.from_dict(spec.stage)
            stagein = StageIn(
                Path(scratch), timeout=stage.timeout, retries=stage.retries, backoff=stage.backoff
            )

            def load(shard: str) -> ShardData:
                entry = entries[shard]
                location = spec.locations[shard]
                data = builder.load(stagein.get(location, entry.bytes, entry.adler32))
                stagein.release(location)
                return data

            try:
                labels, scores, event_weights = predict_shards(model, list(entries), load)
            finally:
                stagein.close()
        metrics.update(evaluate(labels, scores, event_weights))
        fpr, tpr, thresholds = weighted_roc(labels, scores, event_weights)
        tmp = files.roc.with_name(".roc.tmp.npz")
        np.savez(tmp, fpr=fpr, tpr=tpr, thresholds=thresholds)
        os.replace(tmp, files.roc)
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)  # saved with its state, loads quietly
    tmp_model = files.model.with_name(".model.tmp.keras")
    model.save(tmp_model)
    os.replace(tmp_model, files.model)
    history = read_history(files.history)
    leases = state["leases"]
    metrics.update(run_figures(history))
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
            "validation_events": int(sum(entry.events for entry in entries.values())),
        }
    )
    _atomic_json(files.metrics, metrics)
    if plots:
        write_report(files.path)
    return metrics
