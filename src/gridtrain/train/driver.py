"""The training driver (``gridtrain train``): one run from config to trained model and report.

Layer: train, orchestration. Checks the config against the manifest and builds the model once
(so a bad config fails before any process starts), serves the center and the shard leases from
an in-process parameter server, has the executor start the workers, shows progress, checkpoints,
and at the end evaluates the final model on the validation shards and writes the run directory
(every file of it is named in ``gridtrain.rundir``).

Ctrl-C (SIGINT), SIGTERM or SIGHUP (the terminal closed) stops the workers (their leases go
back), writes checkpoint.npz and state.json and exits 130; ``gridtrain train --resume RUN_DIR``
continues from there. ``--detach`` runs the driver in a session of its own instead, which no
terminal takes down; ``gridtrain status`` and ``gridtrain cancel`` find it through driver.json.
A run directory removed (or moved) under a running driver stops it and its workers within a
second: nothing could be written or resumed any more, and a detached driver would otherwise hold
the CPUs and the pool for nobody.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

import numpy as np
import yaml

from gridtrain.data.folds import fold_manifest
from gridtrain.data.manifest import Manifest, load_manifest
from gridtrain.errors import ConfigError, GridtrainError
from gridtrain.files import write_text
from gridtrain.liveness import claim, held, release
from gridtrain.paths import below
from gridtrain.ps import auth
from gridtrain.ps.address import write_address_file
from gridtrain.ps.center import CenterStore
from gridtrain.ps.checkpoint import read_checkpoint, read_initial_weights, write_initial_weights
from gridtrain.ps.config import ServerConfig
from gridtrain.ps.leases import EpochSnapshots, LeaseBook, LeasePlan, LeaseState
from gridtrain.ps.server import ParameterServer
from gridtrain.rundir import RunDir, directory_identity
from gridtrain.spawn import last_line, spawn_gridtrain, wait_until_claimed
from gridtrain.train.executor import Executor, Launch
from gridtrain.train.settings import (
    TrainConfig,
    WorkerSpec,
    select_inputs,
)
from gridtrain.train.tracking import Tracking, mlflow_uri

log = logging.getLogger(__name__)

EXECUTORS = ("local", "condor")
CHECKPOINT_INTERVAL = 30.0
STOP_GRACE = 60.0
EXIT_INTERRUPTED = 130


def make_executor(name: str, run_dir: Path, condor_profile: str = "local-pool") -> Executor:
    """The executor called ``name`` for the run in ``run_dir``."""
    if name == "local":
        from gridtrain.train.local_executor import LocalExecutor

        return LocalExecutor()
    if name == "condor":
        from gridtrain.condor.site import load_profile
        from gridtrain.train.condor_executor import CondorExecutor

        return CondorExecutor(load_profile(condor_profile), run_dir)
    raise ConfigError(f"executor {name!r} is unknown; choose one of {', '.join(EXECUTORS)}")


def attach_executor(name: str, run_dir: Path) -> Executor:
    """The executor of an existing run, from a new process: for ``status`` and ``cancel``."""
    if name == "condor":
        from gridtrain.train.condor_executor import CondorExecutor

        return CondorExecutor.attach(run_dir)
    return make_executor(name, run_dir)


class TrainingFailed(GridtrainError, RuntimeError):
    """The run could not complete; the message says where to look."""


# -- preparation: everything checked before any process starts ----------------------------------


def _shard_locations(
    manifest: Manifest, manifest_path: str, stage_url: str | None = None
) -> dict[str, str]:
    """Where each shard of the manifest lives: an absolute path or a URL, by shard name.

    With ``stage.url`` set, the workers read the copies pushed there (``gridtrain stage push``,
    rule stage): what a job on a pool without the submit host's file system can reach.
    """
    if stage_url:
        from gridtrain.stage.dataset import shard_name
        from gridtrain.stage.location import parse_location

        pushed = parse_location(stage_url)  # where `stage push` put each shard: by file name
        return {
            entry.path: pushed.join(shard_name(entry.path)).url
            for entries in manifest.shards.values()
            for entry in entries
        }
    base = os.path.dirname(os.path.abspath(manifest_path))
    return {
        entry.path: below(base, entry.path)
        for entries in manifest.shards.values()
        for entry in entries
    }


def prepare(
    config: dict[str, Any],
    run_dir: Path,
    workers: int | None,
    fold: int | None = None,
    *,
    on_checked: Callable[[], None] | None = None,
    build: Callable[[WorkerSpec], list[np.ndarray] | None] | None = None,
) -> RunDir:
    """Check the config, build the model once, and write config, worker spec and initial state.

    ``fold``: the fold this run trains in a k-fold training (``train.folds``; train/kfold.py):
    its manifest lists every shard for training and for validation, and its readers keep the
    fold's rows for each role. ``on_checked`` is called once everything that can be checked
    without Keras passed, before the model is built (``train`` starts its workers there: a
    refused config costs no worker process). ``build`` returns the initial weights built
    elsewhere (``train`` asks its first prewarmed worker: train/helper.py), or None for the
    driver to build them itself."""
    from gridtrain.models import check_model_params
    from gridtrain.train.helper import initial_weights

    settings = TrainConfig.from_dict(config["train"]).with_model_path_resolved(Path.cwd())
    if workers is not None:
        if workers < 1:
            raise ConfigError(f"--workers {workers}: start at least one worker")
        settings = TrainConfig(**{**settings.__dict__, "workers": workers})
    if fold is not None:
        settings = TrainConfig(**{**settings.__dict__, "fold": fold})
    settings.algorithm_config()  # raises ConfigError for bad algorithm settings
    if settings.mlflow is not None:  # a bad URI refused now; recorded with file: made absolute
        settings = TrainConfig(
            **{**settings.__dict__, "mlflow": mlflow_uri(settings.mlflow, Path.cwd())}
        )
    if settings.executor == "condor":  # a bad profile or a dying grid proxy: refuse now
        from gridtrain.condor.proxy import check_proxy
        from gridtrain.condor.site import load_profile

        check_proxy(load_profile(settings.condor_profile))
    manifest_path = os.path.join(config["dataset"]["outdir"], "manifest.json")
    manifest = load_manifest(manifest_path)
    features, groups = select_inputs(manifest, settings.features, manifest_path)
    if not manifest.shards.get("train"):
        raise ConfigError(f"{manifest_path}: the dataset has no training shards; convert again")
    check_weights(manifest, settings.negative_weights, manifest_path)
    if settings.init_from is not None:  # recorded absolute: a resumed run reads initial.npz
        settings = TrainConfig(
            **{**settings.__dict__, "init_from": str(Path(settings.init_from).resolve())}
        )
    files = RunDir(run_dir)
    if files.spec.exists():
        raise ConfigError(
            f"{run_dir} holds a run already; continue it with `gridtrain train --resume "
            f"{run_dir}`, or choose another --run-dir"
        )
    check_model_params(settings.model, settings.model_params)
    if on_checked is not None:
        on_checked()
    recorded = json.loads(manifest.to_json())
    spec = WorkerSpec(
        recorded if fold is None else fold_manifest(recorded),
        manifest_path,
        settings,
        features,
        groups,
        _shard_locations(manifest, manifest_path, (config.get("stage") or {}).get("url")),
        dict(config.get("stage", {})),
    )
    weights = build(spec) if build is not None else None
    if weights is None:
        weights = initial_weights(spec)  # the model built here: a bad config fails now
    run_dir.mkdir(parents=True, exist_ok=True)
    used = json.loads(json.dumps(config))
    used["train"]["workers"] = settings.workers
    used["train"]["model"]["name"] = settings.model
    write_text(files.config, yaml.safe_dump(used, sort_keys=False))
    spec.write(files.spec)
    auth.write_secret_file(files.secret, auth.new_secret())
    write_initial_weights(files.initial, weights)
    return files


def check_weights(manifest: Manifest, negative_weights: str, manifest_path: str) -> None:
    """Warn once, naming the share, when the dataset has negative event weights; refuse a class
    balance that the chosen treatment of them makes impossible (a class summing to <= 0)."""
    from gridtrain.data.manifest import class_factors
    from gridtrain.errors import ConversionError
    from gridtrain.train.targets import negative_weight_warning, treat_negative

    treat_negative([], negative_weights)  # an unknown choice is a ConfigError
    warning = negative_weight_warning(manifest.weights, negative_weights)
    if warning:
        log.warning("%s: %s", manifest_path, warning)
    task = manifest.learning_task()
    if task.is_classifier and task.balance and manifest.weights:
        try:
            class_factors(manifest.weights, task.classes, task.balance, negative_weights)
        except ConversionError as err:
            raise ConfigError(f"{manifest_path}: {err}") from None


# -- the run -------------------------------------------------------------------------------------


class JsonLines:
    """An append-only JSON-lines file, flushed per line (``tail -f`` works)."""

    def __init__(self, path: Path) -> None:
        self._handle: TextIO = open(path, "a", encoding="utf-8")  # noqa: SIM115
        self.last: dict[str, Any] = {}

    def __call__(self, record: dict[str, Any]) -> None:
        self.last = record
        self._handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


class TrainingRun:
    """One training run in ``files``; ``execute`` returns the exit code."""

    def __init__(
        self, files: RunDir, executor: Executor | None = None, *, plots: bool = True
    ) -> None:
        self.files = files
        self.plots = plots
        self.spec = WorkerSpec.read(files.spec)
        self.settings = self.spec.settings
        self.executor = executor or make_executor(
            self.settings.executor, files.path, self.settings.condor_profile
        )
        self.interrupted = ""
        self._removed = False  # the run directory went away under the running driver
        self._tracking: Tracking | None = None
        self._stop_requested = False
        self._last_line = 0.0

    # -- set-up --------------------------------------------------------------------------------

    def _state(self) -> tuple[LeaseState | None, dict[str, Any]]:
        if not self.files.state.exists():
            return None, {}
        data = json.loads(self.files.state.read_text())
        return LeaseState.from_dict(data["leases"]), data

    def _store(self, resumed: bool) -> CenterStore:
        algorithm = self.settings.algorithm_config()
        if resumed and self.files.checkpoint.exists():
            return CenterStore.resume(read_checkpoint(self.files.checkpoint), algorithm)
        return CenterStore(read_initial_weights(self.files.initial), algorithm)

    def _write_state(self, book: LeaseBook, server: ParameterServer, wall: float) -> None:
        counts = Counter({int(k): v for k, v in self._previous.get("staleness", {}).items()})
        counts.update(server.metrics.staleness_counts)
        state = {
            "leases": book.snapshot_state(),
            "wall_time_s": round(wall, 3),
            "staleness": {str(k): v for k, v in sorted(counts.items())},
            "refused": self._previous.get("refused", 0) + server.metrics.refused,
        }
        write_text(self.files.state, json.dumps(state, indent=1))

    # -- running -------------------------------------------------------------------------------

    def execute(self) -> int:
        try:
            lock = claim_driver(self.files)
            try:
                return self._execute()
            finally:
                self.files.driver.unlink(missing_ok=True)
                release(lock)
        finally:
            self.executor.discard_prewarmed()  # the ones a refused or finished run did not use

    def _execute(self) -> int:
        """Resume or start the run: plan its leases, serve its center, start its workers, watch
        them to the end, wind down in order, then write the outputs (or say how to resume)."""
        state, self._previous = self._state()
        resumed = state is not None
        if state is not None and state.stopped and not state.stopped.startswith("interrupted"):
            log.info(
                "run %s already finished (%s); writing outputs", self.files.path, state.stopped
            )
            return self.finalize()
        if state is not None:
            state.stopped = ""
        store = self._store(resumed)
        snapshots = EpochSnapshots(store, self._on_best)
        lease_log, history = JsonLines(self.files.leases), JsonLines(self.files.history)
        self._tracking = tracking = Tracking(self.files, self.spec)

        def journal(record: dict[str, Any]) -> None:  # history.jsonl, and TensorBoard's curves
            history(record)
            tracking(record)

        offset = float(self._previous.get("wall_time_s", 0.0))
        book = self._lease_book(state, snapshots, lease_log, journal, offset)
        server, address = self._start_server(store, book, snapshots)
        started = time.monotonic()
        home = directory_identity(self.files.path)
        previous_handlers = self._trap_signals()
        failure = ""
        try:
            launch = Launch(
                self.files.spec,
                address,
                self.files.secret,
                self.files.logs,
                self.files.path.name,
                self.settings.backend,
            )
            self.executor.start(launch, self.settings.workers)
            failure = self._watch(book, server, history, started, offset, home)
        except BaseException as err:  # recorded as an interruption, so --resume continues
            failure = f"driver error: {err}"
            raise
        finally:
            self._wind_down(book, server, failure, started, offset)
            lease_log.close()
            history.close()
            if failure or self.interrupted:
                tracking.close()
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
            self._end_progress()
        return self._outcome(failure)

    def _lease_book(
        self,
        state: LeaseState | None,
        snapshots: EpochSnapshots,
        lease_log: JsonLines,
        history: Callable[[dict[str, Any]], None],
        offset: float,
    ) -> LeaseBook:
        """The run's leases: every shard once per epoch, early stopping, the saved state."""
        entries = self.spec.manifest["shards"]
        plan = LeasePlan(
            train_shards=[entry["path"] for entry in entries.get("train", [])],
            validation_shards=[entry["path"] for entry in entries.get("validation", [])],
            epochs=self.settings.epochs,
            timeout=self.settings.lease_timeout,
            patience=self.settings.patience,
            min_delta=self.settings.min_delta,
            seed=self.settings.seed,
        )
        return LeaseBook(
            plan,
            state=state,
            lease_log=lease_log,
            history=history,
            on_epoch_end=snapshots.take,
            on_validated=snapshots.validated,
            time_offset=offset,
        )

    def _start_server(
        self, store: CenterStore, book: LeaseBook, snapshots: EpochSnapshots
    ) -> tuple[ParameterServer, str]:
        """The parameter server, listening; returns it and the HOST:PORT its workers dial (also
        written to ps.address, for workers added by hand)."""
        bind, advertised = self.executor.ps_hosts()
        server = ParameterServer(
            store,
            auth.read_secret_file(self.files.secret),
            ServerConfig(
                host=bind,
                checkpoint_path=self.files.checkpoint,
                metrics_log=self.files.ps_metrics,
                metrics_interval=5.0,
            ),
            leases=book,
            snapshots=snapshots,
        )
        _, port = server.start()
        write_address_file(self.files.address, advertised, port)
        return server, f"{advertised}:{port}"

    def _trap_signals(self) -> dict[int, Any]:
        """Ctrl-C, SIGTERM (and SIGHUP unless nohup ignores it) stop the run in order; returns
        the handlers they replace."""
        signals = [signal.SIGINT, signal.SIGTERM]
        if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:  # nohup's choice stands
            signals.append(signal.SIGHUP)
        return {sig: signal.signal(sig, self._on_signal) for sig in signals}

    def _wind_down(
        self, book: LeaseBook, server: ParameterServer, failure: str, started: float, offset: float
    ) -> None:
        """Stop in order: the leases, the workers (a finished run's leave on their own), the
        server with its last checkpoint, then the state that --resume reads."""
        book.stop(self.interrupted or "driver stopped")
        if not self.interrupted and not failure:
            deadline = time.monotonic() + self.executor.leave_grace
            while self.executor.running() and time.monotonic() < deadline:
                self.executor.poll()
                time.sleep(0.1)
        self.executor.stop(STOP_GRACE if not self.interrupted else 30.0)
        server.stop(checkpoint=not self._removed)
        wall = offset + time.monotonic() - started
        if self.interrupted or failure:
            book.state.stopped = f"interrupted: {self.interrupted or failure}"
        if not self._removed:
            self._write_state(book, server, wall)

    def _outcome(self, failure: str) -> int:
        """A failed run raises; an interrupted one says how to resume; a finished one writes its
        model, metrics and plots."""
        if failure:
            raise TrainingFailed(failure)
        if self.interrupted:
            print(
                f"gridtrain train: interrupted ({self.interrupted}); checkpoint written, continue "
                f"with: gridtrain train --resume {self.files.path}",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
        return self.finalize()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        del frame
        self.interrupted = signal.Signals(signum).name

    def _on_best(self, epoch: int, version: int, weights: list[np.ndarray]) -> None:
        del epoch, version  # the lease state records the best epoch
        write_initial_weights(self.files.best, weights)

    def _watch(
        self,
        book: LeaseBook,
        server: ParameterServer,
        history: JsonLines,
        started: float,
        offset: float,
        home: tuple[int, int] | None,
    ) -> str:
        """Wait for the run to finish; returns a failure message, or '' on success/interrupt."""
        budget = 2 * self.settings.workers  # restarts in all, for crashed (not stopped) workers
        next_checkpoint = time.monotonic() + CHECKPOINT_INTERVAL
        while not self.interrupted:
            if book.wait_done(0.5):
                return ""
            if directory_identity(self.files.path) != home:
                self._removed = True
                return (
                    f"run directory {self.files.path} was removed or moved while training; "
                    "stopped its workers (nothing is left to write to or resume)"
                )
            for slot in self.executor.poll():
                if book.done:
                    break
                log.warning(
                    "%s exited with %s before the run finished; see %s",
                    slot.name,
                    slot.returncode,
                    self.executor.log_file(slot),
                )
                if budget <= 0:
                    continue
                budget -= 1
                log.warning("restarting %s (%d restarts left)", slot.name, budget)
                self.executor.restart(slot)
            if self.executor.running() == 0 and not book.done:
                where = self.executor.log_dir()
                return (
                    f"all workers exited before the run finished; see the logs in {where} "
                    f"(resume with gridtrain train --resume {self.files.path})"
                )
            if time.monotonic() >= next_checkpoint:
                server.checkpoint()
                self._write_state(book, server, offset + time.monotonic() - started)
                next_checkpoint = time.monotonic() + CHECKPOINT_INTERVAL
            self._progress(book, server, history, offset + time.monotonic() - started)
        return ""

    def _progress(
        self, book: LeaseBook, server: ParameterServer, history: JsonLines, wall: float
    ) -> None:
        tty = sys.stderr.isatty()
        now = time.monotonic()
        if now - self._last_line < (0.5 if tty else 15.0):
            return
        self._last_line = now
        progress = book.progress()
        status = server.metrics.snapshot(server.store.version)
        parts = [
            f"epoch {progress['epoch'] + 1}/{progress['epochs']}",
            f"shards {progress['shards_done']}/{progress['shards_total']}",
            f"{status['updates_per_s']:.1f} updates/s",
            f"workers {status['workers_connected']}",
        ]
        summary = self.executor.summary()
        if summary:
            parts.append(summary)
        last = history.last
        if last.get("type") == "shard" and "loss" in last:
            parts.append(f"loss {last['loss']:.4f}")
        latest = progress["latest_validation"]
        if latest and "auc" in latest:
            parts.append(f"val AUC {latest['auc']:.4f} (epoch {latest['epoch'] + 1})")
        elif latest and "loss" in latest:  # a regression
            parts.append(f"val loss {latest['loss']:.4f} (epoch {latest['epoch'] + 1})")
        parts.append(f"{wall:.0f} s")
        line = "train: " + " | ".join(parts)
        print(f"\r{line}\x1b[K" if tty else line, end="" if tty else "\n", file=sys.stderr)

    def _end_progress(self) -> None:
        if sys.stderr.isatty() and self._last_line:
            print(file=sys.stderr)

    # -- outputs -------------------------------------------------------------------------------

    def finalize(self) -> int:
        """Evaluate the final model on the validation shards; write model, metrics, plots."""
        from gridtrain.train.finalize import write_outputs

        if self.executor.finalize_run(self.files.path, self.plots):  # in a worker's process
            metrics = json.loads(self.files.metrics.read_text())
        else:
            metrics = write_outputs(self.files, self.spec, plots=self.plots)
        if self._tracking is not None:  # this driver trained it: the final figures tracked
            self._tracking.final(metrics)
        if "targets" in metrics:  # a regression: the targets' RMSE in physical units
            headline = "validation " + ", ".join(
                f"{name} RMSE {figures['rmse']:.4g}" for name, figures in metrics["targets"].items()
            )
        else:
            headline = f"validation AUC {metrics.get('auc', float('nan')):.4f}"
        print(
            f"gridtrain train: {headline}, loss "
            f"{metrics.get('loss', float('nan')):.4f} after {metrics['epochs']} epochs in "
            f"{metrics['wall_time_s']:.0f} s; results in {self.files.path} "
            f"(model.keras, metrics.json, plots/)"
        )
        return 0


def train(
    config: dict[str, Any],
    run_dir: Path | None = None,
    workers: int | None = None,
    executor: str | None = None,
    *,
    plots: bool = True,
) -> int:
    """``gridtrain train``: prepare a new run directory and execute it."""
    if executor is not None:
        config["train"]["executor"] = executor
    run_dir = run_dir or Path(config["train"]["run_dir"])
    local: list[Executor] = []

    def prewarm() -> None:  # the config passed the checks: workers import while the model builds
        prewarmed = _prewarmed_local(config["train"], workers, run_dir.absolute().name)
        if prewarmed is not None:
            local.append(prewarmed)

    def build(spec: WorkerSpec) -> list[np.ndarray] | None:
        return local[0].initial_weights(spec) if local else None

    try:
        files = prepare(config, run_dir, workers, on_checked=prewarm, build=build)
    except BaseException:
        for prewarmed in local:
            prewarmed.discard_prewarmed()
        raise
    return TrainingRun(files, local[0] if local else None, plots=plots).execute()


def _prewarmed_local(
    section: dict[str, Any], workers: int | None, run_name: str
) -> Executor | None:
    """For the local executor: the executor, its workers already importing Keras's backend
    while ``prepare`` builds the model (a training's start costs one import, not two in a
    row)."""
    try:
        settings = TrainConfig.from_dict(section)
    except (ConfigError, TypeError, ValueError, KeyError):
        return None  # prepare says what is wrong
    if settings.executor != "local":
        return None
    local = make_executor("local", Path())
    local.prewarm(workers if workers is not None else settings.workers, run_name, settings.backend)
    return local


def resume(run_dir: Path, *, plots: bool = True) -> int:
    """``gridtrain train --resume RUN_DIR``."""
    files = RunDir(run_dir)
    if not files.spec.exists():
        raise ConfigError(
            f"{run_dir} holds no run to resume (no {files.spec.name}); start one with "
            "gridtrain train"
        )
    run = TrainingRun(files, plots=plots)
    if resumable(run_dir):
        run.executor.prewarm(run.settings.workers, files.path.name, run.settings.backend)
    return run.execute()


DRIVER_LOCK = ".driver.lock"


def claim_driver(files: RunDir) -> int:
    """Become the run's driver: a lock held for life (the kernel drops it when we die).

    Returns the lock's file descriptor; refuses (``ConfigError``) while another driver holds it,
    or while driver.json names a driver on another host, whose lock this host cannot see.
    """
    fd = claim(files.path / DRIVER_LOCK)
    if fd is None:
        running = _driver_record(files) or {"pid": "?", "host": socket.gethostname()}
        raise ConfigError(
            f"{files.path} is being trained by pid {running['pid']} on {running['host']}; "
            f"follow it with `gridtrain status {files.path}` or stop it with `gridtrain cancel "
            f"{files.path}`"
        )
    elsewhere = _driver_record(files)
    if elsewhere is not None and elsewhere.get("host") != socket.gethostname():
        release(fd)
        raise ConfigError(
            f"{files.path} is being trained by pid {elsewhere['pid']} on {elsewhere['host']}; "
            f"stop it there, or, if that host is gone, delete {files.driver} and resume"
        )
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    write_text(files.driver, json.dumps(record) + "\n")
    return fd


def _driver_record(files: RunDir) -> dict[str, Any] | None:
    try:
        return dict(json.loads(files.driver.read_text()))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def running_driver(files: RunDir) -> dict[str, Any] | None:
    """driver.json when its driver is alive: it holds the run's lock (on another host: assumed)."""
    record = _driver_record(files)
    if record is None:
        return None
    if record.get("host") != socket.gethostname():
        return record
    return record if held(files.path / DRIVER_LOCK) else None


def detach(run_dir: Path) -> int:
    """Run the prepared (or interrupted) run in ``run_dir`` in a session of its own; its pid.

    The driver is a new ``gridtrain train --resume RUN_DIR`` process, not a fork: this process
    has TensorFlow's threads, which a fork would not carry over. Its output goes to driver.log.
    """
    files = RunDir(run_dir.absolute())
    process = spawn_gridtrain(["train", "--resume", str(files.path)], files.driver_log)

    def claimed() -> bool:
        record = running_driver(files)
        return record is not None and record.get("pid") == process.pid

    wait_until_claimed(process, claimed, 30.0)  # until it has claimed the run (or failed to)
    if process.poll() is not None:
        raise TrainingFailed(
            f"the detached driver exited {process.returncode}: {last_line(files.driver_log)} "
            f"(see {files.driver_log})"
        )
    return process.pid


def resumable(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run that was interrupted (and not finished)."""
    files = RunDir(run_dir)
    if not (files.spec.exists() and files.state.exists()):
        return files.spec.exists()
    state = json.loads(files.state.read_text())
    return str(state["leases"].get("stopped", "")).startswith("interrupted")
