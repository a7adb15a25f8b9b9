"""Submitting N worker jobs as ONE cluster against N single-job submissions, on the test pool.

Starts (or reuses) the one-machine HTCondor pool of tests/pool/pool.sh and, in one run:

  one cluster   gridtrain.condor: render jobs/worker.sub for N workers (item data, one queue
                statement) and submit it through the htcondor2 bindings: one transaction;
  per job       the way a per-job executor submits: N descriptions of one worker each, N
                submissions (N transactions) through the same bindings to the same schedd,
                so the comparison is about clustering, not about process start-up;
  condor_submit as a third, informative line: ``--command-jobs`` (50) single-job
                ``condor_submit`` processes, as dask-jobqueue or a cluster-generic executor run
                them, extrapolated to N.

Jobs are submitted on hold (``hold = True``): nothing runs, nothing is matched; both sets are
removed afterwards. Times include rendering, and end when every job is in the queue (the
local-pool profile uses late materialization: the schedd makes the cluster's jobs itself).
Best of ``--rounds`` (3), the order alternating between rounds, since the schedd shares this
machine's two cores with the client. The last line is the ratio per-job / one-cluster (goal
>= 20x, and N = 1,000 in under 10 s).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "pool"))

from pool_helpers import Pool, pool_unavailable  # noqa: E402

from gridtrain.condor.render import WorkerJobs, render_submit_description  # noqa: E402
from gridtrain.condor.site import SiteProfile, load_profile  # noqa: E402
from gridtrain.condor.submit import (  # noqa: E402
    htcondor,
    keep_none_alive,
    query_jobs,
    submit_cluster,
)


def worker_jobs(run_dir: Path, count: int, first_index: int = 0) -> WorkerJobs:
    return WorkerJobs(
        run_dir=run_dir,
        address="127.0.0.1:9600",
        count=count,
        spec=run_dir / "worker.json",
        secret_file=run_dir / "ps.secret",
        venv=REPO / ".venv",
        command=("true",),
        first_index=first_index,
    )


def queued(run_name: str) -> int:
    return len(query_jobs(f'GridtrainRun == "{run_name}"', ["ProcId"]))


def remove_run(run_name: str) -> None:
    htcondor2 = htcondor()
    keep_none_alive()
    htcondor2.Schedd().act(htcondor2.JobAction.Remove, f'GridtrainRun == "{run_name}"')
    deadline = time.monotonic() + 120
    while queued(run_name) and time.monotonic() < deadline:
        time.sleep(0.5)


def submit_one_cluster(run_dir: Path, profile: SiteProfile, count: int) -> float:
    started = time.perf_counter()
    jobs = worker_jobs(run_dir, count)
    description = render_submit_description(profile, jobs)
    cluster = submit_cluster(description, jobs.log_dir / "workers.log", hold=True)
    # With late materialization the schedd makes the jobs after submit returns: the clock stops
    # when all of them are in the queue.
    deadline = time.monotonic() + 60
    while queued(jobs.name) < count and time.monotonic() < deadline:
        time.sleep(0.005)
    elapsed = time.perf_counter() - started
    assert cluster.count == count == queued(jobs.name), "not every job was queued"
    remove_run(jobs.name)
    return elapsed


def submit_per_job(run_dir: Path, profile: SiteProfile, count: int) -> float:
    started = time.perf_counter()
    cluster_ids = set()
    for index in range(count):
        jobs = worker_jobs(run_dir, 1, first_index=index)
        description = render_submit_description(profile, jobs)
        cluster = submit_cluster(description, jobs.log_dir / "workers.log", hold=True)
        cluster_ids.add(cluster.cluster_id)
    elapsed = time.perf_counter() - started
    assert len(cluster_ids) == count == queued(jobs.name), "not every job was queued"
    remove_run(jobs.name)
    return elapsed


def submit_per_job_command(pool: Pool, profile: SiteProfile, count: int) -> float:
    """Seconds per job when each job is one ``condor_submit`` process (dask-jobqueue's way)."""
    run_dir = pool.run_dir("bench-command")
    command = pool.command("condor_submit", user=pool.user)  # as the job user, in the pool
    started = time.perf_counter()
    for index in range(count):
        jobs = worker_jobs(run_dir, 1, first_index=index)
        description = render_submit_description(profile, jobs)
        submit_cluster(
            description,
            jobs.log_dir / "workers.log",
            hold=True,
            use_bindings=False,
            submit_command=command,
        )
    elapsed = time.perf_counter() - started
    assert queued(jobs.name) == count, "not every job was queued"
    remove_run(jobs.name)
    return elapsed / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="worker jobs per method")
    parser.add_argument("--rounds", type=int, default=3, help="best of this many, each method")
    parser.add_argument(
        "--command-jobs",
        type=int,
        default=50,
        help="also time this many single-job condor_submit processes (0: skip)",
    )
    args = parser.parse_args()
    reason = pool_unavailable()
    if reason:
        sys.exit(reason)
    pool = Pool()
    was_up = subprocess.run(["bash", str(REPO / "tests/pool/pool.sh"), "status"],
                            capture_output=True, check=False).returncode == 0  # fmt: skip
    print(f"pool {'reused' if was_up else 'started'} in {pool.start():.1f} s")
    profile = load_profile("local-pool")
    one_cluster: list[float] = []
    per_job: list[float] = []
    try:
        for round_ in range(args.rounds):  # alternate the order: neither always goes first
            methods = [(one_cluster, submit_one_cluster), (per_job, submit_per_job)]
            for times, method in methods[:: 1 if round_ % 2 == 0 else -1]:
                times.append(method(pool.run_dir(f"bench-{round_}"), profile, args.jobs))
        per_command = (
            submit_per_job_command(pool, profile, args.command_jobs) if args.command_jobs else 0.0
        )
    finally:
        for run in pool.runs.glob("bench-*"):
            shutil.rmtree(run, ignore_errors=True)
        if not was_up:
            pool.stop()
    best_cluster, best_single = min(one_cluster), min(per_job)
    rounds = f"best of {args.rounds}"
    print(f"one cluster of {args.jobs} jobs:      {best_cluster:7.2f} s "
          f"({args.jobs / best_cluster:,.0f} jobs/s, {rounds})")  # fmt: skip
    print(f"{args.jobs} single-job submissions: {best_single:7.2f} s "
          f"({args.jobs / best_single:,.0f} jobs/s, {rounds})")  # fmt: skip
    if per_command:
        print(f"{args.jobs} condor_submit processes: {per_command * args.jobs:7.2f} s "
              f"(extrapolated from {args.command_jobs}: {per_command:.3f} s each; "
              f"{per_command * args.jobs / best_cluster:,.0f}x the one cluster)")  # fmt: skip
    print(f"all rounds, one cluster: {' '.join(f'{t:.2f}' for t in one_cluster)} s; "
          f"per job: {' '.join(f'{t:.2f}' for t in per_job)} s")  # fmt: skip
    print(f"ratio per-job / one-cluster: {best_single / best_cluster:.1f}x (goal >= 20x; "
          f"one cluster {'under' if best_cluster < 10 else 'OVER'} 10 s)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
