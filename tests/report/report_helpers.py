"""A synthetic run directory, written as the training engine writes one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from gridtrain.evaluation import (
    multiclass_metrics,
    regression_metrics,
    weighted_auc,
    weighted_roc,
)

WORKERS = ("worker-0", "worker-1")
EPOCHS = 3
SHARDS_PER_EPOCH = 6


def write_run(run_dir: Path, *, roc: bool = True, metrics: bool = True) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []
    time = version = 0
    for epoch in range(1, EPOCHS + 1):
        for k in range(SHARDS_PER_EPOCH):
            time += 2.5
            version += 20
            record = {
                "type": "shard",
                "time": time,
                "epoch": epoch,
                "shard": f"train-{k:05d}.h5",
                "worker": WORKERS[k % 2],
                "version": version,
                "loss": 0.7 / epoch + 0.05 * rng.random(),
                "events": 2000,
                "seconds": 2.4,
                "future_key": "ignored",
            }
            lines.append(json.dumps(record))
        lines.append(
            json.dumps(
                {
                    "type": "epoch",
                    "time": time + 1.0,
                    "epoch": epoch,
                    "version": version,
                    "updates": version,
                    "train_loss": 0.7 / epoch,
                    "val_loss": 0.65 / epoch + 0.02,
                    "val_accuracy": 0.6 + 0.1 * epoch,
                    "val_auc": 0.7 + 0.08 * epoch,
                }
            )
        )
        lines.append(json.dumps({"type": "checkpoint", "time": time + 1.5}))  # unknown type
    (run_dir / "history.jsonl").write_text("\n".join(lines) + "\n")

    labels = rng.integers(0, 2, 5000)
    scores = labels * 0.6 + rng.random(5000)
    weights = rng.uniform(0.5, 1.5, 5000)
    if roc:
        fpr, tpr, thresholds = weighted_roc(labels, scores, weights)
        np.savez(run_dir / "roc.npz", fpr=fpr, tpr=tpr, thresholds=thresholds)
    if metrics:
        summary = {
            "loss": 0.237,
            "accuracy": 0.9,
            "auc": weighted_auc(labels, scores, weights),
            "epochs": EPOCHS,
            "best_epoch": 2,
            "stopped_early": False,
            "wall_time_s": time + 2.0,
            "updates": version,
            "refused": 3,
            "algorithm": {"algorithm": "downpour", "optimizer": "adam"},
            "model": "deepsets",
            "staleness": {
                "histogram": {"0": 120, "1": 90, "2": 40, "3-4": 20, "5-8": 4, ">64": 1},
                "p50": 1,
                "p90": 3,
                "p99": 7,
                "max": 70,
            },
            "workers": [
                {"name": w, "shards": 9, "events": 18000, "seconds": 21.6, "events_per_s": r}
                for w, r in zip(WORKERS, (833.3, 790.0), strict=True)
            ],
            "ps_time_fraction": 0.04,
        }
        (run_dir / "metrics.json").write_text(json.dumps(summary, indent=1))
    return run_dir


def write_task_run(
    run_dir: Path, kind: str, *, task_metrics: bool = True, negative: bool = True
) -> Path:
    """A finished multiclass or regression run: the binary run's history and run figures, plus
    validation.npz, the task's metrics in metrics.json and a config.yaml naming the choices."""
    write_run(run_dir, roc=False)
    rng = np.random.default_rng(1)
    n = 3000
    weights = rng.uniform(0.5, 1.5, n)
    if negative:
        weights[rng.uniform(size=n) < 0.1] *= -1
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("auc", "accuracy"):
        metrics.pop(key)
    if kind == "multiclass":
        classes = ["top", "W", "QCD"]
        labels = rng.integers(0, 3, n)
        logits = rng.normal(size=(n, 3)) + 2.0 * np.eye(3)[labels]
        scores = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        arrays = {"labels": labels, "scores": scores, "names": np.array(classes)}
        task = {"kind": kind, "classes": classes, "balance": True}
        record = multiclass_metrics(labels, scores, weights, classes)
    else:
        true_pt = rng.uniform(20, 200, n)
        predicted = true_pt * 1.03 * (1 + 0.1 * rng.normal(size=n))
        arrays = {
            "truth": true_pt[:, None],
            "prediction": predicted[:, None],
            "names": np.array(["pt"]),
        }
        task = {
            "kind": kind,
            "targets": [{"name": "pt", "expression": "GenJet_pt", "mean": 110, "std": 52}],
            "loss": "huber",
            "huber_delta": 1.0,
        }
        record = regression_metrics(true_pt, predicted, weights, ["pt"])
    np.savez(run_dir / "validation.npz", weights=weights, **arrays)
    metrics["task"] = task
    if task_metrics:
        metrics.update(record)
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    (run_dir / "config.yaml").write_text("train:\n  negative_weights: abs\n")
    return run_dir
