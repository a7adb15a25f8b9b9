"""TensorBoard event files: written by hand (gridtrain.eventfile), read back here with
TensorBoard's own reader, so ``tensorboard --logdir results/`` shows what a training wrote; the
same training logged to an MLflow file store, read back with MLflow's client."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
from tensorboard.backend.event_processing import plugin_event_accumulator
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata
from train_helpers import gridtrain, read_jsonl, write_config

from gridtrain.config import validate_config
from gridtrain.errors import ConfigError
from gridtrain.eventfile import EventWriter, crc32c
from gridtrain.rundir import RunDir
from gridtrain.train.driver import prepare
from gridtrain.train.settings import TrainConfig, WorkerSpec
from gridtrain.train.tracking import Tracking, mlflow_uri


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
    tmp_path: Path, toy_dir: Path, toy_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = f"file:{tmp_path / 'mlruns'}"
    config = write_config(
        tmp_path / "config.yaml",
        toy_dir,
        toy_dataset,
        epochs=2,
        learning_rate=0.002,
        mlflow=store,
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

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    check_mlflow_run(store, run, epochs, metrics)


def check_mlflow_run(
    store: str, run: Path, epochs: list[dict[str, object]], metrics: dict[str, object]
) -> None:
    """The same training in MLflow: one run named after its folder, in the dataset's experiment,
    with the hyper-parameters, the curves per epoch, the final figures and metrics.json."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("toy-test")
    assert experiment is not None, [e.name for e in client.search_experiments()]
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.run_name == run.name
    assert found.info.status == "FINISHED"
    assert found.data.tags["gridtrain.run_dir"] == str(run.resolve())
    params = found.data.params
    assert float(params["learning_rate"]) == pytest.approx(0.002)
    assert params["model"] == "mlp"
    run_id = found.info.run_id
    for tag, key in (("loss/validation", "val_loss"), ("auc/validation", "val_auc")):
        history = client.get_metric_history(run_id, tag)
        assert [(m.step, m.value) for m in history] == [
            (r["epoch"] + 1, pytest.approx(r[key], rel=1e-6))  # type: ignore[operator]
            for r in epochs
        ], tag
    assert found.data.metrics["final/auc"] == pytest.approx(metrics["auc"], rel=1e-6)
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert "metrics.json" in artifacts
    assert "plots" in artifacts


def fake_spec(folder: Path, uri: str) -> RunDir:
    """A run directory with a worker spec that logs to ``uri``, for Tracking without a training."""
    sample = {"name": "s", "files": ["s.root"], "label": 1}
    config = validate_config({"dataset": {"tree": "t", "samples": [sample]}, "train": {}})
    folder.mkdir(parents=True)
    WorkerSpec(
        manifest={"name": "toy", "shards": {"train": [{"path": "a.h5"}]}},
        source="manifest.json",
        settings=TrainConfig.from_dict({**config["train"], "workers": 1, "mlflow": uri}),
        features=("x",),
    ).write(folder / "worker.json")
    return RunDir(folder)


def test_an_unreachable_mlflow_server_only_warns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    uri = "http://127.0.0.1:9"  # discard: nothing listens
    files = fake_spec(tmp_path / "run", uri)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="gridtrain.train.tracking"):
        tracking = Tracking(files, WorkerSpec.read(files.spec))
        for epoch in (0, 1):
            tracking({"type": "epoch", "epoch": epoch, "val_loss": 0.5, "unix_time": time.time()})
        tracking.final({"epochs": 2, "auc": 0.75})
    assert time.monotonic() - started < 5
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert uri in warnings[0]
    assert read_scalars(files.path / "tensorboard")["final/auc"] == [(2, 0.75)]  # still written


def test_a_tracking_uri_is_checked_when_the_run_is_prepared(tmp_path: Path) -> None:
    assert mlflow_uri("file:./mlruns", tmp_path) == (tmp_path / "mlruns").as_uri()
    assert mlflow_uri("file:///srv/mlruns", tmp_path) == "file:///srv/mlruns"
    assert mlflow_uri("sqlite:///mlflow.db", tmp_path) == f"sqlite:///{tmp_path}/mlflow.db"
    assert mlflow_uri("sqlite:////srv/mlflow.db", tmp_path) == "sqlite:////srv/mlflow.db"
    assert mlflow_uri("http://mlflow.example:5000", tmp_path) == "http://mlflow.example:5000"
    for bad in ("./mlruns", "s3://bucket/mlruns", "file://otherhost/mlruns"):
        with pytest.raises(ConfigError, match=r"train\.mlflow"):
            mlflow_uri(bad, tmp_path)
    sample = {"name": "s", "files": ["s.root"], "label": 1}
    config = validate_config(
        {"dataset": {"tree": "t", "samples": [sample]}, "train": {"mlflow": "mlruns"}}
    )
    with pytest.raises(ConfigError, match=r"train\.mlflow: 'mlruns' is not a tracking URI"):
        prepare(config, tmp_path / "run", workers=1)  # before the dataset is even looked at
