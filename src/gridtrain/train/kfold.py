"""k-fold training (``train.folds: K``): K models, each validated on the events no other fold
model trained on, and the metrics of every event scored by the model that never saw it.

Layer: train, orchestration. A k-fold run directory holds ``folds.json`` (K, the hash rule and
its inputs: ``gridtrain.data.folds``), the config, and one ordinary run directory per fold,
``fold-0`` .. ``fold-{K-1}``, each prepared by ``driver.prepare(..., fold=k)``: it trains on
the other folds' events and validates on its own, with its own parameter server. With the local
executor the folds train one after the other (they share this machine's cores); with HTCondor
side by side, each fold's driver detached as ``tune`` runs its trials, so K clusters of workers
share the pool. When every fold has finished, ``combine`` writes the parent's ``validation.npz``
(every event once, scored by its fold's model), its ``metrics.json`` (those out-of-fold metrics,
and each fold's headline figures with their mean and spread under ``folds``) and ``roc.npz``
for a binary task; ``gridtrain report`` then draws the parent like any run.

``gridtrain train --resume DIR`` continues the folds that did not finish; ``--detach`` runs the
whole k-fold training in the background as one driver of the parent directory, which
``gridtrain status`` and ``gridtrain cancel`` reach like any other driver.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from gridtrain.data.folds import fold_of, fold_record
from gridtrain.data.manifest import load_manifest
from gridtrain.errors import ConfigError
from gridtrain.evaluation import (
    metric_weights,
    multiclass_metrics,
    negative_weight_summary,
    regression_metrics,
    weighted_accuracy,
    weighted_auc,
    weighted_log_loss,
    weighted_roc,
)
from gridtrain.files import atomic_file, write_text
from gridtrain.liveness import release
from gridtrain.rundir import RunDir
from gridtrain.train.driver import (
    EXIT_INTERRUPTED,
    TrainingFailed,
    TrainingRun,
    claim_driver,
    detach,
    prepare,
    resumable,
    running_driver,
)
from gridtrain.train.settings import TrainConfig

log = logging.getLogger(__name__)

FOLDS_FILE = "folds.json"
VALIDATION_FILE = "validation.npz"
_HEADLINE = ("loss", "accuracy", "auc", "macro_auc", "log_loss")


def is_kfold(run_dir: Path) -> bool:
    """Whether ``run_dir`` is a k-fold training's parent directory."""
    return (Path(run_dir) / FOLDS_FILE).is_file()


def fold_dirs(run_dir: Path) -> list[Path]:
    """The folds' run directories, in fold order."""
    record = json.loads((Path(run_dir) / FOLDS_FILE).read_text())
    return [Path(run_dir) / name for name in record["runs"]]


def prepare_folds(config: dict[str, Any], run_dir: Path, workers: int | None) -> RunDir:
    """Check the config and write the parent directory and one prepared run per fold."""
    settings = TrainConfig.from_dict(config["train"])
    folds = settings.folds
    if folds is None or folds < 2:
        raise ConfigError(f"train.folds: {folds}: a k-fold training needs at least 2 folds")
    files = RunDir(run_dir)
    if (run_dir / FOLDS_FILE).exists() or files.spec.exists():
        raise ConfigError(
            f"{run_dir} holds a run already; continue it with `gridtrain train --resume "
            f"{run_dir}`, or choose another --run-dir"
        )
    manifest_path = Path(config["dataset"]["outdir"]) / "manifest.json"
    manifest = load_manifest(manifest_path)
    names = [f"fold-{k}" for k in range(folds)]
    run_dir.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        prepare(config, run_dir / name, workers, fold=k)
    record = fold_record(None, folds, int(manifest.split["seed"]), manifest.event_id)
    write_text(run_dir / FOLDS_FILE, json.dumps({**record, "runs": names}, indent=1) + "\n")
    write_text(files.config, yaml.safe_dump(config, sort_keys=False))
    return files


