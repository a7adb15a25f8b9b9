"""The tuner (``gridtrain tune``): ask, train, report, tell; until the budget of trials is spent.

Layer: tune, orchestration. The loop keeps ``tune.parallel`` trainings going: for a free slot it
asks the study for a parameter set (a failed one's retry first), writes the trial's config and
starts a ``gridtrain train`` for it (``trial.TrialRun``); it reports every validated epoch to the
study, stops a trial the pruner rejects, and tells the study how each one ended. The study's
journal is the only state: ``--resume`` marks the attempts a killed tuner left running as failed
(stopping their trainings), retries them, and asks for the rest. A study directory removed or
moved under the tuner stops it and its trainings, writing nothing.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import signal
import socket
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import yaml

from gridtrain.errors import ConfigError
from gridtrain.files import write_text
from gridtrain.liveness import claim, release
from gridtrain.rundir import directory_identity
from gridtrain.tune.space import apply
from gridtrain.tune.study import (
    ATTEMPT,
    COUNTS,
    ORIGIN,
    REASON,
    StudyDir,
    TuneConfig,
    TuneError,
    ledger,
    open_study,
    quiet_optuna,
)
from gridtrain.tune.trial import EXIT_CONFIG_ERROR, STOP_GRACE, TrialRun, stop_orphan

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

EXIT_INTERRUPTED = 130
POLL_INTERVAL = 0.5
PROGRESS_INTERVAL = 30.0


def check_config(config: dict[str, Any]) -> TuneConfig:
    """The tune section as a record, every value of its space checked against the train
    section, the schema and the model: all before any training starts."""
    from gridtrain.config import validate_config

    if not (config.get("tune") or {}).get("space"):
        raise ConfigError(
            "tune.space is empty: name a train key to search, e.g. tune: {space: "
            "{learning_rate: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}}}"
        )
    tune = TuneConfig.from_dict(config["tune"])
    tune.space.check(config, lambda c: validate_config(copy.deepcopy(c)), check_model)
    manifest = Path(config["dataset"]["outdir"]) / "manifest.json"
    if not manifest.exists():
        raise ConfigError(f"{manifest}: no converted dataset; run gridtrain convert first")
    from gridtrain.data.manifest import load_manifest

    task = load_manifest(manifest).learning_task()
    if tune.objective == "val_auc" and not task.is_classifier:
        raise ConfigError(
            f"tune.objective: val_auc needs a classifier, but {manifest} is a "
            f"{task.describe()}; use tune.objective: val_loss"
        )
    return tune


def check_model(name: str, params: dict[str, Any]) -> None:
    """A model's parameters, checked without building it (a user model: its signature)."""
    from gridtrain.models import check_model_params
    from gridtrain.models.user import (
        absolute_model_name,
        check_signature,
        is_user_model,
        load_function,
    )

    check_model_params(name, params)
    if not is_user_model(name):
        return

    function = load_function(absolute_model_name(name, Path.cwd()))
    check_signature(name, function, params)


def tune(config: dict[str, Any], run_dir: Path | None = None) -> int:
    """``gridtrain tune -c CONFIG``: a new study in ``run_dir`` (default ``tune.run_dir``)."""
    files, settings = prepare(config, run_dir)
    return Tuner(files, config, settings, create=False).run()


def prepare(config: dict[str, Any], run_dir: Path | None = None) -> tuple[StudyDir, TuneConfig]:
    """A new study, checked and created (config.yaml, an empty journal), not yet run: what
    ``gridtrain tune`` does before its loop, and ``--detach`` before it starts the tuner."""
    settings = check_config(config)
    files = StudyDir((run_dir or Path(settings.run_dir)).absolute())
    if files.journal.exists():
        raise ConfigError(
            f"{files.path} holds a study already; continue it with `gridtrain tune --resume "
            f"{files.path}`, or choose another --run-dir"
        )
    files.path.mkdir(parents=True, exist_ok=True)
    write_text(files.config, yaml.safe_dump(config, sort_keys=False))
    open_study(settings, files, create=True)
    return files, settings


def resume(run_dir: Path) -> int:
    """``gridtrain tune --resume RUN_DIR``: the study of a stopped or killed tuner, continued."""
    from gridtrain.config import load_config

    files = StudyDir(run_dir.absolute())
    if not files.journal.exists():
        raise ConfigError(
            f"{run_dir} holds no study to resume (no {files.journal.name}); start one with "
            "gridtrain tune -c CONFIG"
        )
    config = load_config(files.config)
    return Tuner(files, config, check_config(config), create=False).run()


