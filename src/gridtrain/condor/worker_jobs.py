"""A run's worker jobs as one cluster: render, submit, record; what an executor calls.

Layer: batch-system edge, composition only: ``render`` makes the text, ``submit`` talks to the
schedd, and the cluster is recorded in the run's jobs record (``record.JobsRecord``,
``condor/jobs.json``) so that monitoring can re-attach from the run directory alone.
"""

from __future__ import annotations

import logging
from pathlib import Path

from gridtrain.condor.environment import build_wheel
from gridtrain.condor.pack import stale_reason
from gridtrain.condor.proxy import check_proxy
from gridtrain.condor.record import JobsRecord
from gridtrain.condor.render import WorkerJobs, render_submit_description
from gridtrain.condor.site import SiteProfile
from gridtrain.condor.submit import Cluster, submit_cluster
from gridtrain.rundir import RunDir

log = logging.getLogger(__name__)


def submit_workers(profile: SiteProfile, jobs: WorkerJobs, *, hold: bool = False) -> Cluster:
    """Submit ``jobs.count`` workers as ONE cluster and record it in the run directory."""
    check_proxy(profile)
    description = render_submit_description(profile, jobs)
    files = RunDir(jobs.run_dir)
    files.condor.mkdir(parents=True, exist_ok=True)
    cluster = submit_cluster(
        description,
        files.condor_event_log,
        schedd=profile.schedd,
        collector=profile.collector,
        hold=hold,
    )
    record = JobsRecord.load(files.condor_jobs)
    record.add_cluster(cluster)
    record.save(files.condor_jobs)
    return cluster


def ship_environment(profile: SiteProfile, folder: Path) -> Path | None:
    """Check the profile's job environment here; build the gridtrain wheel it ships, if any.

    Returns the wheel (written into ``folder``, the run's condor/), for ``WorkerJobs.wheel``.
    A packed environment from other gridtrain sources is run anyway, with a warning: it may be
    the version the user means to run.
    """
    environment = profile.environment
    environment.check()
    if environment.local_tarball is not None:
        reason = stale_reason(environment.local_tarball)
        if reason:
            log.warning("%s", reason)
    return build_wheel(folder) if environment.ships_gridtrain else None
