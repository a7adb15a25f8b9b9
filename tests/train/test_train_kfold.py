"""k-fold training (``train.folds``): K runs, each validating on its own fold's events and
training on the others', combined into metrics where every event is scored once by the model
that never trained on it.

The fold of each event is recomputed here from its event id with the rule as ``folds.json``
and the docs state it (splitmix64 written out again below, apart from gridtrain's), and each
fold's model is checked to have scored exactly its own fold.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from train_helpers import gridtrain, read_jsonl, write_config

from gridtrain.data.shards import ShardReader
from gridtrain.evaluation import metric_weights, weighted_auc
from tests.waiting import wait_until

GOLDEN = 0x9E3779B97F4A7C15
MASK = (1 << 64) - 1


def splitmix64(x: int) -> int:
    x = (x + GOLDEN) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def fold_by_hand(ids: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The documented rule, one event at a time in Python integers."""
    out = []
    for row in ids:
        h = seed & MASK
        for value in row:
            h = splitmix64(h ^ int(value))
        out.append(((h & 0xFFFFFFFF) * folds) >> 32)
    return np.asarray(out)


@pytest.fixture(scope="module")
def kfold_run(tmp_path_factory, toy_dir, toy_dataset) -> Path:
    """A 3-fold training started in the background, cancelled while its first fold trains,
    seen stopped by ``gridtrain status``, then resumed to the end: what a user does."""
    tmp = tmp_path_factory.mktemp("kfold")
    config = write_config(tmp / "config.yaml", toy_dir, toy_dataset, epochs=1, folds=3)
    run = tmp / "run"
    started = gridtrain("train", "-c", str(config), "--run-dir", str(run), "--detach")
    assert started.returncode == 0, started.stderr[-3000:]
    first = run / "fold-0" / "history.jsonl"
    wait_until(
        lambda: first.exists() and any(r["type"] == "shard" for r in read_jsonl(first)),
        180,
        "the first fold to train a shard",
    )
    cancelled = gridtrain("cancel", str(run))
    assert cancelled.returncode == 0, cancelled.stderr[-3000:]
    assert "k-fold: stopped the driver" in cancelled.stdout
    status = gridtrain("status", str(run))
    assert f"k-fold run {run}: stopped, 3 folds" in status.stdout, status.stdout
    # the fold in training checkpointed; on a busy machine the cancel may come after fold-0
    # finished, or between two folds: then a later fold stopped, or none had started
    phases = {
        k: next(line for line in status.stdout.splitlines() if f"fold-{k}:" in line)
        .split(": ")[1]
        .split(",")[0]
        for k in range(3)
    }
    assert set(phases.values()) <= {"finished", "stopped", "prepared"}, status.stdout
    assert phases[2] != "finished", status.stdout
    done = gridtrain("train", "--resume", str(run))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3 folds; out-of-fold auc" in done.stdout
    return run


def all_event_ids(dataset: Path) -> np.ndarray:
    manifest = json.loads((dataset / "manifest.json").read_text())
    parts = []
    for split in ("train", "validation"):
        for entry in manifest["shards"][split]:
            with ShardReader(dataset / entry["path"], ["event_id"]) as reader:
                parts.append(reader.read()["event_id"])
    return np.concatenate(parts)


def test_each_fold_validates_its_own_events_and_trains_on_the_rest(
    kfold_run: Path, toy_dataset: Path
) -> None:
    record = json.loads((kfold_run / "folds.json").read_text())
    assert record["folds"] == 3
    assert record["runs"] == ["fold-0", "fold-1", "fold-2"]
    ids = all_event_ids(toy_dataset)
    expected = fold_by_hand(ids, 3, record["seed"])
    assert sorted(set(expected.tolist())) == [0, 1, 2]
    for k in range(3):
        run = kfold_run / f"fold-{k}"
        with np.load(run / "validation.npz") as validation:
            scored = validation["event_id"]
        assert np.all(fold_by_hand(scored, 3, record["seed"]) == k)
        assert len(scored) == int(np.sum(expected == k))  # all of them, once
        shards = {r["shard"] for r in read_jsonl(run / "history.jsonl") if r["type"] == "shard"}
        converted = json.loads((toy_dataset / "manifest.json").read_text())["shards"]
        every = {e["path"] for split in converted.values() for e in split}
        assert shards == every  # it trained on (the other folds' events of) every shard
        metrics = json.loads((run / "metrics.json").read_text())
        assert metrics["validation_events"] == len(scored)


def test_the_combined_metrics_score_every_event_once_by_the_model_that_never_saw_it(
    kfold_run: Path, toy_dataset: Path
) -> None:
    with np.load(kfold_run / "validation.npz") as combined:
        ids, labels = combined["event_id"], combined["labels"]
        scores, weights, folds = combined["scores"], combined["weights"], combined["fold"]
    every = all_event_ids(toy_dataset)
    assert len(ids) == len(every)
    # each event once: the toy's two samples number their events alike, the label tells them apart
    keys = {(*row, label) for row, label in zip(ids.tolist(), labels.tolist(), strict=True)}
    assert len(keys) == len(every)
    record = json.loads((kfold_run / "folds.json").read_text())
    assert np.array_equal(folds, fold_by_hand(ids, 3, record["seed"]))
    metrics = json.loads((kfold_run / "metrics.json").read_text())
    auc = weighted_auc(labels, scores[:, 0], metric_weights(weights))
    assert metrics["auc"] == pytest.approx(auc, abs=1e-12)
    per_fold = [
        json.loads((kfold_run / f"fold-{k}" / "metrics.json").read_text())["auc"] for k in range(3)
    ]
    assert metrics["folds"]["metrics"][1]["auc"] == pytest.approx(per_fold[1])
    assert metrics["folds"]["mean"]["auc"] == pytest.approx(np.mean(per_fold))
    assert metrics["folds"]["std"]["auc"] == pytest.approx(np.std(per_fold, ddof=1))
    assert metrics["auc"] > 0.7  # the toy is separable: the fold models learned
    report = gridtrain("report", str(kfold_run))
    assert report.returncode == 0, report.stderr[-2000:]
    assert "folds: 3" in report.stdout
