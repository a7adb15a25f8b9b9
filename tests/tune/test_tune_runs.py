"""Real studies on the toy dataset: every trial a gridtrain training with one local worker."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tune_helpers import write_tune_config

from gridtrain.config import validate_config
from gridtrain.train.settings import TrainConfig
from gridtrain.tune.trial import training_alive

pytestmark = pytest.mark.slow


def run_tune(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gridtrain", "tune", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


def attempts(study: Path) -> list[dict[str, str]]:
    with open(study / "trials.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_study_prunes_the_hopeless_and_writes_the_best_config(
    tmp_path: Path, toy_dir: Path, toy_dataset: Path
) -> None:
    config = write_tune_config(tmp_path / "config.yaml", toy_dir, toy_dataset)
    study = tmp_path / "study"
    done = run_tune("-c", str(config), "--run-dir", str(study))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "gridtrain tune: 8 of 8 trials" in done.stdout
    assert "tune: trials 8/8" in done.stderr  # the progress line
    rows = attempts(study)
    assert len(rows) == 8
    states = [row["state"] for row in rows]
    assert "pruned" in states, rows
    assert all(
        json.loads(row["learning_rate"]) == 100.0 for row in rows if row["state"] == "pruned"
    )
    for run in (study / "trials").iterdir():  # every training ended: pruned ones stopped
        assert not training_alive(run)
    assert len(list((study / "trials").iterdir())) == 8  # one run directory per trial
    summary = json.loads((study / "trials.json").read_text())
    best = summary["best"]
    complete = [row for row in rows if row["state"] == "complete"]
    assert best["value"] == min(float(row["value"]) for row in complete)
    best_config = yaml.safe_load((study / "best.yaml").read_text())
    assert "tune" not in best_config
    settings = TrainConfig.from_dict(validate_config(best_config)["train"])
    assert settings.learning_rate == best["params"]["learning_rate"]
    assert settings.model_params["hidden"] == best["params"]["model.params.hidden"]
    plots = {path.name for path in (study / "plots").iterdir()}
    assert {"optimization_history.png", "intermediate_values.png"} <= plots
    assert "param_importances.png" in plots

    # best.yaml, trained as a user would, reaches the reported objective (same seed, one worker)
    again = subprocess.run(
        [sys.executable, "-m", "gridtrain", "train", "-c", str(study / "best.yaml"),
         "--run-dir", str(tmp_path / "best"), "--workers", "1"],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    retrained = json.loads((tmp_path / "best" / "metrics.json").read_text())["loss"]
    assert retrained == pytest.approx(best["value"], abs=0.02)


def test_a_killed_tuner_resumes_without_rerunning_finished_trials(
    tmp_path: Path, toy_dir: Path, toy_dataset: Path
) -> None:
    config = write_tune_config(
        tmp_path / "config.yaml", toy_dir, toy_dataset, trials=3, pruner="none"
    )
    study = tmp_path / "study"
    tuner = subprocess.Popen(
        [sys.executable, "-m", "gridtrain", "tune", "-c", str(config), "--run-dir", str(study)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    trials = study / "trials"
    try:
        deadline = time.monotonic() + 600
        # killed once a trial was told (the third has started), while others still train
        while len(_runs(trials)) < 3:
            assert time.monotonic() < deadline, "no trial finished"
            assert tuner.poll() is None
            time.sleep(0.2)
        tuner.kill()
        tuner.wait()
    finally:
        if tuner.poll() is None:
            tuner.kill()
            tuner.wait()
    finished = {
        run.name: (run / "metrics.json").stat().st_mtime
        for run in _runs(trials)
        if (run / "metrics.json").exists()
    }
    assert len(finished) < 3  # the third trial was training when the tuner died

    done = run_tune("--resume", str(study))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "gridtrain tune: 3 of 3 trials (3 complete" in done.stdout
    rows = attempts(study)
    for name, mtime in finished.items():  # not run again
        assert (trials / name / "metrics.json").stat().st_mtime == mtime
    complete = [row for row in rows if row["state"] == "complete"]
    assert len({row["origin"] for row in complete}) == 3  # exactly the budget, each once
    assert len(complete) == 3
    stopped = [row for row in rows if row["state"] == "fail"]
    assert stopped, rows
    assert all(row["reason"] == "the tuner stopped while it ran" for row in stopped)
    for row in stopped:  # the orphaned training was stopped, not left running
        driver = trials / f"{int(row['number']):04d}" / "driver.json"
        assert not driver.exists()


def _runs(trials: Path) -> list[Path]:
    return sorted(trials.iterdir()) if trials.exists() else []
