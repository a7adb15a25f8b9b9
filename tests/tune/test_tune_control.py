"""A study steered from other shells: ``tune --detach``, ``tune status``, ``tune cancel``; and a
killed tuner's record read as stopped (resumable), never as running."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from tune_helpers import tune_config

from gridtrain.liveness import claim, release
from gridtrain.tune.control import format_status, study_status
from gridtrain.tune.study import StudyDir
from gridtrain.tune.trial import training_alive
from tests.train.train_helpers import process_alive
from tests.waiting import remove_while_written


def gridtrain(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gridtrain", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


def status(study: Path) -> dict[str, Any]:
    """``gridtrain tune status --json`` in a new process: what another shell sees."""
    done = gridtrain("tune", "status", str(study), "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout))


@pytest.mark.slow
def test_a_detached_study_is_followed_and_cancelled_from_another_shell(
    tmp_path: Path, toy_dir: Path, toy_dataset: Path
) -> None:
    config = tune_config(toy_dir, toy_dataset, trials=2, parallel=1, pruner="none")
    config["train"]["epochs"] = 500  # still training when cancelled
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    study = tmp_path / "study"
    started = gridtrain(
        "tune", "-c", str(tmp_path / "config.yaml"), "--run-dir", str(study), "--detach"
    )
    assert started.returncode == 0, started.stderr[-3000:]
    assert "tuning in the background" in started.stdout
    try:
        deadline = time.monotonic() + 240
        while True:
            seen = status(study)
            if seen["running"] and seen["running"][0]["epochs"] >= 1:
                break
            assert seen["tuner"] == "running", seen
            assert time.monotonic() < deadline, f"no trial training: {seen}"
            time.sleep(1.0)
        assert seen["counts"] == {
            "complete": 0,
            "pruned": 0,
            "failed": 0,
            "running": 1,
            "retry": 0,
        }
        assert seen["trials"] == 2
        assert seen["pid"] == json.loads((study / "tuner.json").read_text())["pid"]
        assert all(t["training"] and t["of"] == 500 for t in seen["running"])
        text = gridtrain("tune", "status", str(study)).stdout
        assert "tuner: running (pid" in text
        assert "trials 0/2 done" in text
        assert "1 running" in text
        assert "(attempt 1): epoch " in text
        assert "/500, val_loss " in text
    finally:
        cancelled = gridtrain("tune", "cancel", str(study))
    assert cancelled.returncode == 0, cancelled.stderr[-3000:]
    assert "stopped the tuner" in cancelled.stdout
    assert f"gridtrain tune --resume {study}" in cancelled.stdout
    assert not (study / "tuner.json").exists()
    for run in seen["running"]:  # each training stopped with the tuner (its driver too)
        assert not training_alive(Path(run["run_dir"]))
        assert not (Path(run["run_dir"]) / "driver.json").exists()

    after = status(study)
    assert after["tuner"] == "stopped"
    assert after["counts"]["retry"] == 1  # trained again by --resume; the second not yet asked
    assert after["counts"]["interrupted"] == 0
    assert after["running"] == []
    assert after["next"] == f"the tuner stopped; continue with gridtrain tune --resume {study}"
    rows = json.loads((study / "trials.json").read_text())["attempts"]
    assert [(r["state"], r["reason"]) for r in rows] == [("fail", "tuner stopped (SIGTERM)")]
    again = gridtrain("tune", "cancel", str(study))
    assert again.returncode == 0
    assert "nothing to cancel" in again.stdout

    # resumed in the background, then the tuner killed: its record reads as stopped, and cancel
    # stops the training it left
    resumed = gridtrain("tune", "--resume", str(study), "--detach")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    tuner = json.loads((study / "tuner.json").read_text())["pid"]
    try:
        deadline = time.monotonic() + 120
        while True:
            seen = status(study)
            if any(t["training"] for t in seen["running"]):
                break
            assert time.monotonic() < deadline, f"the retry never started: {seen}"
            time.sleep(0.5)
    finally:
        os.kill(tuner, signal.SIGKILL)
    killed = status(study)
    assert killed["tuner"] == "stopped"
    assert killed["next"] == (
        f"the tuner stopped (pid {tuner} on {socket.gethostname()} is gone); continue with "
        f"gridtrain tune --resume {study}"
    )
    assert killed["counts"]["interrupted"] == 1
    [left] = killed["running"]
    assert (left["attempt"], left["training"], left["followed"]) == (2, True, False)
    assert "still training, no tuner follows it" in gridtrain("tune", "status", str(study)).stdout
    cancelled = gridtrain("tune", "cancel", str(study))
    assert cancelled.returncode == 0, cancelled.stderr[-3000:]
    assert "stopped what 1 training(s) had left" in cancelled.stdout
    assert not training_alive(Path(left["run_dir"]))


def test_a_killed_tuners_record_reads_as_stopped_not_running(
    tmp_path: Path, toy_dir: Path, toy_dataset: Path
) -> None:
    from gridtrain.config import validate_config
    from gridtrain.tune.tuner import prepare

    config = validate_config(tune_config(toy_dir, toy_dataset))
    files, _ = prepare(config, tmp_path / "study")
    dead = subprocess.Popen(["true"])
    dead.wait()
    record = {"pid": dead.pid, "host": socket.gethostname(), "started": 0}
    files.tuner.write_text(json.dumps(record))
    seen = study_status(files.path)
    assert seen["tuner"] == "stopped"
    assert seen["next"] == (
        f"the tuner stopped (pid {dead.pid} on {socket.gethostname()} is gone); continue with "
        f"gridtrain tune --resume {files.path}"
    )
    # a live process that is not the tuner (the pid reused): it does not hold the study's lock
    record.update(pid=os.getpid())
    files.tuner.write_text(json.dumps(record))
    assert study_status(files.path)["tuner"] == "stopped"
    lock = claim(files.lock)  # as the tuner does for its life
    assert lock is not None
    try:
        seen = study_status(files.path)
    finally:
        release(lock)
    assert seen["tuner"] == "running"
    assert "tuner: running (pid" in format_status(seen)
    assert "trials 0/8 done: 0 complete, 0 pruned, 0 failed; 0 running" in format_status(seen)
    assert StudyDir(files.path).journal.exists()


@pytest.mark.slow
def test_removing_the_study_directory_stops_the_tuner_and_its_trainings(
    tmp_path: Path, toy_dir: Path, toy_dataset: Path
) -> None:
    config = tune_config(toy_dir, toy_dataset, trials=2, parallel=1, pruner="none")
    config["train"]["epochs"] = 500
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    study = tmp_path / "study"
    started = gridtrain(
        "tune", "-c", str(tmp_path / "config.yaml"), "--run-dir", str(study), "--detach"
    )
    assert started.returncode == 0, started.stderr[-3000:]
    tuner = json.loads((study / "tuner.json").read_text())["pid"]
    try:
        deadline = time.monotonic() + 120
        while not (records := list(study.glob("trials/*/driver.json"))):
            assert time.monotonic() < deadline, (study / "tuner.log").read_text()[-3000:]
            time.sleep(0.2)
        training = json.loads(records[0].read_text())["pid"]
        removed = time.monotonic()
        remove_while_written(study, 30, "the study directory")
        while any(map(process_alive, (tuner, training))) and time.monotonic() < removed + 60:
            time.sleep(0.2)
        assert not process_alive(tuner)
        assert not process_alive(training)
        assert time.monotonic() - removed < 30
        assert not study.exists()  # nothing made again to write into
    finally:
        with contextlib.suppress(OSError):
            os.kill(tuner, signal.SIGKILL)
