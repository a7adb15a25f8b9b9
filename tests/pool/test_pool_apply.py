"""``gridtrain apply --executor condor`` on the real pool: one cluster over groups of files, a
job vacated mid-run and run again, every output verified and equal to a local apply's.

The run (the toy, a small mlp, exported to ONNX) and the inputs live under ``Pool.runs``, which
the jobs see at the same path; the scores folder is given to the pool's user by the profile's
``job_owner``, so the files the jobs wrote belong to that user: proof that they ran on the pool.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uproot
import yaml
from pool_helpers import Pool, sigterm_pending

from gridtrain.condor.monitor import ClusterMonitor
from gridtrain.condor.record import JobsRecord
from gridtrain.condor.site import load_profile
from gridtrain.jobstate import JobState
from tests.waiting import wait_until

pytestmark = [pytest.mark.htcondor, pytest.mark.slow]

BIG_EVENTS = 80_000  # the toy's signal file of this many / 2: scored for long enough to catch


def gridtrain(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", "gridtrain", *args],
        capture_output=True, text=True, timeout=timeout, env=env, check=False,
    )  # fmt: skip


def exported_run(work: Path, toy_dir: Path) -> Path:
    """The toy converted, trained briefly (one local worker) and exported to ONNX, in ``work``."""
    from gridtrain.config import DatasetConfig
    from gridtrain.data.convert import convert
    from tests.conftest import toy_section

    section = toy_section(toy_dir, work / "dataset", shard_events=3000, step_events=3000)
    convert(DatasetConfig.from_dict(section), work / "dataset")
    train = {
        "model": {"name": "mlp", "params": {"hidden": [8]}},
        "epochs": 1,
        "workers": 1,
        "batch_size": 256,
        "early_stopping": {"patience": None},
    }
    (work / "config.yaml").write_text(yaml.safe_dump({"dataset": section, "train": train}))
    run = work / "run"
    done = gridtrain("train", "-c", str(work / "config.yaml"), "--run-dir", str(run))
    assert done.returncode == 0, done.stderr[-3000:]
    done = gridtrain("export", str(run), "--format", "onnx")
    assert done.returncode == 0, done.stderr[-3000:]
    return run


def apply_process(group: str) -> Any:
    """The running ``gridtrain apply`` of the job whose file list is ``group`` (inside the pool's
    chroot, seen from the host), or None."""
    import psutil

    for process in psutil.process_iter(["cmdline"]):
        command = process.info["cmdline"] or []
        if "apply" in command and "--files-from" in command:
            at = command.index("--files-from")
            if command[at + 1 : at + 2] == [group]:
                return process
    return None


def read_scores(path: Path) -> dict[str, np.ndarray]:
    with uproot.open(path) as file:
        return {k: np.asarray(v) for k, v in file["scores"].arrays(library="np").items()}


@pytest.fixture(scope="module")
def work(pool: Pool, toy_dir: Path) -> Path:
    """A folder the jobs see: the exported run, and the inputs: the toy's two files, and two of
    a larger toy (big.root long enough to be scored while a test acts)."""
    from gridtrain.data.toy import write_toy_dataset

    folder = pool.runs / f"apply-{os.getpid()}-0"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    exported_run(folder, toy_dir)
    inputs = folder / "inputs"
    write_toy_dataset(inputs / "big", BIG_EVENTS, seed=11)
    for name in ("signal", "background"):
        shutil.copy(toy_dir / f"{name}.root", inputs / f"{name}.root")
    (inputs / "big" / "signal.root").rename(inputs / "big.root")
    (inputs / "big" / "background.root").rename(inputs / "other.root")
    subprocess.run(["chmod", "-R", "a+rX", str(folder)], check=True)
    return folder


def test_apply_runs_as_one_cluster_and_a_vacated_job_resumes_its_group(
    pool: Pool, work: Path
) -> None:
    run, inputs = work / "run", work / "inputs"
    # Two groups of two (files k, k + 2): job 0 scores other.root and signal.root, job 1 the
    # small background.root, then the big file, long enough to be vacated in the middle of.
    files = [str(inputs / f"{n}.root") for n in ("other", "background", "signal", "big")]
    first, second = Path(files[1]), Path(files[3])
    out = work / "scores"

    head = subprocess.Popen(
        [
            sys.executable, "-m", "gridtrain", "apply", str(run), *files, "--out", str(out),
            "--engine", "onnx", "--executor", "condor", "--profile", "local-pool",
            "--files-per-job", "2",
        ],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # Job 1 is caught between its two files: the first one's scores finished, the big one
        # being written; stopped there while it is vacated, then continued to take the SIGTERM.
        scores_of = out / f"{first.stem}_scores.root"
        process = wait_until(
            lambda: apply_process("group-1.txt"), 120, "job 1's gridtrain apply", 0.02
        )
        wait_until(scores_of.exists, 60, f"{scores_of.name} written by job 1", 0.01)
        process.suspend()
        assert not (out / f"{second.stem}_scores.root").exists()
        finished_first = scores_of.stat()
        [cluster] = JobsRecord.load(out / "condor" / "jobs.json").clusters
        pool.in_root("condor_vacate_job", f"{cluster.cluster_id}.1")
        wait_until(lambda: sigterm_pending(process), 60, "the eviction's SIGTERM")
        process.resume()
        stdout, stderr = head.communicate(timeout=240)
    finally:
        if head.poll() is None:
            head.kill()
            head.wait()
    assert head.returncode == 0, stderr[-3000:]
    summary = stdout.strip().splitlines()[-1]
    assert summary.startswith("gridtrain apply: 4 files, ")
    assert f"by cluster {cluster.cluster_id} (2 jobs, 1 run again)" in summary
    assert summary.endswith(f"every output verified -> {out}")
    assert f"cluster {cluster.cluster_id}: 2 jobs: " in stderr  # the progress lines

    # One cluster, two jobs: job 1 evicted and run again, job 0 once; both ended well.
    monitor = ClusterMonitor(out / "condor" / "apply.log", cluster.cluster_id)
    monitor.poll()
    monitor.close()
    assert {proc: (job.state, job.attempts) for proc, job in monitor.jobs.items()} == {
        0: (JobState.DONE, 1),
        1: (JobState.DONE, 2),
    }
    assert [s for p, s in monitor.transitions if p == 1] == [
        JobState.IDLE, JobState.RUNNING, JobState.EVICTED, JobState.RUNNING, JobState.DONE,
    ]  # fmt: skip
    # The second attempt verified and skipped the file the first one finished, and the one it
    # was writing left no temporary file behind.
    assert scores_of.stat().st_ino == finished_first.st_ino
    assert scores_of.stat().st_mtime_ns == finished_first.st_mtime_ns
    assert "2 files (1 finished already, skipped)" in (out / "condor" / "apply-g1.out").read_text()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["condor", *(f"{Path(f).stem}_scores.root" for f in files)]
    )

    # Every output the jobs wrote (as the pool's user) equals a local apply of the same files.
    local = gridtrain("apply", str(run), *files, "--out", str(work / "local"), "--engine", "onnx")
    assert local.returncode == 0, local.stderr[-3000:]
    for path in files:
        name = f"{Path(path).stem}_scores.root"
        assert (out / name).stat().st_uid == pool.uid
        pooled, here = read_scores(out / name), read_scores(work / "local" / name)
        assert list(pooled) == list(here) == ["run", "luminosityBlock", "event", "score"]
        for branch in here:
            np.testing.assert_array_equal(pooled[branch], here[branch])
        with uproot.open(out / name) as file:
            marker = json.loads(str(file["gridtrain_apply"]))
        assert marker["request"]["engine"] == "onnx"


def test_a_file_no_job_could_score_is_named_with_its_job_and_the_way_out(
    pool: Pool, work: Path
) -> None:
    """A job whose input the pool's user cannot read fails; HTCondor reruns it up to the
    profile's max_retries, then the head names the file, the job and the job's own error in one
    line (exit 2). The same command again skips what is verified and scores the rest."""
    run, hidden = work / "run", work / "locked" / "hidden.root"
    hidden.parent.mkdir()
    shutil.copy(work / "inputs" / "signal.root", hidden)
    hidden.chmod(0o600)  # root's: the head reads it, the jobs cannot
    files = [str(work / "inputs" / "background.root"), str(hidden)]
    out = work / "failing"
    command = (
        "apply", str(run), *files, "--out", str(out), "--engine", "onnx",
        "--executor", "condor", "--profile", "local-pool",
    )  # fmt: skip
    failed = gridtrain(*command)
    assert failed.returncode == 2, failed.stderr[-3000:]
    [cluster] = JobsRecord.load(out / "condor" / "jobs.json").clusters
    line = failed.stderr.strip().splitlines()[-1]
    assert line.startswith(
        f"gridtrain apply: error: 1 of 2 files have no verified scores after cluster "
        f"{cluster.cluster_id} ended: hidden.root (no scores file; job {cluster.cluster_id}.1 "
        "exited 2 ("
    )
    assert "Permission denied" in line
    assert line.endswith(
        f"see {out}/condor/apply-g1.err); run the same command again to score them (verified "
        "outputs are skipped)"
    )
    monitor = ClusterMonitor(out / "condor" / "apply.log", cluster.cluster_id)
    monitor.poll()
    monitor.close()
    attempts = load_profile("local-pool").max_retries + 1
    assert {p: (j.state, j.attempts) for p, j in monitor.jobs.items()} == {
        0: (JobState.DONE, 1),
        1: (JobState.FAILED, attempts),
    }

    hidden.chmod(0o644)
    again = gridtrain(*command)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 files (1 finished already, skipped)" in again.stdout
    assert "(1 job), every output verified" in again.stdout
    assert len(JobsRecord.load(out / "condor" / "jobs.json").clusters) == 2