class Tuner:
    """The ask-and-tell loop over one study."""

    def __init__(
        self, files: StudyDir, config: dict[str, Any], settings: TuneConfig, *, create: bool
    ) -> None:
        self.files = files
        self.config = config
        self.settings = settings
        self.create = create
        self.running: dict[int, tuple[optuna.trial.Trial, TrialRun]] = {}
        self.stopping: list[TrialRun] = []  # pruned, their trainings still winding down
        self.interrupted = ""
        self.removed = False  # the study directory went away under the tuner
        self._home: tuple[int, int] | None = None  # its identity when the tuner claimed it
        self.started = time.monotonic()
        self._last_line = 0.0

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> int:
        lock = self._claim()
        self._home = directory_identity(self.files.path)
        signals = [signal.SIGINT, signal.SIGTERM]
        if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
            signals.append(signal.SIGHUP)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in signals}
        try:
            try:
                with quiet_optuna():
                    self.study = open_study(self.settings, self.files, create=self.create)
                    self._recover()
                    self._loop()
            finally:
                self._stop_all()
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
            from gridtrain.tune.outputs import summary, write_outputs

            with quiet_optuna():
                write_outputs(self.study, self.settings, self.files, self.config)
                wall = time.monotonic() - self.started
                text = summary(self.study, self.settings, self.files, wall)
        finally:  # the record goes last: while it is there, gridtrain tune status sees a tuner
            self.files.tuner.unlink(missing_ok=True)
            release(lock)
        self._end_progress()
        print(text)
        if self.interrupted:
            print(
                f"gridtrain tune: interrupted ({self.interrupted}); continue with: gridtrain tune "
                f"--resume {self.files.path}",
                file=sys.stderr,
            )
            return EXIT_INTERRUPTED
        return 0

    def _loop(self) -> None:
        while not self.interrupted:
            if directory_identity(self.files.path) != self._home:
                self.removed = True  # nothing to record into: stop the trainings, write nothing
                raise TuneError(
                    f"study directory {self.files.path} was removed or moved while tuning; "
                    "stopped its trainings"
                )
            self.stopping = [run for run in self.stopping if not run.stopped()]
            while self._busy() < self.settings.parallel and self._start_next():
                pass
            if not self._busy():
                return
            time.sleep(POLL_INTERVAL)
            for _number, (trial, run) in list(self.running.items()):
                self._follow(trial, run)
            self._progress()

    def _busy(self) -> int:
        """Slots taken: trainings followed, and pruned ones not yet exited (their workers or
        jobs still hold the capacity the next trial needs)."""
        return len(self.running) + len(self.stopping)

    def _stop_all(self) -> None:
        """The tuner stops (signal, error): every training stopped at once (each driver stops
        its workers or removes its jobs, in parallel), then the attempts marked failed, not
        counted against the retries, so that --resume trains them again."""
        runs = list(self.running.values())
        for _trial, run in runs:
            run.terminate()
        for run in self.stopping:
            run.terminate()
        deadline = time.monotonic() + STOP_GRACE
        for run in [run for _trial, run in runs] + self.stopping:
            run.finish_stop(deadline)
        self.stopping = []
        if self.removed:
            return
        for trial, run in runs:
            self._fail(trial, run, f"tuner stopped ({self.interrupted or 'error'})", counts=False)

    def _start_next(self) -> bool:
        """Start one attempt: a retry if one is due, else a new parameter set; False if none."""
        found = ledger(self.study)
        states = {origin: s.state(self.settings.retries) for origin, s in found.items()}
        retry = [o for o, state in states.items() if state == "retry"]
        waiting = [t for t in self.study.get_trials(deepcopy=False) if t.state.name == "WAITING"]
        if retry and not waiting:
            search = found[retry[0]]
            latest = search.latest
            self.study.enqueue_trial(
                dict(latest.params),
                user_attrs={ORIGIN: search.origin, ATTEMPT: len(search.attempts)},
            )
            log.info("trial %d: attempt %d", search.origin, len(search.attempts) + 1)
        elif not waiting and len(found) >= self.settings.trials:
            return False
        trial = self.study.ask()
        if ORIGIN not in trial.user_attrs:
            trial.set_user_attr(ORIGIN, trial.number)
            trial.set_user_attr(ATTEMPT, 0)
        values = self.settings.space.suggest(trial)
        run = TrialRun(trial.number, self.files.trial(trial.number))
        trial.set_user_attr("run_dir", str(run.files.path))
        config = {key: value for key, value in self.config.items() if key != "tune"}
        config["train"] = apply(self.config.get("train") or {}, values)
        run.start(config, self.settings.workers)
        self.running[trial.number] = (trial, run)
        self._progress(force=True)
        return True

    def _follow(self, trial: optuna.trial.Trial, run: TrialRun) -> None:
        for epoch, value in run.new_epochs(self.settings.metric):
            trial.report(value if math.isfinite(value) else math.inf, epoch)
            if trial.should_prune():
                log.info("trial %d: pruned after epoch %d", trial.number, epoch + 1)
                run.terminate()  # not waited for here: the other trials are followed meanwhile
                self.stopping.append(run)
                trial.set_user_attr("epochs", run.epochs_trained())
                trial.set_user_attr("wall_time_s", round(time.monotonic() - run.started, 1))
                self.study.tell(trial, state=_state("PRUNED"))
                del self.running[trial.number]
                self._progress(force=True)
                return
        returncode = run.poll()
        if returncode is None:
            return
        run.new_epochs(self.settings.metric)
        value = run.result(self.settings.metric)
        if returncode != 0:
            self._fail(trial, run, run.failure(), final=returncode == EXIT_CONFIG_ERROR)
        elif not math.isfinite(value):
            self._fail(
                trial, run, f"the trained model's {self.settings.objective} is {value}", final=True
            )
        else:
            trial.set_user_attr("epochs", run.epochs_trained())
            trial.set_user_attr("wall_time_s", round(time.monotonic() - run.started, 1))
            self.study.tell(trial, value)
        self.running.pop(trial.number, None)
        self._progress(force=True)

    def _fail(
        self,
        trial: optuna.trial.Trial,
        run: TrialRun,
        reason: str,
        *,
        counts: bool = True,
        final: bool = False,
    ) -> None:
        log.warning("trial %d failed: %s (see %s)", trial.number, reason, run.files.driver_log)
        trial.set_user_attr(REASON, reason)
        trial.set_user_attr(COUNTS, counts)
        trial.set_user_attr("final", final)
        trial.set_user_attr("epochs", run.epochs_trained())
        trial.set_user_attr("wall_time_s", round(time.monotonic() - run.started, 1))
        self.study.tell(trial, state=_state("FAIL"))
        self.running.pop(trial.number, None)

    # -- resuming ------------------------------------------------------------------------------

    def _recover(self) -> None:
        """Attempts a killed tuner left RUNNING: a training that had finished (metrics.json
        written) is told complete; any other is stopped and marked failed, not counted against
        the retry budget, so that the loop trains it again."""
        import optuna

        for frozen in self.study.get_trials(deepcopy=False, states=(_state("RUNNING"),)):
            run = TrialRun(frozen.number, self.files.trial(frozen.number))
            if stop_orphan(run.files.path):
                log.info("trial %d: stopped the training a killed tuner left", frozen.number)
            trial = optuna.trial.Trial(self.study, frozen._trial_id)
            for epoch, value in run.new_epochs(self.settings.metric):
                if epoch not in frozen.intermediate_values:
                    trial.report(value if math.isfinite(value) else math.inf, epoch)
            value = run.result(self.settings.metric)
            trial.set_user_attr("epochs", run.epochs_trained())
            if math.isfinite(value):
                log.info("trial %d: finished while no tuner ran", frozen.number)
                self.study.tell(trial, value)
                continue
            trial.set_user_attr(REASON, "the tuner stopped while it ran")
            trial.set_user_attr(COUNTS, False)
            self.study.tell(trial, state=_state("FAIL"))

    # -- the edges -----------------------------------------------------------------------------

    def _claim(self) -> int:
        fd = claim(self.files.lock)
        if fd is None:
            raise TuneError(
                f"{self.files.path} is being tuned by another tuner (see {self.files.tuner}); "
                "stop it first"
            )
        write_text(self.files.tuner, json.dumps(tuner_record()) + "\n")
        return fd

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        del frame
        self.interrupted = signal.Signals(signum).name

    def _progress(self, force: bool = False) -> None:
        tty = sys.stderr.isatty()
        now = time.monotonic()
        if not force and now - self._last_line < (1.0 if tty else PROGRESS_INTERVAL):
            return
        self._last_line = now
        from gridtrain.tune.outputs import progress_line

        line = progress_line(self.study, self.settings, now - self.started)
        print(f"\r{line}\x1b[K" if tty else line, end="" if tty else "\n", file=sys.stderr)

    def _end_progress(self) -> None:
        if sys.stderr.isatty() and self._last_line:
            print(file=sys.stderr)


def tuner_record() -> dict[str, Any]:
    """tuner.json: who tunes the study (whether it still does: the study's lock is held)."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": time.time(),
        "command": sys.argv,
    }


def _state(name: str) -> optuna.trial.TrialState:
    from optuna.trial import TrialState

    return TrialState[name]
