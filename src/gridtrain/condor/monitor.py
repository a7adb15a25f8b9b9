"""Job states of a cluster, read from its job event log.

Layer: batch-system edge, read-only. ``ClusterMonitor`` follows the user log that the schedd
writes (``htcondor2.JobEventLog``), incrementally, and maps HTCondor's events onto a small common
set of states; it never queries or changes the queue, so it works after the submit host
restarted, from the run directory alone. ``cluster_jobs`` reads a recorded cluster the same way
and falls back to the schedd (queue, then history) when the event log is gone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gridtrain.condor.submit import Cluster, htcondor, keep_none_alive, query_jobs
from gridtrain.jobstate import JobState

log = logging.getLogger(__name__)


@dataclass
class JobStatus:
    """What the event log says about one job (one worker) of the cluster."""

    cluster_id: int
    proc_id: int
    state: JobState = JobState.IDLE
    attempts: int = 0  # how many times it started executing
    return_value: int | None = None
    signal: int | None = None
    hold_reason: str | None = None
    hold_reason_code: int | None = None
    hold_reason_subcode: int | None = None
    holds: int = 0  # how many times it was held
    removed: bool = False

    @property
    def job_id(self) -> str:
        return f"{self.cluster_id}.{self.proc_id}"


class ClusterMonitor:
    """Follows one event log; ``poll()`` returns the jobs whose state changed since last call."""

    def __init__(self, event_log: Path, cluster_id: int | None = None) -> None:
        self.event_log = Path(event_log)
        self.cluster_id = cluster_id
        self.jobs: dict[int, JobStatus] = {}
        self.transitions: list[tuple[int, JobState]] = []  # (proc, new state), in log order
        self._reader: Any = None

    def poll(self) -> list[JobStatus]:
        if self._reader is None:
            if not self.event_log.exists():
                return []
            self._reader = htcondor().JobEventLog(str(self.event_log))
        changed: dict[int, JobStatus] = {}
        keep_none_alive()
        for event in self._reader.events(stop_after=0):
            if self.cluster_id is not None and event.cluster != self.cluster_id:
                continue
            if event.proc < 0:  # the cluster's own events (late materialization), not a job's
                continue
            job = self.jobs.get(event.proc)
            if job is None:
                job = self.jobs[event.proc] = JobStatus(event.cluster, event.proc)
                self.transitions.append((job.proc_id, job.state))
                changed[job.proc_id] = job
            before = job.state
            if apply_event(job, event):
                changed[job.proc_id] = job
                if job.state is not before:
                    self.transitions.append((job.proc_id, job.state))
        return sorted(changed.values(), key=lambda job: job.proc_id)

    def states(self) -> dict[int, JobState]:
        return {proc: job.state for proc, job in sorted(self.jobs.items())}

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def apply_event(job: JobStatus, event: Any) -> bool:
    """Update ``job`` from one ``htcondor2.JobEvent``; False when the event changes nothing."""
    kind = event.type.name
    before = (job.state, job.attempts)
    if kind == "SUBMIT":
        job.state = JobState.IDLE
    elif kind == "EXECUTE":
        job.state = JobState.RUNNING
        job.attempts += 1
    elif kind in ("JOB_EVICTED", "SHADOW_EXCEPTION", "JOB_RECONNECT_FAILED"):
        if not job.state.final:
            job.state = JobState.EVICTED
    elif kind == "JOB_HELD":
        job.state = JobState.HELD
        job.holds += 1
        job.hold_reason = _get(event, "HoldReason")
        code, subcode = _get(event, "HoldReasonCode"), _get(event, "HoldReasonSubCode")
        job.hold_reason_code = None if code is None else int(code)
        job.hold_reason_subcode = None if subcode is None else int(subcode)
        log.warning("job %s held (code %s): %s", job.job_id, job.hold_reason_code, job.hold_reason)
        return True
    elif kind == "JOB_RELEASED":
        job.state = JobState.IDLE
    elif kind == "JOB_TERMINATED":
        if _get(event, "TerminatedNormally"):
            job.return_value = int(_get(event, "ReturnValue") or 0)
            job.state = JobState.DONE if job.return_value == 0 else JobState.FAILED
        else:
            job.signal = _get(event, "TerminatedBySignal")
            job.state = JobState.FAILED
    elif kind == "JOB_ABORTED":
        job.removed = True
        job.state = JobState.FAILED
    else:
        return False
    return (job.state, job.attempts) != before or kind == "JOB_RELEASED"


def _get(event: Any, key: str) -> Any:
    return event.get(key)


# JobStatus codes of a job ClassAd: 1 idle, 2 running, 3 removed, 4 completed, 5 held,
# 6 transferring output, 7 suspended.
_AD_STATES = {
    1: JobState.IDLE,
    2: JobState.RUNNING,
    5: JobState.HELD,
    6: JobState.RUNNING,
    7: JobState.RUNNING,  # suspended: it still holds its slot
}
_AD_PROJECTION = (
    "ProcId",
    "JobStatus",
    "NumJobStarts",
    "NumHolds",
    "ExitCode",
    "ExitBySignal",
    "ExitSignal",
    "HoldReason",
    "HoldReasonCode",
    "HoldReasonSubCode",
)


def status_from_ad(cluster_id: int, ad: dict[str, Any]) -> JobStatus:
    """A ``JobStatus`` from a job ClassAd of the queue or the history."""
    job = JobStatus(
        cluster_id,
        int(ad["ProcId"]),
        attempts=int(ad.get("NumJobStarts") or 0),
        holds=int(ad.get("NumHolds") or 0),
    )
    code = int(ad.get("JobStatus") or 1)
    if code == 3:
        job.state, job.removed = JobState.FAILED, True
    elif code == 4:
        if ad.get("ExitBySignal"):
            job.state, job.signal = JobState.FAILED, ad.get("ExitSignal")
        else:
            job.return_value = int(ad.get("ExitCode") or 0)
            job.state = JobState.DONE if job.return_value == 0 else JobState.FAILED
    else:
        job.state = _AD_STATES.get(code, JobState.IDLE)
    if job.state is JobState.HELD:
        job.hold_reason = ad.get("HoldReason")
        code_value, subcode = ad.get("HoldReasonCode"), ad.get("HoldReasonSubCode")
        job.hold_reason_code = None if code_value is None else int(code_value)
        job.hold_reason_subcode = None if subcode is None else int(subcode)
    return job


def cluster_jobs(cluster: Cluster) -> tuple[dict[int, JobStatus], str]:
    """The jobs of a recorded cluster by proc, and where that came from (log, or schedd)."""
    monitor = ClusterMonitor(Path(cluster.event_log), cluster.cluster_id)
    try:
        monitor.poll()
    finally:
        monitor.close()
    if monitor.jobs:
        return monitor.jobs, f"event log {cluster.event_log}"
    constraint = f"ClusterId == {cluster.cluster_id}"
    ads = [
        ad
        for history in (False, True)  # the queue first, then the jobs that left it
        for ad in query_jobs(
            constraint,
            _AD_PROJECTION,
            schedd=cluster.schedd,
            collector=cluster.collector,
            history=history,
        )
    ]
    jobs: dict[int, JobStatus] = {}
    for ad in ads:  # the queue first: a job in both (leaving the queue) is taken from there
        job = status_from_ad(cluster.cluster_id, ad)
        jobs.setdefault(job.proc_id, job)
    return jobs, f"schedd {cluster.schedd or '(local)'} (no event log at {cluster.event_log})"
