"""Submit descriptions for worker jobs, rendered from ``job/worker.sub`` and a site profile.

Layer: batch-system edge, pure text (the site profile comes from ``gridtrain.condor.site``).
Nothing here imports ``htcondor2`` or runs a command: the result is a string that
``gridtrain.condor.submit`` hands to the schedd, and that ``gridtrain submit --dry-run`` prints.
"""

from __future__ import annotations

import string
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from gridtrain.backend import DEFAULT_BACKEND, backend_environment
from gridtrain.condor.site import SiteProfile
from gridtrain.errors import ConfigError
from gridtrain.rundir import RunDir

# Package data, so that an installed wheel has them (the checkout's jobs/ links to them).
# Wheels install unzipped: the folder is a real path, which the schedd needs for the executable.
PACKAGE_DATA = Path(str(resources.files("gridtrain.condor")))
TEMPLATE = PACKAGE_DATA / "job" / "worker.sub"
WRAPPER = PACKAGE_DATA / "job" / "worker.sh"
EXIT_EVICTED = 85  # the wrapper's exit code after SIGTERM, and checkpoint_exit_code
EXCLUDED_SITES = "GridtrainExcludedSites"  # job attribute: sites the run's jobs must avoid


@dataclass(frozen=True)
class WorkerJobs:
    """One run's worker jobs: everything but the pool's resources."""

    run_dir: Path
    address: str  # HOST:PORT of the parameter server; not secret
    count: int
    spec: Path  # worker.json
    secret_file: Path  # ps.secret, transferred (mode 0600), never in the ClassAd
    run_name: str = ""
    venv: Path | None = None  # environment kind host: the Python environment (same path)
    wheel: Path | None = None  # a gridtrain wheel, for environments that ship it
    wrapper: Path = WRAPPER
    command: Sequence[str] = ()  # instead of `gridtrain worker ...`: worker.sh NAME INDEX -- ...
    first_index: int = 0
    backend: str = DEFAULT_BACKEND  # train.backend: the jobs' KERAS_BACKEND

    @property
    def name(self) -> str:
        return self.run_name or self.run_dir.name

    @property
    def log_dir(self) -> Path:
        return RunDir(self.run_dir).condor

    def worker_names(self) -> list[str]:
        return [f"{self.name}-w{i}" for i in range(self.first_index, self.first_index + self.count)]


def current_venv() -> Path:
    """This process's Python environment (a venv, conda or system prefix): environment kind host
    runs the jobs with it, at the same path on the execute node."""
    return Path(sys.prefix)


class _Template(string.Template):
    delimiter = "@"  # $(...) belongs to HTCondor


def job_items(jobs: WorkerJobs) -> list[dict[str, str]]:
    """The item data of the cluster: one job per worker index."""
    return [
        {"worker_index": str(jobs.first_index + i), "worker_name": name}
        for i, name in enumerate(jobs.worker_names())
    ]


def _environment(jobs: WorkerJobs, profile: SiteProfile) -> str:
    # Never the secret: this string is in the job ClassAd.
    values = {"GRIDTRAIN_PS_ADDRESS": jobs.address, "GRIDTRAIN_THREADS": str(profile.request_cpus)}
    values.update(backend_environment(jobs.backend))
    values.update(profile.environment.variables(jobs.venv, jobs.wheel))
    return environment_line(values)


def environment_line(values: Mapping[str, str]) -> str:
    """``values`` in HTCondor's quoted environment syntax: NAME=value separated by spaces,
    'single' quotes around values with spaces (the ``environment`` command, in double quotes)."""
    for key, value in values.items():
        if any(c in value for c in "\"'\n"):
            raise ConfigError(
                f"{key}={value!r}: quotes and newlines cannot go into a job environment"
            )
    return " ".join(f"{k}='{v}'" if " " in v else f"{k}={v}" for k, v in values.items())


def _command(command: Sequence[str]) -> str:
    """`` -- COMMAND ARG...`` for the wrapper's arguments (old syntax: split on white space)."""
    for word in command:
        if not word or any(c.isspace() or c in "\"'" for c in word):
            raise ConfigError(
                f"job command word {word!r}: empty, or with a space or a quote; use a script"
            )
    return "".join(f" {word}" for word in ("--", *command)) if command else ""


def _quoted(value: str, key: str) -> str:
    if '"' in value or "\n" in value:
        raise ConfigError(f"{key}: {value!r}: quotes and newlines cannot go into a ClassAd string")
    return f'"{value}"'


