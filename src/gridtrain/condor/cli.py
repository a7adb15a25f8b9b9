"""``gridtrain submit``: render a run's worker jobs for HTCondor and print or submit them.

Layer: command-line edge over ``gridtrain.condor``; no HTCondor logic lives here.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gridtrain.errors import ConfigError
from gridtrain.rundir import RunDir

_PLACEHOLDER_ADDRESS = "PS_HOST:PORT"


def register(subparsers: Any) -> None:
    submit = subparsers.add_parser(
        "submit",
        help="submit a run's workers as one HTCondor cluster (or print it with --dry-run)",
        description="Render jobs/worker.sub with a condor profile for the run directory "
        "(worker.json, ps.secret, ps.address) and submit N worker jobs as ONE cluster. "
        "--dry-run prints the submit description and the expanded job list instead.",
    )
    submit.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    submit.add_argument("--workers", type=int, required=True, help="number of worker jobs")
    submit.add_argument(
        "--profile", default="local-pool", help="profiles/NAME/condor.yaml (default: local-pool)"
    )
    submit.add_argument("--address", help="PS HOST:PORT (default: RUN_DIR/ps.address)")
    submit.add_argument("--dry-run", action="store_true", help="print, do not submit")
    submit.add_argument("--hold", action="store_true", help="submit the jobs on hold")
    submit.set_defaults(func=_submit)


def _submit(args: argparse.Namespace) -> int:
    from gridtrain.condor.render import (
        WorkerJobs,
        current_venv,
        job_items,
        render_submit_description,
    )
    from gridtrain.condor.site import load_profile
    from gridtrain.condor.worker_jobs import ship_environment, submit_workers

    run_dir: Path = args.run_dir.absolute()
    files = RunDir(run_dir)
    address = args.address
    if address is None and files.address.is_file():
        address = files.address.read_text().strip()
    if address is None:
        if not args.dry_run:
            raise ConfigError(
                f"{files.address}: missing; start the parameter server first "
                "(gridtrain train) or pass --address HOST:PORT"
            )
        address = _PLACEHOLDER_ADDRESS
    profile = load_profile(args.profile)
    jobs = WorkerJobs(
        run_dir=run_dir,
        address=address,
        count=args.workers,
        spec=files.spec,
        secret_file=files.secret,
        venv=current_venv(),
        wheel=ship_environment(profile, run_dir / "condor"),
    )
    description = render_submit_description(profile, jobs)
    if args.dry_run:
        print(description, end="")
        print(f"\n# {jobs.count} job(s) in one cluster, profile {profile.name}:")
        print("# proc  worker_index  worker_name  output")
        for proc, item in enumerate(job_items(jobs)):
            output = jobs.log_dir / f"{item['worker_name']}.out"
            print(f"# {proc:<5} {item['worker_index']:<13} {item['worker_name']}  {output}")
        return 0

    for needed in (jobs.spec, jobs.secret_file):
        if not needed.is_file():
            raise ConfigError(f"{needed}: missing; the run directory is not ready for workers")
    cluster = submit_workers(profile, jobs, hold=args.hold)
    held = " on hold (condor_release them)" if args.hold else ""
    print(f"submitted {cluster.count} worker job(s) as cluster {cluster.cluster_id}{held}")
    return 0
