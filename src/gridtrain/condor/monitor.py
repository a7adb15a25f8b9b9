"""Job states of a cluster, read from its job event log.

Layer: batch-system edge, read-only. ``ClusterMonitor`` follows the user log that the schedd
writes (``htcondor2.JobEventLog``), incrementally, and maps HTCondor's events onto a small common
set of states; it never queries or changes the queue, so it works after the submit host
restarted, from the run directory alone.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gridtrain.condor.submit import htcondor, keep_none_alive

log = logging.getLogger(__name__)


class JobState(enum.StrEnum):
    IDLE = "idle"
    RUNNING = "running"
    HELD = "held"
    EVICTED = "evicted"  # stopped by the pool (vacate, preemption, checkpoint exit); will rerun
    DONE = "done"  # exited 0
    FAILED = "failed"  # exited non-zero, killed by a signal, or removed

    @property
    def final(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED)


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