def train_folds(
    config: dict[str, Any], run_dir: Path, workers: int | None, *, plots: bool = True
) -> int:
    """``gridtrain train`` with ``train.folds``: prepare every fold, then train them."""
    files = prepare_folds(config, run_dir, workers)
    return execute_folds(files.path, plots=plots)


def execute_folds(run_dir: Path, *, plots: bool = True) -> int:
    """Train the folds that have not finished (one after another locally, side by side on
    HTCondor), as the parent's driver; combine them once all have finished."""
    files = RunDir(run_dir)
    lock = claim_driver(files)
    try:
        runs = fold_dirs(run_dir)
        executor = TrainingRun(RunDir(runs[0]), plots=False).settings.executor
        code = _side_by_side(runs) if executor == "condor" else _one_by_one(runs, plots)
        if code != 0:
            return code
        metrics = combine(run_dir)
        if plots:
            from gridtrain.report import load_run, write_report

            write_report(run_dir, load_run(run_dir))
        spread = metrics["folds"]
        key = "auc" if "auc" in spread["mean"] else next(iter(spread["mean"]), "loss")
        print(
            f"gridtrain train: {len(runs)} folds; out-of-fold {key} "
            f"{metrics.get(key, float('nan')):.4f}; per fold {key} "
            f"{spread['mean'].get(key, float('nan')):.4f} ± "
            f"{spread['std'].get(key, float('nan')):.4f}; results in {run_dir}"
        )
        return 0
    finally:
        files.driver.unlink(missing_ok=True)
        release(lock)


def _finished(run: Path) -> bool:
    return RunDir(run).metrics.is_file()


