"""TensorBoard event files: written by hand (gridtrain.eventfile), read back here with
TensorBoard's own reader, so ``tensorboard --logdir results/`` shows what a training wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tensorboard.backend.event_processing import plugin_event_accumulator
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata
from train_helpers import gridtrain, read_jsonl, write_config

from gridtrain.eventfile import EventWriter, crc32c


def read_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(folder))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def read_hparams(folder: Path) -> dict[str, object]:
    events = plugin_event_accumulator.EventAccumulator(str(folder))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = hparams_metadata.parse_session_start_info_plugin_data(content)
    found: dict[str, object] = {}
    for name, value in start.hparams.items():
        kind = value.WhichOneof("kind")
        found[name] = getattr(value, kind)
    return found


def test_crc32c_is_castagnolis() -> None:
    assert crc32c(b"123456789") == 0xE3069283  # the check value of CRC-32C
    assert crc32c(b"") == 0


def test_scalars_and_hyperparameters_read_back_with_tensorboard(tmp_path: Path) -> None:
    with EventWriter(tmp_path / "run") as writer:
        writer.hparams({"learning_rate": 0.003, "model": "deepsets", "balance": True, "k": 7})
        for step in (1, 2, 3):
            writer.scalars(step, {"loss/train": 1.0 / step, "auc/validation": 0.5 + step / 10})
        writer.scalars(4, {"negative": -2.5})
    scalars = read_scalars(tmp_path / "run")
    assert scalars["loss/train"] == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3))]
    assert [v for _, v in scalars["auc/validation"]] == pytest.approx([0.6, 0.7, 0.8])
    assert scalars["negative"] == [(4, -2.5)]
    assert read_hparams(tmp_path / "run") == {
        "learning_rate": 0.003,
        "model": "deepsets",
        "balance": True,
        "k": 7.0,
    }


def test_a_training_writes_its_curves_final_figures_and_choices(
    tmp_path: Path, toy_dir: Path, toy_dataset: Path
) -> None:
    config = write_config(
        tmp_path / "config.yaml", toy_dir, toy_dataset, epochs=2, learning_rate=0.002
    )
    run = tmp_path / "run"
    done = gridtrain("train", "-c", str(config), "--run-dir", str(run))
    assert done.returncode == 0, done.stderr[-3000:]
    folder = run / "tensorboard"
    scalars = read_scalars(folder)
    epochs = [r for r in read_jsonl(run / "history.jsonl") if r["type"] == "epoch"]
    assert len(epochs) == 2
    for tag, key in (("loss/validation", "val_loss"), ("auc/validation", "val_auc")):
        assert scalars[tag] == [
            (r["epoch"] + 1, pytest.approx(r[key], rel=1e-6)) for r in epochs
        ], tag
    metrics = json.loads((run / "metrics.json").read_text())
    assert scalars["final/auc"] == [(2, pytest.approx(metrics["auc"], rel=1e-6))]
    assert scalars["staleness/max"] == [(2, float(metrics["staleness"]["max"]))]
    assert "throughput/events_per_s" in scalars
    hparams = read_hparams(folder)
    assert hparams["learning_rate"] == pytest.approx(0.002)
    assert hparams["model"] == "mlp"
    assert hparams["workers"] == 1.0
