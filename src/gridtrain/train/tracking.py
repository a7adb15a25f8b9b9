"""What a training shows in TensorBoard: its curves as they come, its figures at the end.

Layer: train. The driver hands every ``history.jsonl`` record to ``Tracking`` as well; each
closed epoch becomes one event at step = epoch number (1-based) with the training and validation
loss, the validation AUC and accuracy and the updates so far. At the start the run's
hyper-parameters go to TensorBoard's HPARAMS tab; at the end, the final model's metrics, the
workers' throughput, the staleness and the exchange share (from ``metrics.json``) at the last
step. The files are in ``RUN_DIR/tensorboard/``, so ``tensorboard --logdir results/`` shows
every run and tune trial below ``results/`` side by side, each under its folder's path.

With ``train.mlflow`` (a tracking URI) the same figures also go to MLflow: one run named after
the run directory in an experiment named after the dataset, the hyper-parameters as params, the
curves and final figures as metrics under the same names, ``metrics.json`` and ``plots/`` as
artifacts. MLflow is imported only then, and only its own thread talks to it: the history
records come from the parameter server's threads, which a slow server must not hold up.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gridtrain.errors import ConfigError
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


def epoch_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """One ``history.jsonl`` epoch record's curves, by tag."""
    return {
        tag: float(record[key])
        for key, tag in _EPOCH_TAGS.items()
        if isinstance(record.get(key), int | float)
    }


