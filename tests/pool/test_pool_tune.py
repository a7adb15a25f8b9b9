"""``gridtrain tune`` with its trials' workers as jobs on the real pool: one trial's worker is
evicted mid-run, HTCondor runs it again, and the study still completes with every trial counted.

The tuner runs detached on the host, as on a login node; each trial is a ``gridtrain train``
with ``executor: condor`` and one worker job. The jobs read the converted shards at their host
paths (the pool shares ``Pool.runs``).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from pool_helpers import Pool

from gridtrain.train.status import run_status
from tests.conftest import toy_section

pytestmark = [pytest.mark.htcondor, pytest.mark.slow]

TRIALS = 2


def gridtrain(work: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", "gridtrain", *args],
        cwd=work, capture_output=True, text=True, timeout=timeout, env=env, check=False,
    )  # fmt: skip


def worker_job(run_dir: Path) -> dict[str, Any] | None:
    """The trial's one worker job as ``gridtrain status`` sees it, or None before it exists."""
    if not (run_dir / "worker.json").exists():
        return None
    jobs = run_status(run_dir).get("jobs") or {}
    found = [w for w in jobs.get("workers", []) if w["name"] == f"{run_dir.name}-w0"]
    return found[0] if found else None


def shards_done(run_dir: Path) -> int:
    history = run_dir / "history.jsonl"
    if not history.exists():
        return 0
    return sum(json.loads(line)["type"] == "shard" for line in history.read_text().splitlines())


def test_a_study_on_the_pool_survives_an_evicted_trial_worker(pool: Pool, toy_dir: Path) -> None:
    from gridtrain.config import DatasetConfig
    from gridtrain.data.convert import convert

    work = pool.runs / f"tune-{os.getpid()}-0"
    section = toy_section(toy_dir, work / "dataset", shard_events=1500, step_events=1500)
    convert(DatasetConfig.from_dict(section), work / "dataset")
    train = {
        "model": {"name": "mlp", "params": {"hidden": [8]}},
        "batch_size": 128,
        "epochs": 6,
        "seed": 3,
        "early_stopping": {"patience": None},
        "executor": "condor",
        "condor": {"profile": "local-pool"},
    }
    tune = {
        "space": {"learning_rate": {"type": "float", "low": 1.0e-3, "high": 1.0e-2, "log": True}},
        "trials": TRIALS,
        "parallel": 2,
        "workers": 1,
        "sampler": "random",
        "seed": 5,
        "pruner": "none",
    }
    (work / "config.yaml").write_text(
        yaml.safe_dump({"dataset": section, "train": train, "tune": tune})
    )
    subprocess.run(["chmod", "-R", "a+rX", str(work)], check=True)
    study = work / "study"
    started = gridtrain(work, "tune", "-c", "config.yaml", "--run-dir", str(study), "--detach")
    assert started.returncode == 0, started.stderr[-3000:]
    trial = study / "trials" / "0000"
    try:
        deadline = time.monotonic() + 300
        while True:  # trial 0's worker job runs and has trained a shard: evict it
            job = worker_job(trial)
            if job is not None and job["state"] == "running" and shards_done(trial) >= 1:
                break
            assert time.monotonic() < deadline, f"trial 0's worker never trained: {job}"
            time.sleep(0.2)
        pool.in_root("condor_vacate_job", job["job"])
        deadline = time.monotonic() + 420
        while True:
            done = gridtrain(work, "tune", "status", str(study), "--json")
            assert done.returncode == 0, done.stderr[-3000:]
            seen = json.loads(done.stdout)
            if seen["tuner"] != "running":
                break
            assert time.monotonic() < deadline, f"the study did not finish: {seen}"
            time.sleep(2.0)
    finally:
        gridtrain(work, "tune", "cancel", str(study), timeout=300)
    log = (study / "tuner.log").read_text(errors="replace")[-3000:]
    assert seen["tuner"] == "finished", log
    assert seen["counts"] == {
        "complete": TRIALS,
        "pruned": 0,
        "failed": 0,
        "interrupted": 0,
        "retry": 0,
    }
    with open(study / "trials.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    # every trial accounted for: one attempt each, all complete, no retry needed
    assert [(row["number"], row["origin"], row["attempt"], row["state"]) for row in rows] == [
        (str(n), str(n), "1", "complete") for n in range(TRIALS)
    ]
    assert sorted(p.name for p in (study / "trials").iterdir()) == [
        f"{n:04d}" for n in range(TRIALS)
    ]
    evicted = worker_job(trial)
    assert evicted is not None
    assert evicted["job"] == job["job"]  # HTCondor ran the same job again
    assert evicted["attempts"] == 2
    assert evicted["state"] == "done"
    assert (trial / "driver.log").read_text().count("worker 0000-w0 joined") == 2
    assert json.loads((trial / "metrics.json").read_text())["epochs"] == 6
    for n in range(1, TRIALS):  # the other ran beside it undisturbed, its own job
        other = worker_job(study / "trials" / f"{n:04d}")
        assert other is not None
        assert other["attempts"] == 1
        assert other["state"] == "done"
    assert (study / "best.yaml").exists()