def _requirements(profile: SiteProfile) -> list[str]:
    """The job's requirements: the profile's, and the GPU request for pools of any age.

    Recent pools match ``gpus_minimum_capability``/``_memory`` (``require_gpus``) against each
    GPU's own ad; pools from before HTCondor 9 advertise ``CUDACapability`` and
    ``CUDAGlobalMemoryMb`` on the slot instead and ignore ``require_gpus``. The fallback clauses
    test those attributes where they are defined, so one description matches on both.
    """
    clauses = []
    if profile.request_gpus > 0 and profile.gpus_minimum_capability is not None:
        clauses.append(
            "(isUndefined(TARGET.CUDACapability) || "
            f"TARGET.CUDACapability >= {profile.gpus_minimum_capability})"
        )
    if profile.request_gpus > 0 and profile.gpus_minimum_memory is not None:
        clauses.append(
            "(isUndefined(TARGET.CUDAGlobalMemoryMb) || "
            f"TARGET.CUDAGlobalMemoryMb >= {profile.gpus_minimum_memory})"
        )
    if profile.site_attribute:
        site = f"TARGET.{profile.site_attribute}"
        clauses.append(f"(isUndefined({site}) || !stringListMember({site}, MY.{EXCLUDED_SITES}))")
    clauses += [f"({expression})" for expression in profile.requirements]
    return clauses


def _site_commands(profile: SiteProfile) -> dict[str, str]:
    commands: dict[str, str] = {}
    clauses = _requirements(profile)
    if clauses:
        commands["requirements"] = " && ".join(clauses)
    if profile.project_name is not None:
        commands["+ProjectName"] = _quoted(profile.project_name, "project_name")
    if profile.desired_sites:
        commands["+DESIRED_Sites"] = _quoted(",".join(profile.desired_sites), "desired_sites")
    if profile.undesired_sites:
        commands["+UNDESIRED_Sites"] = _quoted(",".join(profile.undesired_sites), "undesired_sites")
    if profile.site_attribute:
        if not profile.site_attribute.isidentifier():
            raise ConfigError(f"site_attribute {profile.site_attribute!r}: not a ClassAd name")
        commands["job_machine_attrs"] = profile.site_attribute  # MachineAttr<attr>0 on the job
        commands[f"+{EXCLUDED_SITES}"] = _quoted(",".join(profile.undesired_sites), "sites")
    if profile.container_image is not None:
        commands["+SingularityImage"] = _quoted(profile.container_image, "container_image")
    if profile.x509_proxy:
        commands["use_x509userproxy"] = "True"
    if profile.job_flavour is not None:
        commands["+JobFlavour"] = _quoted(profile.job_flavour, "job_flavour")
    return commands


def _extra(profile: SiteProfile, jobs: WorkerJobs) -> dict[str, str]:
    extra = dict(profile.extra)
    if profile.late_materialization and jobs.count > 1:
        # One cluster ad and the item data go to the schedd, which materializes the jobs: about
        # a third faster for 1,000 jobs than sending every job's ad (benchmarks/submit.py).
        extra["max_materialize"] = str(jobs.count)
    return extra


def render_submit_description(
    profile: SiteProfile, jobs: WorkerJobs, template: Path = TEMPLATE
) -> str:
    """The submit description of one cluster holding ``jobs.count`` workers."""
    if jobs.count < 1:
        raise ConfigError(f"--workers {jobs.count}: submit at least one worker")
    gpu_requirements = []
    if profile.gpus_minimum_capability is not None:
        gpu_requirements.append(f"gpus_minimum_capability = {profile.gpus_minimum_capability}")
    if profile.gpus_minimum_memory is not None:
        gpu_requirements.append(f"gpus_minimum_memory     = {profile.gpus_minimum_memory}")
    codes = " || ".join(f"HoldReasonCode =?= {code}" for code in profile.release_hold_codes)
    items = "".join(f"{item['worker_index']} {item['worker_name']}\n" for item in job_items(jobs))
    run_dir = jobs.run_dir.absolute()
    return _Template(template.read_text()).substitute(
        wrapper=jobs.wrapper.absolute(),
        run_dir=run_dir,
        log_dir=RunDir(run_dir).condor,
        event_log=RunDir(run_dir).condor_event_log,
        environment=_environment(jobs, profile),
        spec=jobs.spec.absolute(),
        secret_file=jobs.secret_file.absolute(),
        environment_files="".join(f", {f}" for f in profile.environment.files(jobs.wheel)),
        request_gpus=profile.request_gpus,
        gpu_requirements="\n".join(gpu_requirements),
        request_cpus=profile.request_cpus,
        request_memory=profile.request_memory,
        request_disk=profile.request_disk,
        max_retries=profile.max_retries,
        hold_retries=profile.hold_retries,
        release_codes=codes or "false",
        release_after=profile.release_after,
        run_name=jobs.name,
        command=_command(jobs.command),
        site="\n".join(f"{k:<23} = {v}" for k, v in _site_commands(profile).items()),
        extra="\n".join(f"{k} = {v}" for k, v in _extra(profile, jobs).items()),
        items=items,
    )
