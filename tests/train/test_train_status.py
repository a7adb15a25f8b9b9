"""A run followed and stopped from new processes: --detach, gridtrain status, gridtrain cancel."""

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
from train_helpers import gridtrain, process_alive, read_jsonl, write_config

from gridtrain.errors import CondorError
from gridtrain.train.executor import Slot
from gridtrain.train.local_executor import LocalExecutor
from tests.waiting import remove_while_written

pytestmark = pytest.mark.slow


def status(run_dir: Path) -> dict[str, Any]:
    done = gridtrain("status", str(run_dir), "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(json.loads(done.stdout))


def long_run_config(tmp_path: Path, toy_dir: Path, toy_dataset: Path) -> Path:
    """200 epochs, no early stop: still training when followed or stopped, however fast."""
    return write_config(
        tmp_path / "config.yaml",
        toy_dir,
        toy_dataset,
        epochs=200,
        batch_size=32,
        early_stopping={"patience": None},
    )


def test_a_detached_run_is_followed_refused_twice_and_cancelled(tmp_path, toy_dir, toy_dataset):
    config = long_run_config(tmp_path, toy_dir, toy_dataset)
    run_dir = tmp_path / "run"
    started = gridtrain("train", "-c", str(config), "--run-dir", str(run_dir), "--detach")
    assert started.returncode == 0, started.stderr[-2000:]
    assert f"gridtrain status {run_dir}" in started.stdout
    try:
        deadline = time.monotonic() + 120
        while not any(r["type"] == "shard" for r in read_jsonl(run_dir / "history.jsonl")):
            assert time.monotonic() < deadline, (run_dir / "driver.log").read_text()[-2000:]
            time.sleep(0.5)
        seen = status(run_dir)
        assert seen["phase"] == "training"
        assert seen["ps"]["workers_connected"] == 1
        assert seen["ps"]["leases"]["epochs"] == 200
        assert seen["jobs"] is None  # local processes: no batch jobs to show
        text = gridtrain("status", str(run_dir)).stdout
        assert f"driver pid {seen['driver']['pid']}" in text
        assert "1 workers connected" in text

        second = gridtrain("train", "--resume", str(run_dir))
        assert second.returncode == 2
        assert f"is being trained by pid {seen['driver']['pid']}" in second.stderr
    finally:
        cancelled = gridtrain("cancel", str(run_dir))
    assert cancelled.returncode == 0, cancelled.stderr[-2000:]
    assert "stopped the driver" in cancelled.stdout
    after = status(run_dir)
    assert after["phase"] == "stopped"
    assert after["stopped"] == "interrupted: SIGTERM"
    assert not (run_dir / "driver.json").exists()
    assert (run_dir / "checkpoint.npz").exists()
    assert "continue with gridtrain train --resume" in gridtrain("status", str(run_dir)).stdout


def test_a_driver_that_died_is_reported_with_the_way_to_resume(tmp_path, toy_dir, toy_dataset):
    from gridtrain.config import load_config
    from gridtrain.train.driver import prepare
    from gridtrain.train.status import format_status, run_status

    config = write_config(tmp_path / "config.yaml", toy_dir, toy_dataset)
    files = prepare(load_config(config), tmp_path / "run", 1)
    assert run_status(files.path)["phase"] == "prepared"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    record = {"pid": int(gone.stdout), "host": socket.gethostname(), "started": 0}
    files.driver.write_text(json.dumps(record))
    seen = run_status(files.path)
    assert seen["phase"] == "lost"
    assert f"gridtrain train --resume {files.path}" in format_status(seen)


def test_status_of_a_folder_without_a_run_names_it(tmp_path):
    done = gridtrain("status", str(tmp_path))
    assert done.returncode == 2
    assert str(tmp_path) in done.stderr
    assert "start one with gridtrain train" in done.stderr


class ExecutorThatLosesItsBatchSystem(LocalExecutor):
    """Real local workers; polling them fails as a schedd that went away would."""

    def poll(self) -> list[Slot]:
        raise CondorError("the schedd went away")


def test_an_error_in_the_driver_leaves_a_resumable_run(tmp_path, toy_dir, toy_dataset):
    from gridtrain.config import load_config
    from gridtrain.train.driver import TrainingRun, prepare, resumable

    config = write_config(tmp_path / "config.yaml", toy_dir, toy_dataset)
    files = prepare(load_config(config), tmp_path / "run", 1)
    with pytest.raises(CondorError, match="the schedd went away"):
        TrainingRun(files, ExecutorThatLosesItsBatchSystem(), plots=False).execute()
    state = json.loads(files.state.read_text())
    assert state["leases"]["stopped"] == "interrupted: driver error: the schedd went away"
    assert resumable(files.path)  # not mistaken for a finished run
    assert not files.driver.exists()
    assert status(files.path)["phase"] == "stopped"


def _children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found.update(int(c) for c in (task / "children").read_text().split())
    return found


def test_removing_the_run_directory_stops_a_detached_driver_and_its_workers(
    tmp_path, toy_dir, toy_dataset
):
    """Stopped within seconds, writing nothing: before, the driver trained on for nobody (two
    detached trainings whose folders an interrupted test session deleted ran for 100 minutes)
    or made the folder again to write a checkpoint into."""
    config = long_run_config(tmp_path, toy_dir, toy_dataset)
    run_dir = tmp_path / "run"
    started = gridtrain(
        "train", "-c", str(config), "--run-dir", str(run_dir), "--detach", "--workers", "2"
    )
    assert started.returncode == 0, started.stderr[-2000:]
    driver = json.loads((run_dir / "driver.json").read_text())["pid"]
    try:
        deadline = time.monotonic() + 120
        while len(workers := _children(driver)) < 2:  # started: the driver is watching them
            assert time.monotonic() < deadline, (run_dir / "driver.log").read_text()[-2000:]
            time.sleep(0.2)
        assert (run_dir / "ps.address").exists()
        removed = time.monotonic()
        remove_while_written(run_dir, 20, "the run directory")
        processes = {driver, *workers}
        while any(map(process_alive, processes)) and time.monotonic() < removed + 60:
            time.sleep(0.2)
        assert not any(map(process_alive, processes))
        assert time.monotonic() - removed < 20
        assert not run_dir.exists()  # stopping wrote nothing back
    finally:
        for pid in (driver, *_children(driver)):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
