"""Worker jobs on the real pool: one cluster, the ordinary user, monitoring, holds, no secret.

The jobs run the real wrapper (jobs/worker.sh) with a trivial command in place of the training
worker, so no TensorFlow starts; everything else (rendering, file transfer of the secret,
submission, the event log) is what a training run does.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pool_helpers import Pool

from gridtrain import __version__
from gridtrain.cli import main
from gridtrain.condor.monitor import ClusterMonitor, JobState, JobStatus, cluster_jobs
from gridtrain.condor.record import JobsRecord
from gridtrain.condor.render import WorkerJobs, render_submit_description
from gridtrain.condor.site import load_profile
from gridtrain.condor.submit import (
    Cluster,
    query_jobs,
    remove_cluster,
    submit_cluster,
)
from gridtrain.rundir import RunDir

pytestmark = pytest.mark.htcondor

VENV = Path(__file__).resolve().parents[2] / ".venv"


def submit(run_dir: Path, count: int, command: tuple[str, ...], **kwargs: object) -> Cluster:
    jobs = WorkerJobs(
        run_dir=run_dir,
        address="127.0.0.1:9600",
        count=count,
        spec=run_dir / "worker.json",
        secret_file=run_dir / "ps.secret",
        venv=VENV,
        command=command,
    )
    description = render_submit_description(load_profile("local-pool"), jobs)
    return submit_cluster(description, jobs.log_dir / "workers.log", **kwargs)  # type: ignore[arg-type]


def wait_for(monitor: ClusterMonitor, done: object, timeout: float = 300.0) -> dict[int, JobStatus]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        monitor.poll()
        if done(monitor.jobs):  # type: ignore[operator]
            return monitor.jobs
        time.sleep(0.5)
    states = {job.job_id: job.state for job in monitor.jobs.values()}
    raise AssertionError(f"jobs did not get there within {timeout:g} s: {states}")


def test_one_cluster_runs_as_the_job_user_and_reaches_done(pool: Pool) -> None:
    run_dir = pool.run_dir("done")
    cluster = submit(run_dir, 3, ("gridtrain", "--version"))
    assert cluster.count == 3
    ads = query_jobs(f"ClusterId == {cluster.cluster_id}", ["ProcId", "Owner", "RequestGPUs"])
    assert sorted(ad["ProcId"] for ad in ads) == [0, 1, 2]  # one cluster, three procs
    assert {ad["Owner"] for ad in ads} == {pool.user}

    monitor = ClusterMonitor(Path(cluster.event_log), cluster.cluster_id)
    jobs = wait_for(
        monitor, lambda jobs: len(jobs) == 3 and all(j.state.final for j in jobs.values())
    )
    assert {job.state for job in jobs.values()} == {JobState.DONE}
    assert all(job.attempts == 1 and job.return_value == 0 for job in jobs.values())
    from_log, source = cluster_jobs(cluster)
    assert source.startswith("event log")
    assert {proc: job.state for proc, job in from_log.items()} == dict.fromkeys(
        range(3), JobState.DONE
    )

    # The event log gone (a lost run directory on another disk): the schedd's history answers.
    Path(cluster.event_log).rename(run_dir / "moved.log")
    from_schedd, source = cluster_jobs(cluster)
    assert source.startswith("schedd")
    assert {
        proc: (job.state, job.return_value) for proc, job in from_schedd.items()
    } == dict.fromkeys(range(3), (JobState.DONE, 0))

    gpus = set()
    for index in range(3):
        out = (run_dir / "condor" / f"{run_dir.name}-w{index}.out").read_text()
        assert f"as {pool.user} " in out
        assert f"gridtrain {__version__}" in out
        assert f"(index {index})" in out
        gpus.add(out.split("CUDA_VISIBLE_DEVICES=")[1].split()[0])
    assert all(gpu.startswith("GPU-") for gpu in gpus)  # the simulated GPUs, one per job


def test_job_ad_has_no_secret_and_a_held_job_is_reported(pool: Pool) -> None:
    run_dir = pool.run_dir("held")
    secret = (run_dir / "ps.secret").read_text().strip()
    cluster = submit(run_dir, 2, ("sleep", "600"))
    monitor = ClusterMonitor(Path(cluster.event_log), cluster.cluster_id)
    try:
        wait_for(monitor, lambda jobs: any(j.state is JobState.RUNNING for j in jobs.values()))
        ads = query_jobs(f"ClusterId == {cluster.cluster_id}")
        assert len(ads) == 2
        assert all(secret not in repr(ad) for ad in ads)
        long_listing = pool.in_root("condor_q", "-l", str(cluster.cluster_id))
        assert "GridtrainWorker" in long_listing  # it is the full ad ...
        assert secret not in long_listing  # ... and the secret is not in it
        assert "ps.secret" in long_listing  # only the file's name travels

        pool.in_root("condor_hold", "-reason", "gridtrain test hold", f"{cluster.cluster_id}.1")
        jobs = wait_for(monitor, lambda jobs: jobs.get(1) and jobs[1].state is JobState.HELD)
        assert jobs[1].hold_reason is not None
        assert "gridtrain test hold" in jobs[1].hold_reason
        assert jobs[1].hold_reason_code == 1  # UserRequest
        no_log = Cluster(cluster.cluster_id, 2, str(run_dir / "condor" / "gone.log"))
        from_queue, source = cluster_jobs(no_log)  # without the event log: the schedd's queue
        assert source.startswith("schedd")
        assert from_queue[1].state is JobState.HELD
        assert from_queue[1].hold_reason_code == 1
        assert "gridtrain test hold" in str(from_queue[1].hold_reason)
        assert from_queue[0].state is JobState.RUNNING
    finally:
        remove_cluster(cluster)
    jobs = wait_for(monitor, lambda jobs: all(j.removed for j in jobs.values()) and len(jobs) == 2)
    assert {job.state for job in jobs.values()} == {JobState.FAILED}


def test_condor_submit_fallback_submits_one_cluster(pool: Pool) -> None:
    run_dir = pool.run_dir("fallback")
    command = pool.command("condor_submit", user=pool.user)
    cluster = submit(run_dir, 2, ("true",), use_bindings=False, submit_command=command)
    assert cluster.via == "condor_submit"
    assert cluster.count == 2
    monitor = ClusterMonitor(Path(cluster.event_log), cluster.cluster_id)
    jobs = wait_for(
        monitor, lambda jobs: len(jobs) == 2 and all(j.state.final for j in jobs.values())
    )
    assert {job.state for job in jobs.values()} == {JobState.DONE}


def test_a_vacated_job_is_reported_evicted_and_runs_again(pool: Pool) -> None:
    run_dir = pool.run_dir("vacate")
    cluster = submit(run_dir, 1, ("sleep", "600"))
    monitor = ClusterMonitor(Path(cluster.event_log), cluster.cluster_id)
    try:
        wait_for(monitor, lambda jobs: jobs.get(0) and jobs[0].state is JobState.RUNNING)
        pool.in_root("condor_vacate_job", f"{cluster.cluster_id}.0")
        jobs = wait_for(monitor, lambda jobs: jobs[0].attempts == 2)
        assert jobs[0].state is JobState.RUNNING
        states = [state for proc, state in monitor.transitions if proc == 0]
        assert states == [JobState.IDLE, JobState.RUNNING, JobState.EVICTED, JobState.RUNNING]
    finally:
        remove_cluster(cluster)


def test_gridtrain_submit_records_the_cluster_in_the_run_directory(
    pool: Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = pool.run_dir("cli")
    (run_dir / "ps.address").write_text("127.0.0.1:9600\n")
    assert main(["submit", str(run_dir), "--workers", "2", "--hold"]) == 0
    [cluster] = JobsRecord.load(RunDir(run_dir).condor_jobs).clusters
    try:
        assert f"as cluster {cluster.cluster_id} on hold" in capsys.readouterr().out
        assert cluster.count == 2
        assert cluster.event_log == str(run_dir / "condor" / "workers.log")
        ads = query_jobs(f"ClusterId == {cluster.cluster_id}", ["JobStatus", "Owner", "Args"])
        assert [ad["JobStatus"] for ad in ads] == [5, 5]  # held, as asked
        assert {ad["Owner"] for ad in ads} == {pool.user}
        assert sorted(str(ad["Args"]) for ad in ads) == [
            f"{run_dir.name}-w0 0",
            f"{run_dir.name}-w1 1",
        ]
    finally:
        remove_cluster(cluster)
