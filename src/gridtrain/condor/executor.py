"""``CondorExecutor``: a run's workers as HTCondor jobs, behind the driver's ``Executor``.

Layer: batch-system edge, composition: ``workers.submit_workers`` submits the N workers as ONE
cluster, ``monitor.ClusterMonitor`` follows the job event log, ``submit.remove_cluster`` ends
them. The driver sees slots, as with local processes; a slot's ``job`` is its current attempt.

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
  queued jobs' ``GridtrainExcludedSites`` is edited in place, resubmissions render it, and
  ``condor/sites.json`` keeps it for a resumed run.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pwd
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from gridtrain.condor.monitor import ClusterMonitor, JobState, JobStatus
from gridtrain.condor.render import EXCLUDED_SITES, CondorProfile, WorkerJobs, current_venv
from gridtrain.condor.submit import (
    Cluster,
    edit_jobs,
    load_clusters,
    query_jobs,
    remove_cluster,
    remove_jobs,
    replace_file,
)
from gridtrain.condor.workers import ship_environment, submit_workers
from gridtrain.errors import CondorError, ConfigError
from gridtrain.train.executor import Executor, Launch, Slot

log = logging.getLogger(__name__)

WORKERS_FILE = "workers.json"  # in condor/: slot -> current job, for `gridtrain status`
SITES_FILE = "sites.json"  # in condor/: failed attempts per site, and the sites excluded
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

    def __init__(
        self,
        profile: CondorProfile,
        run_dir: Path,
        command: Sequence[str] = (),
    ) -> None:
        self.profile = profile
        self.run_dir = run_dir.absolute()
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

    @property
    def condor_dir(self) -> Path:
        return self.run_dir / "condor"

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
                "idle",
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
        self._load_sites()
        self._remove_earlier()
        self._submit(count, 0)
        cluster = max(self._clusters)
        log.info(
            "submitted %d worker jobs as cluster %d (profile %s); PS at %s",
            count,
            cluster,
            self.profile.name,
            launch.address,
        )

    def _remove_earlier(self) -> None:
        """Jobs an earlier driver of this run left queued (it was killed): they dial a dead PS."""
        for cluster in load_clusters(self.condor_dir):
            try:
                remove_cluster(cluster, reason="gridtrain: the run was resumed by a new driver")
            except CondorError as err:
                log.debug("%s", err)  # nothing left of it in the queue

    def restart(self, slot: Slot) -> None:
        slot.restarts += 1
        self._submit(1, slot.index)
        log.info("resubmitted %s as job %s", slot.name, slot.job)

    def _save(self) -> None:
        records = [
            {"index": s.index, "name": s.name, "job": s.job, "restarts": s.restarts}
            for s in sorted(self.slots, key=lambda s: s.index)
        ]
        replace_file(self.condor_dir / WORKERS_FILE, json.dumps(records, indent=1) + "\n")

    # -- watching ------------------------------------------------------------------------------

    def poll(self) -> list[Slot]:
        ended = []
        for cluster_id, monitor in self._monitors.items():
            for job in monitor.poll():
                slot = self._by_job.get((cluster_id, job.proc_id))
                if slot is None or slot.job != job.job_id:
                    continue  # an attempt that a resubmission replaced
                slot.state = job.state.value
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
        self._save_sites()

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

    def _load_sites(self) -> None:
        path = self.condor_dir / SITES_FILE
        if path.is_file():  # a resumed run keeps what it learned
            data = json.loads(path.read_text())
            self.site_failures.update(data.get("failures", {}))
            self.excluded_sites.update(data.get("excluded", []))

    def _save_sites(self) -> None:
        data = {"failures": dict(self.site_failures), "excluded": sorted(self.excluded_sites)}
        replace_file(self.condor_dir / SITES_FILE, json.dumps(data, indent=1) + "\n")

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
        held = [f"{slot.name} {slot.detail}" for slot in live if slot.state == "held"]
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
