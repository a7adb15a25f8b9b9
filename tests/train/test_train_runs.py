"""End-to-end training runs: asynchronous workers, a killed worker, Ctrl-C and resume, outputs."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import psutil
import pytest
from train_helpers import (
    completions,
    gridtrain,
    lost_lease_updates,
    read_jsonl,
    start_gridtrain,
    train_shards,
    write_config,
)

from tests.waiting import wait_until

pytestmark = pytest.mark.slow


def run_training(tmp_path: Path, toy_dir: Path, dataset: Path, name: str, **train: object) -> dict:
    config = write_config(tmp_path / f"{name}.yaml", toy_dir, dataset, **train)
    run_dir = tmp_path / name
    result = gridtrain("train", "-c", str(config), "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "validation AUC" in result.stdout
    metrics = json.loads((run_dir / "metrics.json").read_text())
    expected = {e: train_shards(dataset) for e in range(metrics["epochs"])}
    assert completions(run_dir) == expected  # every shard exactly once per epoch
    return metrics


def test_two_async_workers_match_one_worker(tmp_path, toy_dir, toy_dataset):
    """Downpour and EASGD with 2 workers reach the 1-worker AUC within 0.02, same epochs."""
    # The jet features alone (flatten 0): the 4-epoch budget and the 0.02 tolerance were set for
    # that model; the mlp's default also reads the 40 constituents, which 4 async epochs of 2
    # workers do not bring as close to 1 worker (0.843 against 0.880 in one run).
    common = {
        "epochs": 4,
        "early_stopping": {"patience": None},
        "model": {"name": "mlp", "params": {"flatten": 0}},
    }
    one = run_training(tmp_path, toy_dir, toy_dataset, "one", workers=1, **common)
    downpour = run_training(
        tmp_path,
        toy_dir,
        toy_dataset,
        "downpour",
        workers=2,
        algorithm={"algorithm": "downpour", "staleness_scaling": "none"},  # plain Downpour
        **common,
    )
    easgd = run_training(
        tmp_path,
        toy_dir,
        toy_dataset,
        "easgd",
        workers=2,
        algorithm={"algorithm": "easgd", "every": 4, "alpha": 0.3},
        **common,
    )
    assert one["auc"] > 0.85, one
    for metrics in (downpour, easgd):
        assert metrics["epochs"] == 4
        assert abs(metrics["auc"] - one["auc"]) <= 0.02, (metrics["auc"], one["auc"])
        assert len([w for w in metrics["workers"] if w["shards"] > 0]) == 2
    assert downpour["staleness"]["max"] >= 1  # two workers really interleaved
    run = tmp_path / "downpour"
    for output in ("model.keras", "roc.npz", "config.yaml", "history.jsonl", "leases.jsonl"):
        assert (run / output).stat().st_size > 0, output
    for plot in ("training_vs_time", "training_vs_updates", "roc", "staleness", "throughput"):
        assert (run / "plots" / f"{plot}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", plot
    epochs = [r for r in read_jsonl(run / "history.jsonl") if r["type"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [0, 1, 2, 3]
    assert all(0.5 < r["val_auc"] <= 1 for r in epochs)


def slow_config(tmp_path: Path, toy_dir: Path, dataset: Path) -> Path:
    """Two workers, three epochs, small batches: a run long enough to interrupt."""
    return write_config(
        tmp_path / "c.yaml",
        toy_dir,
        dataset,
        workers=2,
        epochs=3,
        batch_size=32,
        early_stopping={"patience": None},
    )


def worker_processes(driver: psutil.Process) -> dict[str, psutil.Process]:
    found = {}
    for child in driver.children(recursive=True):
        try:
            command = child.cmdline()
        except psutil.NoSuchProcess:
            continue
        if "worker" in command and "--name" in command:
            found[command[command.index("--name") + 1]] = child
    return found


def test_a_worker_killed_mid_epoch_loses_no_shard(tmp_path, toy_dir, toy_dataset):
    """The victim is w0, the worker that also does the driver's Keras work (train/helper.py):
    its plain restart cannot finalize, so the driver scores the final model itself."""
    config = slow_config(tmp_path, toy_dir, toy_dataset)
    run_dir = tmp_path / "killed"
    driver = start_gridtrain("train", "-c", str(config), "--run-dir", str(run_dir))
    held: psutil.Process | None = None
    try:
        victim, other = "killed-w0", "killed-w1"

        def victim_holds_a_lease() -> bool:
            records = read_jsonl(run_dir / "leases.jsonl")
            granted = [r for r in records if r["worker"] == victim and r["event"] == "granted"]
            done = [r for r in records if r.get("worker") == victim and r["event"] == "completed"]
            return len(granted) > len(done) and bool(done)

        wait_until(victim_holds_a_lease, 120, "the victim to train a second shard")
        # Hold the other worker, so the run cannot finish around the kill: the victim's shard
        # is still owed, and the driver must restart the victim to get it done.
        workers = worker_processes(psutil.Process(driver.pid))
        held = workers[other]
        held.suspend()
        killed = workers[victim]
        killed.send_signal(signal.SIGKILL)
        wait_until(
            lambda: (
                (w := worker_processes(psutil.Process(driver.pid)).get(victim)) is not None
                and w.pid != killed.pid
            ),
            120,
            "the driver to start the killed worker again",
        )
        held.resume()
        held = None
        _, stderr = driver.communicate(timeout=300)
    finally:
        if held is not None:
            held.resume()
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, stderr[-3000:]
    released = [
        r
        for r in read_jsonl(run_dir / "leases.jsonl")
        if r["event"] == "released" and r["worker"] == victim
    ]
    assert released, "the killed worker's lease was not released"
    assert completions(run_dir) == {e: train_shards(toy_dataset) for e in range(3)}
    # the partial work stays in the center: every update is counted under a completed lease or
    # under a released one (the victim's), and the center's version is their sum
    # (a validation lease the victim held when killed is released too, and carries no updates)
    lost = sum(r["updates"] for r in released if r["kind"] == "train")
    assert lost_lease_updates(run_dir) == lost
    assert "restarting killed-w0" in stderr
    # the outputs written by the driver (its log), not by a worker's process
    assert "gridtrain.train.finalize INFO: final model:" in stderr
    assert (run_dir / "model.keras").is_file()
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 3


def test_ctrl_c_leaves_a_checkpoint_and_resume_completes(tmp_path, toy_dir, toy_dataset):
    config = slow_config(tmp_path, toy_dir, toy_dataset)
    run_dir = tmp_path / "interrupted"
    driver = start_gridtrain("train", "-c", str(config), "--run-dir", str(run_dir))
    try:
        wait_until(
            lambda: len(read_jsonl(run_dir / "history.jsonl")) >= 3, 120, "three shards trained"
        )
        driver.send_signal(signal.SIGINT)
        _, stderr = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 130, stderr[-3000:]
    assert f"gridtrain train --resume {run_dir}" in stderr
    state = json.loads((run_dir / "state.json").read_text())
    assert state["leases"]["stopped"].startswith("interrupted")
    assert (run_dir / "checkpoint.npz").exists()
    assert not (run_dir / "metrics.json").exists()
    assert not worker_processes(psutil.Process())  # no worker left behind

    resumed = gridtrain("train", "--resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 3
    assert metrics["auc"] > 0.85
    assert completions(run_dir) == {e: train_shards(toy_dataset) for e in range(3)}
    assert metrics["wall_time_s"] >= state["wall_time_s"]


def test_steps_of_an_unfinished_window_reach_the_center(tmp_path, toy_dir, toy_dataset):
    """With a window longer than a shard, every shard's steps still reach the center."""
    metrics = run_training(
        tmp_path,
        toy_dir,
        toy_dataset,
        "window",
        epochs=1,
        algorithm={"every": 1000},
        early_stopping={"patience": None},
    )
    assert metrics["updates"] == sum(train_shards(toy_dataset).values())  # one flush per shard
    assert metrics["auc"] > 0.8
