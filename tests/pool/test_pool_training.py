"""Training with ``--executor condor`` on the real pool: eviction, holds, re-attach, cancel.

The driver runs detached on the host (as a user's would on a login node); every check goes
through a new process (``gridtrain status`` / ``cancel``), as after a closed terminal. The jobs
read the converted shards at their host paths (the pool shares ``Pool.runs``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from pool_helpers import Pool, hold_workers, sigterm_pending, worker_process

from gridtrain.condor.record import JobsRecord, WorkerRecord
from gridtrain.condor.site import load_profile
from gridtrain.condor.submit import query_jobs
from gridtrain.rundir import RunDir
from gridtrain.train.condor_executor import CondorExecutor
from gridtrain.train.executor import Launch
from tests.conftest import toy_section
from tests.train.train_helpers import lost_lease_updates
from tests.waiting import wait_until

pytestmark = [pytest.mark.htcondor, pytest.mark.slow]

TRAIN = {
    "model": {"name": "mlp", "params": {"hidden": [32, 32]}},
    "batch_size": 32,
    "early_stopping": {"patience": None},
    "workers": 2,
    "executor": "condor",
    "condor": {"profile": "local-pool"},
}


@pytest.fixture(scope="module")
def work(pool: Pool, toy_dir: Path) -> Path:
    """A folder the jobs see, with the toy dataset converted into 6 training shards."""
    from gridtrain.config import DatasetConfig
    from gridtrain.data.convert import convert

    folder = pool.runs / f"training-{os.getpid()}-0"
    section = toy_section(toy_dir, folder / "dataset", shard_events=1500, step_events=1500)
    convert(DatasetConfig.from_dict(section), folder / "dataset")
    (folder / "config.yaml").write_text(yaml.safe_dump({"dataset": section, "train": TRAIN}))
    subprocess.run(["chmod", "-R", "a+rX", str(folder)], check=True)
    return folder


def gridtrain(work: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run(
        [sys.executable, "-m", "gridtrain", *args],
        cwd=work, capture_output=True, text=True, timeout=timeout, env=env, check=False,
    )  # fmt: skip


def start_detached(work: Path, name: str, epochs: int) -> Path:
    run_dir = work / name
    started = gridtrain(
        work, "train", "-c", "config.yaml", "--run-dir", str(run_dir), "--epochs", str(epochs),
        "--detach",
    )  # fmt: skip
    assert started.returncode == 0, started.stderr[-3000:]
    assert "training in the background" in started.stdout
    return run_dir


def status(work: Path, run_dir: Path) -> dict[str, Any]:
    """``gridtrain status --json`` in a new process: what re-attaching sees."""
    done = gridtrain(work, "status", str(run_dir), "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout))


def wait_status(
    work: Path, run_dir: Path, ready: Callable[[dict[str, Any]], bool], timeout: float = 240
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        seen = status(work, run_dir)
        if ready(seen):
            return seen
        if time.monotonic() > deadline:
            log = (run_dir / "driver.log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"status never got there in {timeout:g} s: {seen}\n{log}")
        time.sleep(1.0)


def workers(seen: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {worker["name"]: worker for worker in (seen.get("jobs") or {}).get("workers", [])}


def shards_done_by(run_dir: Path, worker: str) -> int:
    history = run_dir / "history.jsonl"
    if not history.exists():
        return 0
    records = [json.loads(line) for line in history.read_text().splitlines()]
    return sum(r["type"] == "shard" and r["worker"] == worker for r in records)


EVICT_EPOCHS = 30


def test_evicted_workers_come_back_and_no_shard_is_lost_or_trained_twice(
    pool: Pool, work: Path
) -> None:
    # Both jobs of the cluster are vacated (a site draining its slots): the training cannot
    # finish without them, so their second attempts (a new interpreter importing TensorFlow) must
    # rejoin, whatever the speed of the machine. Evicting one worker raced the other: with
    # compiled windows it trained the remaining epochs alone before the evicted one was back.
    # Both are stopped first (SIGSTOP), once both run and one has trained a shard: the run is
    # held at that point while the test checks the status and vacates, so it cannot finish
    # around the eviction on a fast machine or fail to get there on a slow one.
    run_dir = start_detached(work, "evict", epochs=EVICT_EPOCHS)
    names = [f"{run_dir.name}-w0", f"{run_dir.name}-w1"]
    held: list[Any] = []
    try:
        held = hold_workers(names, lambda: shards_done_by(run_dir, names[0]) >= 1)
        seen = wait_status(
            work,
            run_dir,
            lambda s: all(workers(s).get(name, {}).get("state") == "running" for name in names),
        )
        assert seen["phase"] == "training"
        assert seen["executor"] == "condor"
        jobs = {name: workers(seen)[name]["job"] for name in names}
        cluster = jobs[names[0]].split(".")[0]
        assert {job.split(".")[0] for job in jobs.values()} == {cluster}  # one cluster
        pool.in_root("condor_vacate_job", cluster)
        wait_until(lambda: all(sigterm_pending(p) for p in held), 120, "the eviction's SIGTERM")
        evicted = {process.pid for process in held}
        for process in held:
            process.resume()  # each takes its SIGTERM: the eviction path
        # The second attempts: each is stopped once it has joined, until both have, so the one
        # the pool starts first cannot train the rest of the run alone before the other is back.
        back: dict[str, Any] = {}

        def both_back() -> bool:
            log = (run_dir / "driver.log").read_text(errors="replace")
            for name in names:
                if name not in back and log.count(f"worker {name} joined") >= 2:
                    process = worker_process(name, exclude=evicted)
                    if process is not None:
                        process.suspend()
                        back[name] = process
            return len(back) == len(names)

        held = []
        try:
            wait_until(both_back, 420, "both evicted workers to rejoin the parameter server")
        finally:
            for process in back.values():
                process.resume()
        finished = wait_status(work, run_dir, lambda s: s["phase"] == "finished", timeout=420)
    finally:
        for process in held:
            process.resume()
        gridtrain(work, "cancel", str(run_dir))
    log = (run_dir / "driver.log").read_text()
    for name in names:
        evicted = workers(finished)[name]
        assert evicted["job"] == jobs[name]  # HTCondor ran the same job again: no resubmission
        assert evicted["attempts"] == 2
        assert evicted["state"] == "done"
        assert log.count(f"worker {name} joined") == 2  # it came back to the parameter server

    leases = [json.loads(line) for line in (run_dir / "leases.jsonl").read_text().splitlines()]
    manifest = json.loads((work / "dataset" / "manifest.json").read_text())
    shards = sorted(entry["path"] for entry in manifest["shards"]["train"])
    for epoch in range(EVICT_EPOCHS):
        done = Counter(
            r["shard"]
            for r in leases
            if r["event"] == "completed" and r["kind"] == "train" and r["epoch"] == epoch
        )
        assert sorted(done) == shards, f"epoch {epoch}: a shard lost"
        assert set(done.values()) == {1}, f"epoch {epoch}: a shard trained twice: {done}"
    # the evicted attempts' leases were released; what they had pushed is kept, counted once
    released = [r for r in leases if r["event"] == "released"]
    assert released
    assert lost_lease_updates(run_dir) == sum(r.get("updates", 0) for r in released)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == EVICT_EPOCHS
    assert metrics["auc"] > 0.8


def test_a_held_worker_is_shown_with_its_reason_and_cancel_stops_the_run(
    pool: Pool, work: Path
) -> None:
    run_dir = start_detached(work, "hold", epochs=60)
    w0, w1 = f"{run_dir.name}-w0", f"{run_dir.name}-w1"
    held: list[Any] = []
    try:
        # held at a known point (both stopped) so the run is still training when it is checked,
        # held by hand and cancelled, whatever the machine's speed
        held = hold_workers([w0, w1], lambda: shards_done_by(run_dir, w1) >= 1)
        seen = wait_status(
            work, run_dir, lambda s: {w["state"] for w in workers(s).values()} == {"running"}
        )
        cluster = workers(seen)[w1]["job"].split(".")[0]
        secret = (run_dir / "ps.secret").read_text().strip()
        long_listing = pool.in_root("condor_q", "-l", cluster)
        assert "GridtrainWorker" in long_listing
        assert secret not in long_listing

        job = workers(seen)[w1]["job"]
        pool.in_root("condor_hold", "-reason", "gridtrain test: held by hand", job)
        wait_until(lambda: sigterm_pending(held[1]), 120, "the hold's SIGTERM to the worker")
        held[1].resume()
        held = held[:1]
        held_status = wait_status(work, run_dir, lambda s: workers(s)[w1]["state"] == "held")
        assert held_status["phase"] == "training"  # the policy: a hold by a person waits
        assert workers(held_status)[w1]["hold_reason_code"] == 1
        assert "held by hand" in workers(held_status)[w1]["hold_reason"]
        text = gridtrain(work, "status", str(run_dir)).stdout
        assert "held" in text
        assert "hold code 1: gridtrain test: held by hand" in text
        assert workers(held_status)[w0]["state"] == "running"  # the other goes on
    finally:
        # cancel while w0 is still stopped (it cannot finish the run meanwhile); continue it once
        # the cancel's SIGTERM is there for it to take
        cancelling = subprocess.Popen(
            [sys.executable, "-m", "gridtrain", "cancel", str(run_dir), "--timeout", "180"],
            cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        )  # fmt: skip
        try:
            for process in held:
                wait_until(lambda p=process: sigterm_pending(p), 120, "the cancel's SIGTERM")
        finally:
            for process in held:
                process.resume()
        out, err = cancelling.communicate(timeout=240)
        cancelled = subprocess.CompletedProcess(cancelling.args, cancelling.returncode, out, err)
    assert cancelled.returncode == 0, cancelled.stderr[-3000:]
    assert "stopped the driver" in cancelled.stdout
    assert f"gridtrain train --resume {run_dir}" in cancelled.stdout
    assert query_jobs(f"ClusterId == {cluster} && JobStatus != 3", ["ProcId"]) == []
    after = status(work, run_dir)
    assert after["phase"] == "stopped"
    assert after["stopped"].startswith("interrupted: SIGTERM")
    assert (run_dir / "checkpoint.npz").exists()
    assert not (run_dir / "driver.json").exists()
    again = gridtrain(work, "cancel", str(run_dir))
    assert "nothing to cancel" in again.stdout


def test_failing_and_badly_held_jobs_are_resubmitted(pool: Pool) -> None:
    """The executor alone, with trivial job commands: the resubmission paths, fast."""
    run_dir = pool.run_dir("resubmit")
    profile = load_profile("local-pool")
    launch = Launch(run_dir / "worker.json", "127.0.0.1:9", run_dir / "ps.secret", run_dir, "rs")
    # `false` fails at once (max_retries 0: no rerun by HTCondor); the second job is held by a
    # policy (code 3), which waiting does not heal.
    failing = CondorExecutor(
        profile.__class__(**{**profile.__dict__, "max_retries": 0}),
        run_dir,
        command=("false",),
    )
    failing.start(launch, 1)
    [slot] = wait_ended(failing)
    assert slot.returncode == 1
    assert slot.state == "failed"
    first_job = slot.job
    failing.restart(slot)
    assert slot.job != first_job
    assert slot.restarts == 1
    cluster = slot.job.split(".")[0]
    record = JobsRecord.load(RunDir(run_dir).condor_jobs)
    assert record.workers == [WorkerRecord(0, "rs-w0", slot.job, restarts=1)]
    assert [c.cluster_id for c in record.clusters] == [int(first_job.split(".")[0]), int(cluster)]
    [again] = wait_ended(failing)
    assert again is slot
    assert slot.returncode == 1
    failing.stop(10)

    policy = {**profile.__dict__, "extra": {"periodic_hold": "JobStatus == 2"}}
    held = CondorExecutor(profile.__class__(**policy), run_dir, command=("sleep", "60"))
    held.start(launch, 1)
    try:
        [slot] = wait_ended(held)
    finally:
        held.stop(30)
    assert slot.returncode == 1
    cluster = slot.job.split(".")[0]
    assert query_jobs(f"ClusterId == {cluster} && JobStatus != 3", ["ProcId"]) == []


def wait_ended(executor: CondorExecutor, timeout: float = 300) -> list[Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ended = executor.poll()
        if ended:
            return ended
        time.sleep(0.5)
    raise AssertionError(f"no job ended within {timeout:g} s: {executor.slots}")


def refused_by_the_negotiator(constraint: str, timeout: float = 120) -> dict[str, Any]:
    """The job's ad once the negotiator has considered the job and found no slot for it
    (``LastRejMatchTime``, set by the schedd as the negotiator refuses): a negative check that
    waits on the pool's own event, not on a sleep long enough for "several cycles"."""

    def refused() -> dict[str, Any] | None:
        [job] = query_jobs(constraint, [])
        return dict(job) if job.get("LastRejMatchTime") else None

    return wait_until(refused, timeout, f"the negotiator to consider {constraint}", 0.5)


