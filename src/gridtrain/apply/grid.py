"""``gridtrain apply --executor condor``: the files scored by ONE HTCondor cluster, watched from
here until it ends, then every output verified.

Layer: apply, orchestration over the batch-system layer (``gridtrain.condor``), which it uses as
training does: ``apply_jobs`` renders the cluster (job k scores file group k with the same
``gridtrain apply`` command), ``submit`` submits and removes, ``monitor.ClusterMonitor`` follows
the job event log, ``record.JobsRecord`` keeps the clusters in ``DIR/condor/jobs.json``.

Before submitting, every input is opened and checked as a local run checks it, and the files
whose scores are finished and verified already are left out: a rerun after an interruption, or
after jobs that failed, submits only what is left. The policies while the jobs run:

- eviction (vacate, preemption): the wrapper forwards SIGTERM to ``gridtrain apply``, which
  removes the scores file it was writing, and exits 85; HTCondor runs the job again by itself,
  and the new attempt skips the files of its group that are finished and verified;
- a job that exits non-zero is rerun by HTCondor up to the profile's ``max_retries``;
- holds: the profile's transient codes are released by the schedd (``periodic_release``), a hold
  by a person (``condor_hold``) waits for ``condor_release``; any other hold does not heal by
  waiting: the job is removed, and its files are reported below.

When every job has ended each output is verified with the marker check of a local run
(``outputs.finished``: entries, checksums, what it was made from); a file without verified
scores is named in one line with its job and the way out (run the same command again).
Interrupted here (Ctrl-C), the cluster is removed; the files finished so far stay.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gridtrain.apply.outputs import Request, check_format, check_names, finished, output_name
from gridtrain.apply.scoring import ApplySettings, Scorer
from gridtrain.backend import DEFAULT_BACKEND, backend_environment
from gridtrain.condor.apply_jobs import (
    ApplyJobs,
    file_groups,
    render_apply_description,
    write_group_lists,
)
from gridtrain.condor.monitor import ClusterMonitor, JobStatus
from gridtrain.condor.proxy import check_proxy
from gridtrain.condor.record import JobsRecord
from gridtrain.condor.render import current_venv
from gridtrain.condor.site import SiteProfile
from gridtrain.condor.submit import Cluster, remove_cluster, remove_jobs, submit_cluster
from gridtrain.condor.worker_jobs import ship_environment
from gridtrain.errors import ApplyError, CondorError, ConfigError
from gridtrain.jobstate import JobState
from gridtrain.paths import is_url
from gridtrain.rundir import RunDir
from gridtrain.train.condor_executor import HOLD_BY_USER, owner_uid

log = logging.getLogger(__name__)

CONDOR_DIR = "condor"  # below the output folder: event log, jobs' stdout/stderr, file lists
JOBS_RECORD = "jobs.json"
POLL_SECONDS = 1.0
LISTED_FAILURES = 5  # files named in the error line; the rest counted


@dataclass
class JobsProgress:
    """Where the cluster stands: its jobs by state, and the scores files written so far."""

    cluster_id: int
    jobs: int
    states: Counter[JobState] = field(default_factory=Counter)
    evicted: int = 0  # jobs that started more than once (evicted, or failed and retried)
    files: int = 0
    written: int = 0

    def line(self) -> str:
        states = ", ".join(f"{self.states[s]} {s}" for s in JobState if self.states[s])
        again = f" ({self.evicted} run again)" if self.evicted else ""
        return (
            f"cluster {self.cluster_id}: {self.jobs} jobs: {states or 'submitted'}{again}; "
            f"{self.written}/{self.files} files written"
        )


@dataclass
class GridSummary:
    files: int
    skipped: int  # finished and verified before submitting
    events: int = 0  # of the files the jobs scored
    seconds: float = 0.0
    cluster_id: int | None = None
    jobs: int = 0
    evicted: int = 0  # jobs that started more than once (evicted, or failed and retried)

    def line(self) -> str:
        done = f" ({self.skipped} finished already, skipped)" if self.skipped else ""
        rate = self.events / self.seconds if self.seconds > 0 else 0.0
        text = (
            f"{self.files} files{done}, {self.events} events scored in {self.seconds:.1f} s "
            f"({rate:,.0f} events/s)"
        )
        if self.cluster_id is not None:
            jobs = f"{self.jobs} job{'s' if self.jobs != 1 else ''}"
            again = f", {self.evicted} run again" if self.evicted else ""
            text += f" by cluster {self.cluster_id} ({jobs}{again})"
        return f"{text}, every output verified"


Progress = Callable[[JobsProgress], None]


def apply_on_condor(
    settings: ApplySettings,
    paths: Sequence[str],
    profile: SiteProfile,
    *,
    files_per_job: int = 1,
    export_dir: Path | None = None,
    progress: Progress | None = None,
    poll_seconds: float = POLL_SECONDS,
) -> GridSummary:
    """Score ``paths`` as one cluster of jobs, ``files_per_job`` files each; wait for it and
    verify every output. ``ApplyError`` naming the files without verified scores."""
    began = time.perf_counter()
    if not paths:
        raise ApplyError("no input files; name at least one ROOT file")
    check_format(settings.format)
    # The jobs run elsewhere: every local path absolute (the same path on a shared filesystem).
    paths = [path if is_url(path) else str(Path(path).absolute()) for path in paths]
    check_names(paths)
    settings = dataclasses.replace(settings, out=settings.out.absolute())
    requests = _check_inputs(settings, paths)
    todo = _left_to_score(settings, requests)
    summary = GridSummary(len(paths), len(paths) - len(todo))
    if todo:
        groups = file_groups(todo, files_per_job)
        jobs = _jobs(settings, profile, groups, export_dir)
        cluster = _submit(profile, jobs, settings.out)
        summary.cluster_id, summary.jobs = cluster.cluster_id, jobs.count
        ended = _wait(profile, cluster, jobs, settings.out, progress, poll_seconds)
        summary.evicted = sum(job.attempts > 1 for job in ended.values())
        _verify(settings.out, requests, groups, ended, jobs, cluster)
        summary.events = sum(requests[path].entries for path in todo)
    summary.seconds = time.perf_counter() - began
    return summary


def _check_inputs(settings: ApplySettings, paths: list[str]) -> dict[str, Request]:
    """Every input opened and checked here (tree, branches, ``--keep``) before anything is
    submitted, as a local run checks them; what each scores file must be made from."""
    scorer = Scorer(settings)  # loads no model: only what the inputs and the outputs are
    requests = {}
    for path in paths:
        reader, layout = scorer.open(path)
        try:
            requests[path] = scorer.request(path, reader, layout)
        finally:
            reader.close()
    return requests


def _left_to_score(settings: ApplySettings, requests: dict[str, Request]) -> list[str]:
    """The inputs without finished and verified scores. With ``--overwrite`` every earlier
    scores file of these inputs is removed first, so the jobs score them all and still skip,
    after an eviction, what they finished themselves."""
    todo = []
    for path, request in requests.items():
        final = settings.out / output_name(path)
        if settings.overwrite:
            final.unlink(missing_ok=True)
            todo.append(path)
        elif not finished(final, request):  # ApplyError: it exists and differs
            todo.append(path)
    return todo


def job_command(settings: ApplySettings, export_dir: Path | None, threads: int) -> list[str]:
    """What job k runs (with the environment's Python): ``gridtrain apply`` of its group's
    files, the run, output folder and options of this command, the list from the job's
    scratch folder (transferred with it)."""
    command = ["python3", "-m", "gridtrain", "apply", str(settings.model.run_dir.absolute())]
    command += ["--files-from", "group-$(ProcId).txt", "--out", str(settings.out)]
    command += ["--engine", settings.model.engine, "--format", settings.format]
    command += ["--threads", str(threads)]
    if export_dir is not None:
        command += ["--export-dir", str(export_dir.absolute())]
    if settings.tree is not None:
        command += ["--tree", settings.tree]
    if settings.selection:
        command.append("--selection")
    if settings.keep:
        command += ["--keep", *settings.keep]  # last: it takes every name after it
    for word in command:
        if any(c.isspace() or c in "\"'" for c in word):
            raise ConfigError(
                f"{word!r}: a path or name with a space or a quote cannot go into a job's "
                "arguments; rename it, or score with --executor local"
            )
    return command


def job_environment(settings: ApplySettings) -> dict[str, str]:
    """The jobs' environment variables besides the profile's: the Keras engine's jobs load the
    model with the backend the run trained with (its worker.json), as its training jobs did; the
    ONNX engine's need no Keras at all."""
    if settings.model.engine != "keras":
        return {}
    spec = RunDir(settings.model.models[0].run_dir).spec
    try:
        backend = json.loads(spec.read_text())["settings"].get("backend") or DEFAULT_BACKEND
    except (OSError, ValueError, KeyError, AttributeError):
        backend = DEFAULT_BACKEND
    return backend_environment(str(backend))


def _jobs(
    settings: ApplySettings,
    profile: SiteProfile,
    groups: list[list[str]],
    export_dir: Path | None,
) -> ApplyJobs:
    log_dir = settings.out / CONDOR_DIR
    log_dir.mkdir(parents=True, exist_ok=True)
    threads = settings.threads if settings.threads > 0 else profile.request_cpus
    return ApplyJobs(
        log_dir=log_dir,
        groups=groups,
        command=job_command(settings, export_dir, threads),
        label=str(settings.out),
        environment=job_environment(settings),
        threads=threads,
        venv=current_venv(),
        wheel=ship_environment(profile, log_dir),
    )


def _submit(profile: SiteProfile, jobs: ApplyJobs, out: Path) -> Cluster:
    check_proxy(profile)
    record_path = jobs.log_dir / JOBS_RECORD
    record = JobsRecord.load(record_path)
    for earlier in record.clusters:  # an earlier apply into DIR, interrupted: its jobs go
        try:
            remove_cluster(earlier, reason="gridtrain apply: a new apply into the same folder")
        except CondorError as err:
            log.debug("%s", err)
    write_group_lists(jobs)
    _grant_owner(profile, jobs, out)
    description = render_apply_description(profile, jobs)
    cluster = submit_cluster(
        description, jobs.event_log, schedd=profile.schedd, collector=profile.collector
    )
    record.add_cluster(cluster)
    record.save(record_path)
    log.debug(
        "submitted %d apply jobs as cluster %d (profile %s)",
        jobs.count,
        cluster.cluster_id,
        profile.name,
    )
    return cluster


def _grant_owner(profile: SiteProfile, jobs: ApplyJobs, out: Path) -> None:
    """With a profile's ``job_owner`` (root submitting for an ordinary user): the owner gets the
    log folder (the shadow writes the event log and the jobs' output there) and the output
    folder (the jobs write the scores there)."""
    if profile.job_owner is None or os.geteuid() != 0:
        return
    uid = owner_uid(profile.job_owner)
    for path in (out, jobs.log_dir):
        os.chown(path, uid, -1)


def _wait(
    profile: SiteProfile,
    cluster: Cluster,
    jobs: ApplyJobs,
    out: Path,
    progress: Progress | None,
    poll_seconds: float,
) -> dict[int, JobStatus]:
    """Follow the event log until every job has ended; the jobs by proc. Interrupted, the
    cluster is removed."""
    monitor = ClusterMonitor(jobs.event_log, cluster.cluster_id)
    outputs = [out / output_name(path) for group in jobs.groups for path in group]
    acted: set[tuple[int, int]] = set()  # (proc, holds) of the holds already handled
    ended = False
    try:
        while True:
            for job in monitor.poll():
                if job.state is JobState.HELD and (job.proc_id, job.holds) not in acted:
                    acted.add((job.proc_id, job.holds))
                    _on_hold(profile, cluster, job)
            ended = len(monitor.jobs) == jobs.count and all(
                job.state.final for job in monitor.jobs.values()
            )
            if progress is not None:
                progress(
                    JobsProgress(
                        cluster.cluster_id,
                        jobs.count,
                        Counter(job.state for job in monitor.jobs.values()),
                        sum(job.attempts > 1 for job in monitor.jobs.values()),
                        len(outputs),
                        sum(path.exists() for path in outputs),
                    )
                )
            if ended:
                return dict(monitor.jobs)
            time.sleep(poll_seconds)
    finally:
        monitor.close()
        if not ended:
            try:
                remove_cluster(cluster, reason="gridtrain apply: stopped")
                log.warning(
                    "removed cluster %d; the files finished so far stay", cluster.cluster_id
                )
            except CondorError as err:
                log.warning("%s", err)


def _on_hold(profile: SiteProfile, cluster: Cluster, job: JobStatus) -> None:
    code = job.hold_reason_code
    if code in profile.release_hold_codes and job.holds <= profile.hold_retries:
        log.warning("job %s held, code %s: the schedd releases it", job.job_id, code)
    elif code == HOLD_BY_USER:
        log.warning(
            "job %s held by a user (%s); it waits for condor_release %s",
            job.job_id,
            job.hold_reason,
            job.job_id,
        )
    else:
        log.warning(
            "job %s held, code %s (%s): removing it; its files are reported at the end",
            job.job_id,
            code,
            job.hold_reason,
        )
        try:
            remove_jobs(
                f"ClusterId == {job.cluster_id} && ProcId == {job.proc_id}",
                schedd=cluster.schedd,
                collector=cluster.collector,
                reason="gridtrain apply: held",
            )
        except CondorError as err:
            log.warning("%s", err)


def _verify(
    out: Path,
    requests: dict[str, Request],
    groups: list[list[str]],
    ended: dict[int, JobStatus],
    jobs: ApplyJobs,
    cluster: Cluster,
) -> None:
    """Every output verified as a local run verifies it; ``ApplyError`` naming the files
    without verified scores, each with its job and how it ended."""
    job_of = {path: index for index, group in enumerate(groups) for path in group}
    failed = []
    for path, request in requests.items():
        final = out / output_name(path)
        try:
            ok = finished(final, request)
            why = "" if ok else ("no scores file" if not final.exists() else "fails verification")
        except ApplyError as err:  # it exists and differs: something else wrote it meanwhile
            ok, why = False, str(err)
        if not ok:
            index = job_of.get(path)
            if index is not None:
                job = ended.get(index)
                how = _how_it_ended(job) if job is not None else "never ran"
                said = _last_error(jobs.stderr(index))
                why += f"; job {cluster.cluster_id}.{index} {how}{said}, see {jobs.stderr(index)}"
            failed.append(f"{path.rsplit('/', 1)[-1]} ({why})")
    if failed:
        more = len(failed) - LISTED_FAILURES
        listed = "; ".join(failed[:LISTED_FAILURES]) + (f"; and {more} more" if more > 0 else "")
        raise ApplyError(
            f"{len(failed)} of {len(requests)} files have no verified scores after cluster "
            f"{cluster.cluster_id} ended: {listed}; run the same command again to score them "
            "(verified outputs are skipped)"
        )


def _how_it_ended(job: JobStatus) -> str:
    if job.removed:
        return "was removed"
    if job.signal is not None:
        return f"was killed by signal {job.signal}"
    if job.return_value is not None:
        return f"exited {job.return_value}"
    return str(job.state)


def _last_error(stderr: Path) -> str:
    """``: <message>`` of the job's last one-line error (``gridtrain apply: error: ...``)."""
    try:
        lines = stderr.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line.split(": error: ", 1)[1] for line in lines if ": error: " in line]
    if not errors:
        return ""
    message = errors[-1].strip()
    return f" ({message[:300]}{'...' if len(message) > 300 else ''})"
