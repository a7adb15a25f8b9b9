"""A multiclass tagger trained from ROOT files to metrics.json through the CLI, with negative event
weights; 2 asynchronous workers reach the 1-worker quality; a head that does not fit the task is
refused before any process starts. (The regression chain runs through Snakemake:
tests/workflow/test_workflow_tasks.py.)"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from train_helpers import gridtrain, read_jsonl, start_gridtrain

from gridtrain.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
TWO_WORKER_TOLERANCE = 0.03  # macro AUC, 2 async workers against 1, same epochs and data


def multiclass_config(tmp_path: Path) -> dict[str, Any]:
    """config/multiclass.yaml made small: 3000 events, genWeight negative in 10% of them."""
    config = yaml.safe_load((REPO / "config" / "multiclass.yaml").read_text())
    config["toy"].update({"events": 3000, "outdir": str(tmp_path / "toy")})
    config["toy"]["negative_weight_fraction"] = 0.1
    for sample in config["dataset"]["samples"]:
        sample["files"] = [str(tmp_path / "toy" / Path(sample["files"][0]).name)]
    config["dataset"].update(
        {"weight": "genWeight", "shard_events": 500, "outdir": str(tmp_path / "dataset")}
    )
    config["dataset"].pop("jagged")  # the MLP reads the flat features only
    config["train"].update(
        {
            "epochs": 2,
            "batch_size": 128,
            "learning_rate": 0.005,
            "model": {"name": "mlp", "params": {"hidden": [32, 32]}},
            "early_stopping": {"patience": None},
        }
    )
    return config


@pytest.fixture(scope="module")
def multiclass(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The config file, its toy files written and converted (``gridtrain toy``, ``convert``)."""
    tmp_path = tmp_path_factory.mktemp("multiclass")
    config = multiclass_config(tmp_path)
    path = tmp_path / "multiclass.yaml"
    path.write_text(yaml.safe_dump(config))
    toy = config["toy"]
    made = gridtrain(
        "toy",
        "--task=multiclass",
        f"--events={toy['events']}",
        f"--negative-weight-fraction={toy['negative_weight_fraction']}",
        f"--out={toy['outdir']}",
    )
    assert made.returncode == 0, made.stderr[-2000:]
    converted = gridtrain("convert", "-c", str(path))
    assert converted.returncode == 0, converted.stderr[-2000:]
    assert "negative weights" in converted.stderr
    return path


def best_validated_epoch(run_dir: Path, min_delta: float = 0.0) -> int:
    """The epoch whose validation loss in history.jsonl is the lowest, as early stopping defines
    the best (an improvement must beat the best so far by more than ``min_delta``; on a tie the
    earlier epoch stays best)."""
    epochs = [r for r in read_jsonl(run_dir / "history.jsonl") if r["type"] == "epoch"]
    best, best_loss = None, np.inf
    for record in sorted(epochs, key=lambda r: r["epoch"]):
        if record["val_loss"] < best_loss - min_delta:
            best, best_loss = record["epoch"], record["val_loss"]
    assert best is not None, epochs
    return int(best)


def train_side_by_side(config: Path, runs: dict[Path, int]) -> list[tuple[dict[str, Any], str]]:
    """``gridtrain train`` into each run folder with its number of workers, all at once (their
    start-up, mostly imports, overlaps); the metrics and stderr of each."""
    started = [
        start_gridtrain("train", "-c", str(config), "--run-dir", str(run), "--workers", str(n))
        for run, n in runs.items()
    ]
    done = []
    for run, process in zip(runs, started, strict=True):
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
        done.append((json.loads((run / "metrics.json").read_text()), stderr))
    return done


@pytest.mark.slow
def test_multiclass_with_negative_weights_trains_on_two_async_workers_as_on_one(
    multiclass: Path, tmp_path: Path
) -> None:
    (one, log), (two, _) = train_side_by_side(
        multiclass, {tmp_path / "one": 1, tmp_path / "two": 2}
    )
    # the warning names the share and the choice, once
    warnings = [line for line in log.splitlines() if "is negative event weights" in line]
    assert len(warnings) == 1, log[-2000:]
    assert "train.negative_weights: abs" in warnings[0]
    for metrics in (one, two):
        assert metrics["task"] == {"kind": "multiclass", "classes": ["qcd", "w", "top"],
                                   "balance": True}  # fmt: skip
        assert metrics["train_negative_weights"] == "abs"
        assert metrics["negative_weights"]["negative_events"] > 0
        assert metrics["epochs"] == 2
        # every metric in its range, negative weights or not
        assert all(0.5 < auc <= 1 for auc in metrics["class_auc"].values())
        assert 0 <= metrics["accuracy"] <= 1
        for row in metrics["confusion"]:
            assert all(0 <= x <= 1 for x in row)
            assert sum(row) == pytest.approx(1)
        rejections = [
            r for k in metrics["rejection"].values() for j in k.values() for r in j.values()
        ]
        assert all(r is None or r >= 1 for r in rejections)
    for run_dir, metrics in ((tmp_path / "one", one), (tmp_path / "two", two)):
        assert metrics["best_epoch"] == best_validated_epoch(run_dir), run_dir
    assert one["macro_auc"] > 0.85, one["class_auc"]
    assert abs(two["macro_auc"] - one["macro_auc"]) <= TWO_WORKER_TOLERANCE, (two, one)
    assert len([w for w in two["workers"] if w["shards"] > 0]) == 2
    # each epoch validated on loss (early stopping, best snapshot) with the classifier's figures
    epochs = [r for r in read_jsonl(tmp_path / "one" / "history.jsonl") if r["type"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [0, 1]
    assert all(r["val_loss"] > 0 and 0.5 < r["val_auc"] <= 1 for r in epochs)
    with np.load(tmp_path / "one" / "validation.npz") as saved:
        assert saved["scores"].shape == (one["validation_events"], 3)
        assert np.allclose(saved["scores"].sum(axis=1), 1, atol=1e-4)
        assert set(saved["labels"].tolist()) == {0, 1, 2}
        assert saved["weights"].min() < 0  # the event weights as converted
    for plot in ("roc", "confusion", "rejection"):
        assert (tmp_path / "one" / "plots" / f"{plot}.png").read_bytes()[:4] == b"\x89PNG"


def test_a_model_whose_head_does_not_fit_the_task_is_refused_before_training(
    multiclass: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gridtrain.config import load_config
    from gridtrain.train.driver import prepare

    (tmp_path / "binary_head.py").write_text(
        textwrap.dedent(
            """
            import keras

            def build(inputs):
                x = keras.Input(shape=(len(inputs.features),), name="features")
                model = keras.Model(x, keras.layers.Dense(1, activation="sigmoid")(x))
                model.compile(optimizer="adam", loss="binary_crossentropy")
                return model
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    config = load_config(multiclass)
    config["train"]["model"] = {"name": "binary_head.py:build", "params": {}}
    with pytest.raises(ConfigError) as refused:
        prepare(config, tmp_path / "run", None)
    message = str(refused.value)
    assert "\n" not in message
    assert "outputs 1 unit(s) with sigmoid" in message
    assert "multiclass (qcd, w, top), expects 3 unit(s) with softmax" in message
    assert not (tmp_path / "run" / "worker.json").exists()  # nothing started, nothing written
