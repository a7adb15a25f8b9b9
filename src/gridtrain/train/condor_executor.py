"""``CondorExecutor``: a run's workers as HTCondor jobs, behind the driver's ``Executor``.

Layer: train, process edge over the batch-system layer (``gridtrain.condor``), composition:
``workers.submit_workers`` submits the N workers as ONE cluster, ``monitor.ClusterMonitor``
follows the job event log, ``submit.remove_cluster`` ends them. The driver sees slots, as with
local processes; a slot's ``job`` is its current attempt.

Policies (written down here, shown by ``gridtrain status``):

- eviction (vacate, preemption): the wrapper exits 85, the checkpoint exit code, and HTCondor
  runs the job again by itself; the slot stays alive, its leases went back to the PS when its
  connection closed;
- a job that exits non-zero is rerun by HTCondor up to the profile's ``max_retries``; when it is
  still failing (or removed), the slot ends and the driver resubmits it as a one-job cluster
  within the run's restart budget;
- holds: the transient codes of the profile (``release_hold_codes``) are released by the schedd
  itself (``periodic_release``); a hold by a person (code 1, ``condor_hold``) is respected: the
  job waits for ``condor_release`` while the other workers go on; any other hold (memory or disk
  exceeded, a policy) does not heal by waiting: the job is removed and the slot ends, so the
  driver resubmits it within the budget;
- sites (with the profile's ``site_attribute``): each job records the site it ran on; a site
  where ``exclude_site_after`` attempts failed (exited non-zero, including the wrapper's 86 for
  a missing environment, or held past the policy) is excluded for the rest of the run: the
  queued jobs' ``GridtrainExcludedSites`` is edited in place, resubmissions render it, and the
  run's jobs record keeps it for a resumed run.

Everything the executor must remember is in one record, ``condor/jobs.json``
(``gridtrain.condor.record``): the clusters, each worker's current job and resubmissions, the
site failures and exclusions. ``status()`` and ``cancel()`` work from that record alone, in a new
process (``CondorExecutor.attach``), whether the driver still runs or not.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pwd
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gridtrain.condor.monitor import ClusterMonitor, JobStatus, cluster_jobs
from gridtrain.condor.record import JobsRecord, WorkerRecord
from gridtrain.condor.render import EXCLUDED_SITES, WorkerJobs, current_venv
from gridtrain.condor.site import SiteProfile
from gridtrain.condor.submit import (
    Cluster,
    edit_jobs,
    query_jobs,
    remove_cluster,
    remove_jobs,
)
from gridtrain.condor.worker_jobs import ship_environment, submit_workers
from gridtrain.errors import CondorError, ConfigError
from gridtrain.jobstate import JobState
from gridtrain.rundir import RunDir
from gridtrain.train.executor import Executor, Launch, Slot

log = logging.getLogger(__name__)

HOLD_BY_USER = 1  # HoldReasonCode UserRequest: condor_hold


def owner_uid(owner: str | int) -> int:
    """A profile's ``job_owner`` as a uid: digits, or a user name known to this host."""
    if isinstance(owner, int) or str(owner).isdigit():
        return int(owner)
    try:
        return pwd.getpwnam(str(owner)).pw_uid
    except KeyError:
        raise ConfigError(
            f"job_owner {owner!r}: no such user on this host; give the uid instead"
        ) from None