class Tracking:
    """The run's TensorBoard event file, and its MLflow run where ``train.mlflow`` names one,
    fed by the driver. A write that fails (a full disk, a server gone) is logged once and
    switches that one off: the training goes on."""

    def __init__(self, files: RunDir, spec: WorkerSpec) -> None:
        self._writer: EventWriter | None = None
        self._last_step = 0
        uri = spec.settings.mlflow
        self._mlflow = MlflowTracking(uri, files, spec) if uri else None
        try:
            self._writer = EventWriter(files.path / "tensorboard")
            self._writer.hparams(hyperparameters(spec), group=files.path.name)
        except OSError as err:
            self._off(err)

    def _off(self, err: OSError) -> None:
        log.warning("TensorBoard event file not written any more: %s", err)
        self._close_events()

    def __call__(self, record: Mapping[str, Any]) -> None:
        """A ``history.jsonl`` record: epochs become a step of curves, shards are skipped."""
        if record.get("type") != "epoch":
            return
        step = int(record["epoch"]) + 1
        values = epoch_scalars(record)
        self._last_step = step
        if self._mlflow is not None:
            self._mlflow.scalars(step, values, record.get("unix_time"))
        if self._writer is None:
            return
        try:
            self._writer.scalars(step, values, wall_time=record.get("unix_time"))
        except OSError as err:
            self._off(err)

    def final(self, metrics: Mapping[str, Any]) -> None:
        """The final model's figures, at the last epoch's step; closes the file and ends the
        MLflow run, with ``metrics.json`` and ``plots/`` as its artifacts."""
        step = int(metrics.get("epochs") or self._last_step or 1)
        values = final_scalars(metrics)
        if self._mlflow is not None:
            self._mlflow.final(step, values)
            self._mlflow = None
        if self._writer is None:
            return
        try:
            self._writer.scalars(step, values)
            self._writer.close()
        except OSError as err:
            self._off(err)
        self._writer = None

    def close(self) -> None:
        """An interrupted or failed training: the file closed, the MLflow run ended as killed."""
        self._close_events()
        if self._mlflow is not None:
            self._mlflow.end("KILLED", wait=MLFLOW_WAIT_S / 6)  # someone is waiting for the prompt
            self._mlflow = None

    def _close_events(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(OSError):
                self._writer.close()
            self._writer = None


# -- MLflow --------------------------------------------------------------------------------------

MLFLOW_SCHEMES = ("file", "sqlite", "http", "https")
MLFLOW_WAIT_S = 60.0  # at the end, how long the training waits for MLflow to take the last figures
_MLFLOW_NAME = re.compile(r"[^\w\-. /]")  # what MLflow refuses in a metric or param name


def mlflow_uri(uri: str, cwd: Path) -> str:
    """``train.mlflow`` checked when the run is prepared: a scheme MLflow's skinny client can log
    to, the package there, a ``file:`` or ``sqlite:`` path made absolute against ``cwd`` (so
    ``--resume`` from another folder logs to the same store). Raises ConfigError in one line."""
    parts = urlsplit(uri)
    if parts.scheme not in MLFLOW_SCHEMES:
        raise ConfigError(
            f"train.mlflow: {uri!r} is not a tracking URI gridtrain logs to; use one of "
            f"{', '.join(s + ':' for s in MLFLOW_SCHEMES)} (file:./mlruns, http://host:5000)"
        )
    if importlib.util.find_spec("mlflow") is None:
        raise ConfigError(
            "train.mlflow needs MLflow's client: pip install 'gridtrain[mlflow]' "
            "(or uv sync --extra mlflow), or remove train.mlflow"
        )
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path:
            raise ConfigError(f"train.mlflow: {uri!r}: write a local folder, file:./mlruns")
        return (cwd / parts.path).resolve().as_uri()
    if parts.scheme == "sqlite" and uri.startswith("sqlite:///"):  # sqlite:///a.db is relative
        return "sqlite:///" + str((cwd / uri.removeprefix("sqlite:///")).resolve())
    return uri


class MlflowTracking:
    """The training as one MLflow run. Every call to MLflow is made by one thread of its own,
    in order; the first that fails (server unreachable, store unwritable) is logged once with
    the URI and switches MLflow off."""

    def __init__(self, uri: str, files: RunDir, spec: WorkerSpec) -> None:
        self.uri = uri
        self.run_dir = files.path
        if urlsplit(uri).scheme == "file":  # MLflow 3 asks for this opt-in to a file store
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self._calls: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._client: Any = None
        self._run_id = ""
        self._failed = False
        self._thread = threading.Thread(target=self._serve, name="mlflow", daemon=True)
        self._thread.start()
        experiment = str(spec.manifest.get("name") or "gridtrain")
        params = hyperparameters(spec)
        self._calls.put(lambda: self._start(experiment, params))

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            if self._failed:
                continue
            try:
                call()
            except Exception as err:  # MLflow raises anything; the training goes on
                self._failed = True
                log.warning("MLflow at %s: not logged any more: %s", self.uri, _one_line(err))

    def _start(self, experiment: str, params: Mapping[str, object]) -> None:
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self._client = client = MlflowClient(tracking_uri=self.uri)
        found = client.get_experiment_by_name(experiment)
        if found is not None:
            experiment_id = found.experiment_id
        else:
            try:
                experiment_id = client.create_experiment(experiment)
            except MlflowException:  # another run of the dataset created it meanwhile?
                found = client.get_experiment_by_name(experiment)
                if found is None:
                    raise
                experiment_id = found.experiment_id
        run = client.create_run(
            experiment_id,
            run_name=self.run_dir.name,
            tags={"gridtrain.run_dir": str(self.run_dir.resolve())},
        )
        self._run_id = run.info.run_id
        client.log_batch(
            self._run_id,
            params=[Param(_mlflow_name(k), str(v)[:6000]) for k, v in params.items()],
        )

    def scalars(self, step: int, values: Mapping[str, float], unix_time: float | None) -> None:
        stamp = int(1000 * (unix_time if unix_time is not None else time.time()))
        self._calls.put(lambda: self._log(step, dict(values), stamp))

    def _log(self, step: int, values: Mapping[str, float], stamp: int) -> None:
        from mlflow.entities import Metric

        metrics = [Metric(_mlflow_name(k), v, stamp, step) for k, v in values.items()]
        self._client.log_batch(self._run_id, metrics=metrics)

    def final(self, step: int, values: Mapping[str, float]) -> None:
        self.scalars(step, values, None)
        self._calls.put(self._artifacts)
        self.end("FINISHED")

    def _artifacts(self) -> None:
        run_dir = self.run_dir
        if (run_dir / "metrics.json").exists():
            self._client.log_artifact(self._run_id, str(run_dir / "metrics.json"))
        if (run_dir / "plots").is_dir():
            self._client.log_artifacts(self._run_id, str(run_dir / "plots"), "plots")

    def end(self, status: str, wait: float = MLFLOW_WAIT_S) -> None:
        """End the run with ``status``; wait up to ``wait`` seconds for MLflow to take what is
        queued (then the thread is left behind: it ends with the process)."""
        self._calls.put(lambda: self._client.set_terminated(self._run_id, status))
        self._calls.put(None)
        self._thread.join(wait)
        if self._thread.is_alive():
            log.warning(
                "MLflow at %s: no answer in %.0f s; the run there may lack its last figures",
                self.uri,
                wait,
            )


def _mlflow_name(name: str) -> str:
    return _MLFLOW_NAME.sub("_", name)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text if len(text) < 300 else text[:297] + "..."
