"""One attempt: a ``gridtrain train`` subprocess in its own run directory, followed and stopped.

Layer: tune, process edge. The training is exactly what ``gridtrain train -c trial.yaml
--run-dir DIR`` does (its own parameter server, its workers through the configured executor);
this module only starts it, reads its per-epoch validation from history.jsonl as it comes, and
stops it with SIGTERM (the driver then stops its workers or removes its HTCondor jobs). The
process runs in a session of its own, so a Ctrl-C meant for the tuner reaches the tuner alone,
and holds its run's .trial.lock from its start to its exit (``gridtrain.liveness``): that is how
another process tells it alive, before its driver has claimed the run and after.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from gridtrain.files import write_text
from gridtrain.liveness import held
from gridtrain.rundir import RunDir
from gridtrain.spawn import QUIET_TENSORFLOW, spawn_gridtrain

TRIAL_CONFIG = "trial.yaml"
TRIAL_RECORD = "trial.json"  # the training process: pid, host, command
TRIAL_LOCK = ".trial.lock"  # held by the training process for its life
STOP_GRACE = 90.0
EXIT_CONFIG_ERROR = 2  # gridtrain's exit code for a bad config: retrying cannot help


class TrialRun:
    """One training of one parameter set."""

    def __init__(self, number: int, run_dir: Path) -> None:
        self.number = number
        self.files = RunDir(run_dir)
        self.process: subprocess.Popen[bytes] | None = None
        self.started = time.monotonic()
        self._history_offset = 0
        self.epochs: dict[int, float] = {}  # epoch -> validation value, as reported
        self._kill_at = math.inf  # when a terminated training is killed

    def start(self, config: dict[str, Any], workers: int) -> None:
        self.files.path.mkdir(parents=True, exist_ok=True)
        trial_config = self.files.path / TRIAL_CONFIG
        write_text(trial_config, yaml.safe_dump(config, sort_keys=False))
        arguments = ["train", "-c", str(trial_config), "--run-dir", str(self.files.path)]
        arguments += ["--workers", str(workers)]
        self.process = spawn_gridtrain(
            arguments,
            self.files.driver_log,
            QUIET_TENSORFLOW,
            holding=self.files.path / TRIAL_LOCK,
        )
        command = [sys.executable, "-m", "gridtrain", *arguments]
        record = {"pid": self.process.pid, "host": socket.gethostname(), "command": command}
        write_text(self.files.path / TRIAL_RECORD, json.dumps(record) + "\n")
        self.started = time.monotonic()

    def poll(self) -> int | None:
        assert self.process is not None
        return self.process.poll()

    def new_epochs(self, key: str) -> list[tuple[int, float]]:
        """Validated epochs not seen before: (epoch, the value of ``val_<key>``)."""
        try:
            with open(self.files.history, "rb") as handle:
                handle.seek(self._history_offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]  # a line still being written waits
        self._history_offset += len(complete)
        found = []
        for line in complete.decode().splitlines():
            record = json.loads(line)
            if record.get("type") == "epoch" and f"val_{key}" in record:
                epoch, value = int(record["epoch"]), float(record[f"val_{key}"])
                if epoch not in self.epochs:
                    self.epochs[epoch] = value
                    found.append((epoch, value))
        return found

    def stop(self, grace: float = STOP_GRACE) -> None:
        """SIGTERM to the driver (it checkpoints and stops its workers); SIGKILL after grace."""
        self.terminate()
        self.finish_stop(time.monotonic() + grace)

    def terminate(self) -> None:
        """SIGTERM to the driver, not waiting: it stops its workers (or removes their jobs)."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGTERM)
        self._kill_at = time.monotonic() + STOP_GRACE

    def stopped(self) -> bool:
        """Whether a terminated training has exited; one past its grace is killed first."""
        if self.process is None or self.process.poll() is not None:
            return True
        if time.monotonic() >= self._kill_at:
            self.finish_stop(0.0)
        return self.process.poll() is not None

    def finish_stop(self, deadline: float) -> None:
        """Wait until ``deadline`` for the terminated driver, then SIGKILL its session."""
        process = self.process
        if process is None:
            return
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # driver and local workers
            process.wait()

    def result(self, key: str) -> float:
        """The objective of the trained model (metrics.json); nan when it has none."""
        try:
            metrics = json.loads(self.files.metrics.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return math.nan
        value = metrics.get(key)
        return float(value) if isinstance(value, int | float) else math.nan

    def epochs_trained(self) -> int:
        return len(self.epochs)

    def failure(self) -> str:
        """Why the training failed, from the last line of its log that says so."""
        returncode = self.process.returncode if self.process is not None else None
        return f"exit {returncode}: {last_error(self.files.driver_log)}"


def last_error(log_file: Path) -> str:
    try:
        lines = [line.strip() for line in log_file.read_text(errors="replace").splitlines()]
    except FileNotFoundError:
        return "no log"
    lines = [line for line in lines if line]
    for line in reversed(lines):
        if "error" in line.lower() or "interrupted" in line:
            return line[:300]
    return lines[-1][:300] if lines else "no output"


def stop_process(pid: int, grace: float, gone: Any) -> None:
    """SIGTERM ``pid``, wait up to ``grace`` seconds for ``gone()``, then SIGKILL its session."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while not gone() and time.monotonic() < deadline:
        time.sleep(0.1)
    if not gone():
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # the training's session: driver and local workers


def stop_orphan(run_dir: Path, grace: float = STOP_GRACE) -> bool:
    """Stop the training a killed tuner left running in ``run_dir``; whether there was one."""
    record = _trial_record(run_dir)
    if record is None or not training_alive(run_dir):
        return False
    stop_process(int(record["pid"]), grace, lambda: not training_alive(run_dir))
    return True


def training_alive(run_dir: Path) -> bool:
    """Whether the training recorded in ``run_dir``'s trial.json still runs (on this host): it
    holds the run's trial lock, which no other process (a reused pid) can."""
    record = _trial_record(run_dir)
    return (
        record is not None
        and record.get("host") == socket.gethostname()
        and held(run_dir / TRIAL_LOCK)
    )


def _trial_record(run_dir: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((run_dir / TRIAL_RECORD).read_text())
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError):
        return None
    return record if isinstance(record, dict) else None
