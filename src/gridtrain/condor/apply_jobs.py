"""Submit descriptions for ``gridtrain apply`` jobs: one cluster over groups of input files.

Layer: batch-system edge, pure text and plain files, like ``gridtrain.condor.render`` whose
pieces it shares (the site commands, the environment syntax, the job wrapper). Job ``k`` of the
cluster (``queue N``, ``$(ProcId)`` = k) runs ``jobs/worker.sh`` with the apply command in place
of the worker: the wrapper prepares the profile's Python environment and turns an eviction's
SIGTERM into exit 85, so HTCondor runs the job again. Its input files are listed in
``group-k.txt`` (written here, transferred with the job); nothing else is shipped but what the
environment needs. Apply jobs ask for no GPU, whatever the profile asks for its training workers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gridtrain.condor.render import (
    PACKAGE_DATA,
    WRAPPER,
    _command,
    _quoted,
    _site_commands,
    _Template,
    environment_line,
)
from gridtrain.condor.site import SiteProfile
from gridtrain.errors import ConfigError
from gridtrain.files import write_text

TEMPLATE = PACKAGE_DATA / "job" / "apply.sub"
EVENT_LOG = "apply.log"
GROUP_LIST = "group-{index}.txt"  # job k's input files, one per line
JOB_NAME = "apply"  # stdout and stderr of job k: {log_dir}/apply-g{k}.out, .err


def file_groups(paths: Sequence[str], files_per_job: int) -> list[list[str]]:
    """``ceil(len(paths) / files_per_job)`` groups, group k taking files k, k + n, k + 2n, ...
    (as grouped conversion deals a sample's files): at most ``files_per_job`` each, and a list
    sorted by size gives every group a share of the large files."""
    if files_per_job < 1:
        raise ConfigError(f"--files-per-job {files_per_job}: give 1 or more")
    count = math.ceil(len(paths) / files_per_job)
    return [list(paths[k::count]) for k in range(count)]


@dataclass(frozen=True)
class ApplyJobs:
    """One apply's jobs: everything but the pool's resources."""

    log_dir: Path  # the event log, each job's stdout/stderr and file list (DIR/condor)
    groups: Sequence[Sequence[str]]  # job k scores groups[k]
    command: Sequence[str]  # run by the wrapper; reads its files from group-$(ProcId).txt
    label: str = ""  # +GridtrainApply: what the jobs score into (the output folder)
    name: str = JOB_NAME
    environment: Mapping[str, str] = dataclasses.field(default_factory=dict)  # KERAS_BACKEND...
    threads: int = 1
    venv: Path | None = None  # environment kind host: the Python environment (same path)
    wheel: Path | None = None  # a gridtrain wheel, for environments that ship it
    wrapper: Path = WRAPPER

    @property
    def count(self) -> int:
        return len(self.groups)

    @property
    def event_log(self) -> Path:
        return self.log_dir / EVENT_LOG

    def group_list(self, index: int) -> Path:
        return self.log_dir / GROUP_LIST.format(index=index)

    def stderr(self, index: int) -> Path:
        return self.log_dir / f"{self.name}-g{index}.err"


def write_group_lists(jobs: ApplyJobs) -> list[Path]:
    """``group-k.txt`` for every job, in its log folder (each replaced whole)."""
    jobs.log_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for index, group in enumerate(jobs.groups):
        for path in group:
            if "\n" in path:
                raise ConfigError(f"{path!r}: an input file name with a newline")
        write_text(jobs.group_list(index), "".join(f"{path}\n" for path in group))
        written.append(jobs.group_list(index))
    return written


def render_apply_description(
    profile: SiteProfile, jobs: ApplyJobs, template: Path = TEMPLATE
) -> str:
    """The submit description of one cluster of ``jobs.count`` apply jobs."""
    if jobs.count < 1:
        raise ConfigError("no file groups to submit")
    cpu_only = dataclasses.replace(profile, request_gpus=0)  # no GPU clauses in requirements
    values = {"GRIDTRAIN_THREADS": str(jobs.threads), **jobs.environment}
    values.update(profile.environment.variables(jobs.venv, jobs.wheel))
    codes = " || ".join(f"HoldReasonCode =?= {code}" for code in profile.release_hold_codes)
    extra = dict(profile.extra)
    if profile.late_materialization and jobs.count > 1:
        extra["max_materialize"] = str(jobs.count)
    log_dir = jobs.log_dir.absolute()
    return _Template(template.read_text()).substitute(
        wrapper=jobs.wrapper.absolute(),
        name=jobs.name,
        label=_quoted(jobs.label, "the output folder"),
        command=_command(jobs.command).removeprefix(" -- "),
        log_dir=log_dir,
        event_log=log_dir / EVENT_LOG,
        environment=environment_line(values),
        environment_files="".join(f", {f}" for f in profile.environment.files(jobs.wheel)),
        request_cpus=profile.request_cpus,
        request_memory=profile.request_memory,
        request_disk=profile.request_disk,
        max_retries=profile.max_retries,
        hold_retries=profile.hold_retries,
        release_codes=codes or "false",
        release_after=profile.release_after,
        site="\n".join(f"{k:<23} = {v}" for k, v in _site_commands(cpu_only).items()),
        extra="\n".join(f"{k} = {v}" for k, v in extra.items()),
        count=jobs.count,
    )