def test_a_site_where_jobs_fail_is_excluded_from_the_runs_jobs(pool: Pool) -> None:
    """With the pool's one machine as the "site": after a failed attempt there, the resubmitted
    job is told to avoid it, so it stays idle instead of failing again at the same place."""
    import classad2

    from gridtrain.condor.submit import htcondor

    run_dir = pool.run_dir("sites")
    profile = load_profile("local-pool")
    launch = Launch(run_dir / "worker.json", "127.0.0.1:9", run_dir / "ps.secret", run_dir, "st")
    settings = {**profile.__dict__, "max_retries": 0, "site_attribute": "Machine"}
    executor = CondorExecutor(
        profile.__class__(**{**settings, "exclude_site_after": 1}), run_dir, command=("false",)
    )
    executor.start(launch, 1)
    try:
        [slot] = wait_ended(executor)
        [machine] = executor.excluded_sites
        record = JobsRecord.load(RunDir(run_dir).condor_jobs)
        assert (record.site_failures, record.excluded_sites) == ({machine: 1}, [machine])
        assert "sites excluded: " + machine in executor.summary()
        executor.restart(slot)
        cluster, proc = slot.job.split(".")
        job = refused_by_the_negotiator(f"ClusterId == {cluster} && ProcId == {proc}")
        assert job["JobStatus"] == 1  # idle: no slot outside the excluded site
        assert job["GridtrainExcludedSites"] == machine
        [startd] = (
            htcondor()
            .Collector()
            .query(  # the machine's slot, not a job's part of it
                htcondor().AdType.Startd, "PartitionableSlot =?= true", []
            )
        )
        requirements = classad2.ExprTree(str(job["Requirements"]))
        assert requirements.eval(scope=classad2.ClassAd(job), target=startd) is False
    finally:
        executor.stop(10)


def test_a_jax_run_trains_on_the_pool_with_its_backend_in_the_jobs(pool: Pool, work: Path) -> None:
    """train.backend reaches the pool's jobs: each worker job trains on JAX (its log says so;
    the jobs' environment carries KERAS_BACKEND: tests/train/test_train_backends.py)."""
    config = yaml.safe_load((work / "config.yaml").read_text())
    config["train"]["backend"] = "jax"
    path = work / "jax.yaml"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o644)
    run_dir = work / "jax"
    done = gridtrain(
        work, "train", "-c", str(path), "--run-dir", str(run_dir), "--epochs", "1", timeout=600
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    logs = sorted((run_dir / "condor").glob("*.err"))
    assert [log.name for log in logs] == ["jax-w0.err", "jax-w1.err"]
    for log in logs:
        assert "training on JAX, CPU" in log.read_text()
    assert json.loads((run_dir / "metrics.json").read_text())["auc"] > 0.5
