"""A study seen and steered from another shell: ``--detach``, ``tune status``, ``tune cancel``.

Layer: tune, process edge. The tuner holds the study's .tuner.lock and records itself in its
tuner.json (pid, host) for as long as it runs; each attempt's training does the same in its
run (.trial.lock, trial.json); ``gridtrain.liveness`` tells either alive. Everything else comes
from the journal, read only (the tuner stays its one writer). A record whose lock nobody holds
is a killed tuner: the study is stopped, and ``gridtrain tune --resume`` continues it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from gridtrain.errors import ConfigError, GridtrainError
from gridtrain.liveness import held
from gridtrain.spawn import QUIET_TENSORFLOW, last_line, spawn_gridtrain, wait_until_claimed
from gridtrain.tune.study import (
    ATTEMPT,
    StudyDir,
    TuneConfig,
    TuneError,
    ledger,
    open_study,
    quiet_optuna,
)
from gridtrain.tune.trial import TRIAL_CONFIG, TrialRun, stop_orphan, training_alive

TUNER_LOG = "tuner.log"
DETACH_WAIT = 120.0  # seconds for the detached tuner to claim the study (it imports the models)


# -- the tuner's record ------------------------------------------------------------------------


def read_record(files: StudyDir) -> dict[str, Any] | None:
    try:
        record = json.loads(files.tuner.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None


def tuner_state(files: StudyDir, record: dict[str, Any] | None) -> str:
    """running, elsewhere (another host: assumed running), gone (killed) or none (no record)."""
    if record is None:
        return "none"
    if record.get("host") != socket.gethostname():
        return "elsewhere"
    return "running" if held(files.lock) else "gone"


# -- --detach ------------------------------------------------------------------------------------


def detach(run_dir: Path) -> int:
    """Run the study in ``run_dir`` (prepared, or stopped) in a tuner of its own session, which
    no closed terminal takes down; its pid once it has claimed the study. Output: tuner.log."""
    files = StudyDir(run_dir.absolute())
    log_file = files.path / TUNER_LOG
    process = spawn_gridtrain(["tune", "--resume", str(files.path)], log_file, QUIET_TENSORFLOW)

    def claimed() -> bool:
        record = read_record(files)
        return record is not None and record.get("pid") == process.pid

    if wait_until_claimed(process, claimed, DETACH_WAIT) or process.poll() is None:
        return process.pid  # claimed, or slow to start but alive: status will show it
    raise TuneError(
        f"the detached tuner exited {process.returncode}: {last_line(log_file)} (see {log_file})"
    )


# -- status ------------------------------------------------------------------------------------


def _open(run_dir: Path) -> tuple[StudyDir, TuneConfig, Any]:
    from gridtrain.config import load_config

    files = StudyDir(run_dir.absolute())
    if not files.journal.exists():
        raise ConfigError(
            f"{run_dir}: no study here (no {files.journal.name}); start one with gridtrain tune "
            "-c CONFIG"
        )
    settings = TuneConfig.from_dict(load_config(files.config)["tune"])
    with quiet_optuna():
        study = open_study(settings, files, create=False)
    return files, settings, study


def study_status(run_dir: Path) -> dict[str, Any]:
    """Where the study in ``run_dir`` stands: the tuner, the trials by state, the best so far,
    and each training in flight with its epochs."""
    files, settings, study = _open(run_dir)
    record = read_record(files)
    state = tuner_state(files, record)
    found = ledger(study)
    counts = {"complete": 0, "pruned": 0, "failed": 0, "running": 0, "retry": 0}
    for search in found.values():
        counts[search.state(settings.retries)] += 1
    done = counts["complete"] + counts["pruned"] + counts["failed"]
    if state in ("running", "elsewhere"):
        tuner = "running"
    elif done >= settings.trials and not counts["running"]:
        tuner = "finished"
    else:
        tuner = "stopped"
    in_flight = [
        _attempt(files, settings, search.latest, tuner == "running")
        for search in found.values()
        if search.latest.state.name == "RUNNING"
    ]
    if tuner != "running":  # attempts a killed tuner left RUNNING in the journal: not followed
        counts["interrupted"] = counts.pop("running")
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    best = study.best_trial if complete else None
    status: dict[str, Any] = {
        "study": str(files.path),
        "tuner": tuner,
        "pid": None if record is None else record.get("pid"),
        "host": None if record is None else record.get("host"),
        "started": None if record is None else record.get("started"),
        "log": str(files.path / TUNER_LOG) if (files.path / TUNER_LOG).exists() else None,
        "objective": settings.objective,
        "direction": settings.direction,
        "trials": settings.trials,
        "done": done,
        "counts": counts,
        "attempts": len([t for t in study.get_trials(deepcopy=False) if t.state.name != "WAITING"]),
        "best": None
        if best is None
        else {
            "number": best.number,
            "value": best.value,
            "params": settings.space.decode(best.params),
        },
        "running": in_flight,
    }
    if tuner == "stopped":
        gone = f" (pid {record['pid']} on {record['host']} is gone)" if record else ""
        status["next"] = (
            f"the tuner stopped{gone}; continue with gridtrain tune --resume {files.path}"
        )
    elif tuner == "finished":
        status["next"] = f"train the best with gridtrain train -c {files.best}"
    return status


def _attempt(files: StudyDir, settings: TuneConfig, trial: Any, followed: bool) -> dict[str, Any]:
    run = TrialRun(trial.number, files.trial(trial.number))
    epochs = run.new_epochs(settings.metric)
    try:
        train = yaml.safe_load((run.files.path / TRIAL_CONFIG).read_text())["train"]
        total = train.get("epochs")
    except (FileNotFoundError, KeyError, TypeError, yaml.YAMLError):
        total = None
    value = epochs[-1][1] if epochs else None
    return {
        "number": trial.number,
        "origin": int(trial.user_attrs.get("origin", trial.number)),
        "attempt": int(trial.user_attrs.get(ATTEMPT, 0)) + 1,
        "params": settings.space.decode(trial.params),
        "epochs": len(epochs),
        "of": total,
        "value": value if value is None or math.isfinite(value) else str(value),
        "run_dir": str(run.files.path),
        "training": training_alive(run.files.path),
        "followed": followed,
    }


def format_status(status: dict[str, Any]) -> str:
    lines = [f"study {status['study']}"]
    if status["tuner"] == "running":
        since = (
            datetime.fromtimestamp(status["started"], UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            if status.get("started")
            else "?"
        )
        lines.append(f"  tuner: running (pid {status['pid']} on {status['host']}, since {since})")
    else:
        lines.append(f"  tuner: {status['tuner']}")
    n = status["counts"]
    flight = f"{n['running']} running" if "running" in n else f"{n['interrupted']} interrupted"
    lines.append(
        f"  trials {status['done']}/{status['trials']} done: {n['complete']} complete, "
        f"{n['pruned']} pruned, {n['failed']} failed; {flight}, {n['retry']} to retry "
        f"({status['attempts']} trainings)"
    )
    best = status["best"]
    if best is not None:
        params = ", ".join(f"{k}={json.dumps(v)}" for k, v in best["params"].items())
        lines.append(
            f"  best {status['objective']} {best['value']:.4f} (trial {best['number']}): {params}"
        )
    for attempt in status["running"]:
        of = f"/{attempt['of']}" if attempt["of"] else ""
        value = attempt["value"]
        shown = f", {status['objective']} {value:.4f}" if isinstance(value, float) else ""
        alive = "" if attempt["training"] else " (its training is not running)"
        if not attempt["followed"] and attempt["training"]:
            alive = " (still training, no tuner follows it)"
        params = ", ".join(f"{k}={json.dumps(v)}" for k, v in attempt["params"].items())
        lines.append(
            f"  trial {attempt['number']} (attempt {attempt['attempt']}): epoch "
            f"{attempt['epochs']}{of}{shown}{alive}; {params}"
        )
    if status.get("next"):
        lines.append(f"  {status['next']}")
    return "\n".join(lines)


# -- cancel ------------------------------------------------------------------------------------


def cancel(run_dir: Path, *, timeout: float = 300.0) -> str:
    """Stop the study: the tuner (which stops every training it runs, their drivers removing
    their jobs), then each training it left, through ``gridtrain cancel``'s own path (driver
    stopped, queued jobs removed). The study stays resumable with ``gridtrain tune --resume``."""
    from gridtrain.train.status import cancel as cancel_training

    files, _settings, study = _open(run_dir)
    in_flight = [
        files.trial(t.number) for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING"
    ]
    record = read_record(files)
    state = tuner_state(files, record)
    done = []
    if state == "elsewhere":
        assert record is not None
        raise GridtrainError(
            f"{run_dir}: its tuner runs on {record['host']} (pid {record['pid']}); run gridtrain "
            "tune cancel there"
        )
    if state == "running":
        assert record is not None
        pid = int(record["pid"])
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while tuner_state(files, read_record(files)) == "running":
            if time.monotonic() > deadline:
                raise TuneError(
                    f"the tuner (pid {pid}) did not stop within {timeout:g} s; see "
                    f"{files.path / TUNER_LOG}, or kill -9 {pid} and run gridtrain tune cancel "
                    "again"
                )
            time.sleep(0.2)
        done.append(f"stopped the tuner (pid {pid})")
    stopped = 0
    for trial_dir in in_flight:  # what the tuner did not stop (it was killed), or jobs left
        if not (trial_dir / "worker.json").exists():  # still preparing: no driver, no jobs yet
            stopped += stop_orphan(trial_dir)
            continue
        message = cancel_training(trial_dir, timeout=timeout)
        # a driver between preparing and recording itself is stopped as a process
        if stop_orphan(trial_dir) or "nothing to cancel" not in message:
            stopped += 1
    if stopped:
        done.append(f"stopped what {stopped} training(s) had left (drivers, queued jobs)")
    if not done:
        return (
            f"gridtrain tune cancel: {run_dir}: nothing to cancel (no tuner, no training running)"
        )
    return (
        f"gridtrain tune cancel: {'; '.join(done)}; continue with gridtrain tune --resume "
        f"{files.path}"
    )