class CondorExecutor(Executor):
    """Workers as jobs of one HTCondor cluster (plus one-job clusters for resubmissions)."""

    name = "condor"
    # A job leaves after its worker: the starter sends the job's output back, which a removal
    # would lose; on a busy pool that takes more than a few seconds.
    leave_grace = 60.0

    def __init__(
        self,
        profile: SiteProfile,
        run_dir: Path,
        command: Sequence[str] = (),
    ) -> None:
        self.profile = profile
        self.run_dir = run_dir.absolute()
        self.files = RunDir(self.run_dir)
        self.venv = current_venv()  # environment kind host
        self.wheel: Path | None = None  # environments that ship gridtrain: built at start
        self.command = tuple(command)  # replaces `gridtrain worker ...` (tests)
        self.slots: list[Slot] = []
        self._launch: Launch | None = None
        self._by_job: dict[tuple[int, int], Slot] = {}
        self._clusters: dict[int, Cluster] = {}
        self._monitors: dict[int, ClusterMonitor] = {}
        self.site_failures: Counter[str] = Counter()
        self.excluded_sites: set[str] = set(profile.undesired_sites)

    @classmethod
    def attach(cls, run_dir: Path) -> CondorExecutor:
        """An executor over a run's recorded jobs, for ``status`` and ``cancel`` only: it needs
        no profile (the one the run was started with may not resolve from here)."""
        return cls(SiteProfile(name="(attached)"), run_dir)

    @property
    def condor_dir(self) -> Path:
        return self.files.condor

    def ps_hosts(self) -> tuple[str, str]:
        return self.profile.ps_hosts()

    def log_dir(self) -> Path:
        return self.condor_dir

    def log_file(self, slot: Slot) -> Path:
        return self.condor_dir / f"{slot.name}.err"

    # -- submitting ----------------------------------------------------------------------------

    def _jobs(self, count: int, first_index: int) -> WorkerJobs:
        assert self._launch is not None
        launch = self._launch
        return WorkerJobs(
            run_dir=self.run_dir,
            address=launch.address,
            count=count,
            spec=launch.spec.absolute(),
            secret_file=launch.secret_file.absolute(),
            run_name=launch.run_name,
            venv=self.venv,
            wheel=self.wheel,
            command=self.command,
            first_index=first_index,
            backend=launch.backend,
        )

    def _grant_owner(self, jobs: WorkerJobs) -> None:
        """Give the job owner what the shadow writes (condor/) and reads privately (ps.secret).

        worker.json stays ours (it is world-readable); what we write into condor/ later is
        written under a fresh temporary name and renamed, so the owner cannot redirect it.
        """
        if self.profile.job_owner is None or os.geteuid() != 0:
            return
        uid = owner_uid(self.profile.job_owner)
        jobs.log_dir.mkdir(parents=True, exist_ok=True)
        for path in (jobs.log_dir, jobs.secret_file):
            os.chown(path, uid, -1)
        jobs.spec.chmod(0o644)

    def _submit(self, count: int, first_index: int) -> None:
        jobs = self._jobs(count, first_index)
        self._grant_owner(jobs)
        # Resubmissions avoid the sites excluded so far (rendered as +UNDESIRED_Sites too).
        sites = tuple(sorted(self.excluded_sites))
        cluster = submit_workers(dataclasses.replace(self.profile, undesired_sites=sites), jobs)
        self._clusters[cluster.cluster_id] = cluster
        self._monitors[cluster.cluster_id] = ClusterMonitor(
            Path(cluster.event_log), cluster.cluster_id
        )
        by_index = {slot.index: slot for slot in self.slots}
        for proc, name in enumerate(jobs.worker_names()):
            index = first_index + proc
            slot = by_index.get(index)
            if slot is None:
                slot = Slot(index, name)
                self.slots.append(slot)
            slot.job, slot.state, slot.detail, slot.returncode = (
                f"{cluster.cluster_id}.{proc}",
                JobState.IDLE,
                "",
                None,
            )
            self._by_job[(cluster.cluster_id, proc)] = slot
        self._save()

    def start(self, launch: Launch, count: int) -> None:
        if count < 1:
            raise ConfigError(f"--workers {count}: start at least one worker")
        self._launch = launch
        self.wheel = ship_environment(self.profile, self.condor_dir)
        record = JobsRecord.load(self.files.condor_jobs)  # a resumed run keeps what it learned
        self.site_failures.update(record.site_failures)
        self.excluded_sites.update(record.excluded_sites)
        self._remove_earlier(record)
        self._submit(count, 0)
        cluster = max(self._clusters)
        log.info(
            "submitted %d worker jobs as cluster %d (profile %s); PS at %s",
            count,
            cluster,
            self.profile.name,
            launch.address,
        )

    def _remove_earlier(self, record: JobsRecord) -> None:
        """Jobs an earlier driver of this run left queued (it was killed): they dial a dead PS."""
        for cluster in record.clusters:
            try:
                remove_cluster(cluster, reason="gridtrain: the run was resumed by a new driver")
            except CondorError as err:
                log.debug("%s", err)  # nothing left of it in the queue

    def restart(self, slot: Slot) -> None:
        slot.restarts += 1
        self._submit(1, slot.index)
        log.info("resubmitted %s as job %s", slot.name, slot.job)

    def _save(self) -> None:
        """The workers and sites into the run's jobs record (submit_workers added the clusters)."""
        record = JobsRecord.load(self.files.condor_jobs)
        record.workers = [
            WorkerRecord(s.index, s.name, s.job, s.restarts)
            for s in sorted(self.slots, key=lambda s: s.index)
        ]
        record.site_failures = dict(self.site_failures)
        record.excluded_sites = sorted(self.excluded_sites)
        record.save(self.files.condor_jobs)

    # -- watching ------------------------------------------------------------------------------

    def poll(self) -> list[Slot]:
        ended = []
        for cluster_id, monitor in self._monitors.items():
            for job in monitor.poll():
                slot = self._by_job.get((cluster_id, job.proc_id))
                if slot is None or slot.job != job.job_id:
                    continue  # an attempt that a resubmission replaced
                slot.state = job.state
                slot.detail = _detail(job)
                if slot.returncode is not None:
                    continue
                if job.state is JobState.HELD:
                    self._on_hold(slot, job)
                if job.state.final:
                    slot.returncode = _returncode(job)
                    if slot.returncode != 0 and not job.removed:
                        self._failed_at_site(job)
                if slot.returncode is not None:
                    ended.append(slot)
        return ended

    def _on_hold(self, slot: Slot, job: JobStatus) -> None:
        code = job.hold_reason_code
        if code in self.profile.release_hold_codes and job.holds <= self.profile.hold_retries:
            log.warning(
                "%s (job %s) held, code %s: the schedd releases it", slot.name, job.job_id, code
            )
            return
        if code == HOLD_BY_USER:
            log.warning(
                "%s (job %s) held by a user (%s); it waits for condor_release %s",
                slot.name,
                job.job_id,
                job.hold_reason,
                job.job_id,
            )
            return
        log.warning(
            "%s (job %s) held, code %s (%s), %d time(s): removing it so that it is resubmitted",
            slot.name,
            job.job_id,
            code,
            job.hold_reason,
            job.holds,
        )
        self._failed_at_site(job)
        self._remove(f"ClusterId == {job.cluster_id} && ProcId == {job.proc_id}", "held")
        slot.returncode = 1

    # -- sites ---------------------------------------------------------------------------------

    def _failed_at_site(self, job: JobStatus) -> None:
        """Count a failed attempt against its site; exclude the site past the profile's limit."""
        after = self.profile.exclude_site_after
        site = self._site_of(job) if self.profile.site_attribute and after > 0 else None
        if site is None:
            return
        self.site_failures[site] += 1
        if self.site_failures[site] >= after and site not in self.excluded_sites:
            self.excluded_sites.add(site)
            log.warning(
                "site %s excluded from this run: %d attempt(s) failed there (last: job %s)",
                site,
                self.site_failures[site],
                job.job_id,
            )
            self._exclude_in_queue()
        self._save()

    def _site_of(self, job: JobStatus) -> str | None:
        """The site of the job's last match (``MachineAttr<site_attribute>0``)."""
        attribute = f"MachineAttr{self.profile.site_attribute}0"
        constraint = f"ClusterId == {job.cluster_id} && ProcId == {job.proc_id}"
        cluster = self._clusters[job.cluster_id]
        for history in (False, True):
            try:
                ads = query_jobs(
                    constraint,
                    [attribute],
                    schedd=cluster.schedd,
                    collector=cluster.collector,
                    history=history,
                )
            except CondorError as err:
                log.debug("%s", err)
                continue
            for ad in ads:
                value = {key.lower(): v for key, v in ad.items()}.get(attribute.lower())
                if value is not None:
                    return str(value)
        return None

    def _exclude_in_queue(self) -> None:
        """Give the run's queued jobs the excluded sites: the negotiator stops matching them."""
        clusters = " || ".join(f"ClusterId == {c}" for c in sorted(self._clusters))
        cluster = next(iter(self._clusters.values()))
        try:
            edit_jobs(
                f"({clusters}) && JobStatus =!= 3 && JobStatus =!= 4",
                EXCLUDED_SITES,
                '"' + ",".join(sorted(self.excluded_sites)) + '"',
                schedd=cluster.schedd,
                collector=cluster.collector,
            )
        except CondorError as err:
            log.warning("%s", err)

    def _remove(self, constraint: str, why: str) -> None:
        cluster = next(iter(self._clusters.values()))
        try:
            remove_jobs(
                constraint,
                schedd=cluster.schedd,
                collector=cluster.collector,
                reason=f"gridtrain: {why}",
            )
        except CondorError as err:
            log.warning("%s", err)

    def running(self) -> int:
        return sum(slot.returncode is None for slot in self.slots)

    def summary(self) -> str:
        live = [slot for slot in self.slots if slot.returncode is None]
        counts = Counter(slot.state for slot in live)
        text = "jobs " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        held = [f"{slot.name} {slot.detail}" for slot in live if slot.state is JobState.HELD]
        text += f" ({'; '.join(held)})" if held else ""
        if self.excluded_sites:
            text += f"; sites excluded: {', '.join(sorted(self.excluded_sites))}"
        return text

    def stop(self, grace: float) -> None:
        """Remove the jobs still queued (running ones get SIGTERM) and wait for them to leave."""
        live = {int(s.job.split(".")[0]) for s in self.slots if s.returncode is None and s.job}
        for cluster_id in sorted(live):
            try:
                remove_cluster(self._clusters[cluster_id], reason="gridtrain: training stopped")
            except CondorError as err:
                log.warning("%s", err)
        deadline = time.monotonic() + grace
        while self.running() and time.monotonic() < deadline:
            self.poll()
            time.sleep(0.5)
        left = [f"{s.name} ({s.job})" for s in self.slots if s.returncode is None]
        if left:
            log.warning("still in the queue after %g s: %s", grace, ", ".join(left))
        for monitor in self._monitors.values():
            monitor.close()

    # -- from a new process: the run's record --------------------------------------------------

    def status(self) -> dict[str, Any] | None:
        record = JobsRecord.load(self.files.condor_jobs)
        if not record.clusters:
            return None
        seen: dict[str, dict[str, Any]] = {}
        sources = []
        for cluster in record.clusters:
            try:
                jobs, source = cluster_jobs(cluster)
            except CondorError as err:  # no event log and no schedd: say so, show the rest
                sources.append(f"cluster {cluster.cluster_id}: unknown ({err})")
                continue
            sources.append(f"cluster {cluster.cluster_id}: {source}")
            for job in jobs.values():
                seen[job.job_id] = {
                    "job": job.job_id,
                    "state": job.state,
                    "attempts": job.attempts,
                    "return_value": job.return_value,
                    "hold_reason": job.hold_reason,
                    "hold_reason_code": job.hold_reason_code,
                    "removed": job.removed,
                }
        unknown = {"state": "unknown", "attempts": 0}
        workers = [
            {
                **seen.get(w.job, {**unknown, "job": w.job}),
                "name": w.name,
                "resubmissions": w.restarts,
            }
            for w in record.workers
        ]
        return {
            "clusters": [c.cluster_id for c in record.clusters],
            "sources": sources,
            "workers": workers,
            "earlier_jobs": len(seen) - sum(w.job in seen for w in record.workers),
            "sites": {"failures": record.site_failures, "excluded": record.excluded_sites},
        }

    def cancel(self) -> int:
        removed = 0
        for cluster in JobsRecord.load(self.files.condor_jobs).clusters:
            constraint = f"ClusterId == {cluster.cluster_id} && JobStatus != 3"
            queued = query_jobs(
                constraint, ["ProcId"], schedd=cluster.schedd, collector=cluster.collector
            )
            if queued:
                remove_cluster(cluster, reason="gridtrain cancel")
                removed += len(queued)
        return removed


def _returncode(job: JobStatus) -> int:
    if job.return_value is not None:
        return job.return_value
    if job.signal is not None:
        return 128 + int(job.signal)
    return 1  # removed


def _detail(job: JobStatus) -> str:
    if job.state is JobState.HELD:
        return f"hold code {job.hold_reason_code}: {job.hold_reason}"
    if job.removed:
        return "removed"
    if job.signal is not None:
        return f"killed by signal {job.signal}"
    if job.return_value is not None and job.state.final:
        return f"exit {job.return_value}"
    return f"attempt {job.attempts}" if job.attempts > 1 else ""