def _one_by_one(runs: list[Path], plots: bool) -> int:
    """The folds in turn, in this process. A signal between two folds' trainings (each
    fold's driver traps its own while it trains) stops before the next fold."""
    parent = runs[0].parent
    stopped: list[str] = []

    def on_signal(signum: int, frame: object) -> None:
        del frame
        stopped.append(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return _each_fold(runs, plots, parent, stopped)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _each_fold(runs: list[Path], plots: bool, parent: Path, stopped: list[str]) -> int:
    for run in runs:
        if _finished(run):
            continue
        if stopped:
            print(
                f"gridtrain train: k-fold training interrupted ({stopped[0]}) before {run.name}; "
                f"go on with every fold: gridtrain train --resume {parent}",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
        log.info("k-fold: training %s", run.name)
        try:
            code = TrainingRun(RunDir(run), plots=plots).execute()
        except TrainingFailed as err:
            raise TrainingFailed(
                f"{err}; to go on with every fold: gridtrain train --resume {parent}"
            ) from None
        if code != 0:
            print(
                f"gridtrain train: k-fold training stopped in {run.name}; go on with every fold: "
                f"gridtrain train --resume {parent}",
                file=sys.stderr,
            )
            return code
    return 0


def _side_by_side(runs: list[Path]) -> int:
    """Every unfinished fold's driver detached at once; wait until none runs."""
    for run in runs:
        if not _finished(run) and running_driver(RunDir(run)) is None:
            detach(run)
    while any(running_driver(RunDir(run)) is not None for run in runs):
        time.sleep(2.0)
    unfinished = [run.name for run in runs if not _finished(run)]
    if not unfinished:
        return 0
    if all(resumable(run) for run in runs if not _finished(run)):
        return EXIT_INTERRUPTED
    raise TrainingFailed(
        f"folds {', '.join(unfinished)} did not finish; see their driver.log, then gridtrain "
        "train --resume on the k-fold directory"
    )


def _load(path: Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


def combine(run_dir: Path) -> dict[str, Any]:
    """The parent's validation.npz, metrics.json (and roc.npz): every event scored by the one
    fold model that did not train on it, and the folds' figures with their spread."""
    files = RunDir(run_dir)
    record = json.loads((run_dir / FOLDS_FILE).read_text())
    runs = [run_dir / name for name in record["runs"]]
    parts = [_load(run / VALIDATION_FILE) for run in runs]
    per_fold = [json.loads(RunDir(run).metrics.read_text()) for run in runs]
    arrays: dict[str, Any] = {
        name: np.concatenate([part[name] for part in parts])
        for name in parts[0]
        if name not in ("names", "event_id_names")
    }
    for name in ("names", "event_id_names"):
        if name in parts[0]:
            arrays[name] = parts[0][name]
    folds = fold_of(arrays["event_id"], record["folds"], record["seed"])
    arrays["fold"] = folds
    for k, part in enumerate(parts):  # each fold validated exactly its own events
        own = fold_of(part["event_id"], record["folds"], record["seed"])
        if not np.all(own == k):
            raise TrainingFailed(f"{runs[k]}: validated events of another fold; train it again")
    weights = np.asarray(arrays["weights"], dtype=np.float64)
    metrics: dict[str, Any] = {"kind": per_fold[0].get("kind"), "task": per_fold[0].get("task")}
    if "scores" in arrays:
        labels, scores = arrays["labels"].astype(np.int64), arrays["scores"]
        if scores.shape[1] == 1:  # binary
            fpr, tpr, thresholds = weighted_roc(labels, scores[:, 0], weights)
            with atomic_file(files.roc) as handle:
                np.savez(handle, fpr=fpr, tpr=tpr, thresholds=thresholds)
            metric = metric_weights(weights)  # negative weights count as zero, as in a run
            metrics.update(
                auc=weighted_auc(labels, scores[:, 0], metric),
                accuracy=weighted_accuracy(labels, scores[:, 0], metric),
                log_loss=weighted_log_loss(labels, scores[:, 0], metric),
            )
        else:
            classes = [str(c) for c in arrays["names"]]
            metrics.update(multiclass_metrics(labels, scores, weights, classes))
    else:
        names = [str(n) for n in arrays["names"]]
        metrics.update(regression_metrics(arrays["truth"], arrays["prediction"], weights, names))
    with atomic_file(run_dir / VALIDATION_FILE) as handle:
        np.savez(handle, **arrays)
    figures = [
        {key: float(m[key]) for key in _HEADLINE if isinstance(m.get(key), int | float)}
        for m in per_fold
    ]
    common = set.intersection(*(set(f) for f in figures)) if figures else set()
    metrics["folds"] = {
        **{key: value for key, value in record.items() if key != "runs"},
        "runs": record["runs"],
        "metrics": figures,
        "mean": {key: float(np.mean([f[key] for f in figures])) for key in sorted(common)},
        "std": {key: float(np.std([f[key] for f in figures], ddof=1)) for key in sorted(common)},
        "events": [len(part["weights"]) for part in parts],
    }
    events = metrics["folds"]["events"]
    losses = [float(m["loss"]) for m in per_fold if isinstance(m.get("loss"), int | float)]
    if len(losses) == len(per_fold):  # the training loss, as each fold computed it
        metrics["loss"] = float(np.average(losses, weights=events))
    metrics["validation_events"] = len(weights)
    first = per_fold[0]
    for key in ("model", "train_negative_weights", "algorithm", "every"):
        if key in first:
            metrics[key] = first[key]
    if metrics.get("kind") == "binary":
        metrics["negative_weights"] = negative_weight_summary(weights)
    metrics["best_epoch"] = [m.get("best_epoch") for m in per_fold]
    metrics["updates"] = sum(int(m.get("updates", 0)) for m in per_fold)
    metrics["refused"] = sum(int(m.get("refused", 0)) for m in per_fold)
    metrics["epochs"] = max(int(m.get("epochs", 0)) for m in per_fold)
    metrics["wall_time_s"] = float(sum(float(m.get("wall_time_s", 0.0)) for m in per_fold))
    write_text(files.metrics, json.dumps(metrics, indent=1) + "\n")
    return metrics
