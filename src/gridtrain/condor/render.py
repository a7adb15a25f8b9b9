"""Submit descriptions for worker jobs, rendered from ``job/worker.sub`` and a profile.

Layer: batch-system edge, pure text. Nothing here imports ``htcondor2`` or runs a command: the
result is a string that ``gridtrain.condor.submit`` hands to the schedd, and that
``gridtrain submit --dry-run`` prints.
"""

from __future__ import annotations

import socket
import string
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from gridtrain.condor.environment import JobEnvironment
from gridtrain.errors import ConfigError

# Package data, so that an installed wheel has them (the checkout's jobs/ and profiles/NAME/
# condor.yaml are links to these). Wheels install unzipped: the folder is a real path, which the
# schedd needs for the executable it transfers.
PACKAGE_DATA = Path(str(resources.files("gridtrain.condor")))
TEMPLATE = PACKAGE_DATA / "job" / "worker.sub"
WRAPPER = PACKAGE_DATA / "job" / "worker.sh"
SITE_PROFILES = PACKAGE_DATA / "sites"  # the built-in profiles, NAME.yaml
PROFILE_FILE = "condor.yaml"
USER_PROFILES = Path("profiles")  # a user's own profiles/NAME/condor.yaml, beside the config
EXIT_EVICTED = 85  # the wrapper's exit code after SIGTERM, and checkpoint_exit_code
EXCLUDED_SITES = "GridtrainExcludedSites"  # job attribute: sites the run's jobs must avoid

_PROFILE_EXAMPLE = """request_gpus: 1
gpus_minimum_capability: 7.0
gpus_minimum_memory: 8000
request_cpus: 1
request_memory: 2GB
request_disk: 1GB"""


@dataclass(frozen=True)
class CondorProfile:
    """What the worker jobs ask of the pool (``profiles/NAME/condor.yaml``)."""

    name: str
    request_gpus: int = 1
    gpus_minimum_capability: float | None = None
    gpus_minimum_memory: int | None = None  # MB
    request_cpus: int = 1
    request_memory: str = "2GB"
    request_disk: str = "1GB"
    max_retries: int = 3
    hold_retries: int = 3
    release_hold_codes: tuple[int, ...] = (6, 12, 13)
    release_after: int = 30
    late_materialization: bool = False  # max_materialize: the schedd makes the jobs itself
    schedd: str | None = None
    collector: str | None = None
    # The parameter server's host as the jobs reach it; None: listen on every interface and give
    # the jobs this submit host's fully qualified name.
    ps_host: str | None = None
    # The account the jobs run as when it is not the submitting user's (a root-run test pool
    # whose token names an ordinary user): a user name or uid that gets the run's condor/
    # folder, worker.json and ps.secret, which the schedd's shadow reads and writes as that user.
    job_owner: str | int | None = None
    # Sites and accounting (CMS Connect, OSPool, lxplus): plain data, rendered below.
    project_name: str | None = None  # +ProjectName
    desired_sites: tuple[str, ...] = ()  # +DESIRED_Sites
    undesired_sites: tuple[str, ...] = ()  # +UNDESIRED_Sites: sites to avoid (that failed, say)
    # The slot attribute naming a job's site (GLIDEIN_CMSSite, GLIDEIN_Site): with it, the jobs
    # record where they ran, and a site where `exclude_site_after` attempts failed is excluded
    # from the run's jobs (requirements on MY.GridtrainExcludedSites, edited in place).
    site_attribute: str | None = None
    exclude_site_after: int = 2  # failed attempts at one site; 0: never exclude
    requirements: tuple[str, ...] = ()  # ClassAd expressions, ANDed into `requirements`
    container_image: str | None = None  # +SingularityImage, a path under /cvmfs
    x509_proxy: bool = False  # use_x509userproxy; its lifetime is checked before submitting
    job_flavour: str | None = None  # +JobFlavour (lxplus): also the jobs' run-time limit
    max_runtime_hours: float | None = None  # how long a worker job may run (the proxy check)
    # Where the job's Python and gridtrain come from: gridtrain.condor.environment.
    environment: JobEnvironment = field(default_factory=JobEnvironment)
    extra: Mapping[str, str] = field(default_factory=dict)

    def ps_hosts(self) -> tuple[str, str]:
        """(where the parameter server listens, the host name the jobs dial)."""
        if self.ps_host:
            return self.ps_host, self.ps_host
        return "0.0.0.0", socket.getfqdn()  # every interface: the PS authenticates each peer

    def runtime_hours(self) -> float | None:
        """How long the jobs may run: ``max_runtime_hours``, else what ``job_flavour`` allows."""
        if self.max_runtime_hours is not None:
            return float(self.max_runtime_hours)
        if self.job_flavour is not None:
            return JOB_FLAVOURS[self.job_flavour]
        return None


# lxplus's job flavours and their run-time limits in hours (CERN batch documentation).
JOB_FLAVOURS = {
    "espresso": 20 / 60,
    "microcentury": 1.0,
    "longlunch": 2.0,
    "workday": 8.0,
    "tomorrow": 24.0,
    "testmatch": 72.0,
    "nextweek": 168.0,
}


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

    @property
    def name(self) -> str:
        return self.run_name or self.run_dir.name

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "condor"

    def worker_names(self) -> list[str]:
        return [f"{self.name}-w{i}" for i in range(self.first_index, self.first_index + self.count)]


def current_venv() -> Path:
    """This process's Python environment (a venv, conda or system prefix): environment kind host
    runs the jobs with it, at the same path on the execute node."""
    return Path(sys.prefix)


class _Template(string.Template):
    delimiter = "@"  # $(...) belongs to HTCondor


def builtin_profiles() -> list[str]:
    """The names of the profiles that ship with gridtrain."""
    return sorted(path.stem for path in SITE_PROFILES.glob("*.yaml"))


def resolve_profile(name: str | Path) -> Path:
    """A file or folder path first, then ``profiles/NAME/condor.yaml`` under the current folder
    (a user's own profile overrides a built-in one of the same name), then the built-in one."""
    path = Path(name)
    own = USER_PROFILES / str(name) / PROFILE_FILE
    for candidate in (path, path / PROFILE_FILE, own, SITE_PROFILES / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    known = sorted(
        {*builtin_profiles(), *(p.parent.name for p in USER_PROFILES.glob(f"*/{PROFILE_FILE}"))}
    )
    raise ConfigError(
        f"condor profile {str(name)!r} not found (no {path / PROFILE_FILE} nor {own}, and no "
        f"built-in profile of that name); choose one of {', '.join(known)}"
    )


def load_profile(name: str | Path) -> CondorProfile:
    path = resolve_profile(name)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping such as\n{_PROFILE_EXAMPLE}")
    known = set(CondorProfile.__dataclass_fields__) - {"name"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; known: {sorted(known)}")
    values: dict[str, Any] = {k: v for k, v in data.items() if v is not None or k in _NULLABLE}
    if "release_hold_codes" in values:
        values["release_hold_codes"] = tuple(int(code) for code in values["release_hold_codes"])
    for key in ("desired_sites", "undesired_sites", "requirements"):
        value = values.get(key, ())
        if isinstance(value, str) or not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{path}: {key} must be a list of strings, e.g. [T2_US_UCSD]")
        values[key] = tuple(value)
    flavour = values.get("job_flavour")
    if flavour is not None and flavour not in JOB_FLAVOURS:
        raise ConfigError(
            f"{path}: job_flavour {flavour!r} is not one of {', '.join(JOB_FLAVOURS)}"
        )
    values["extra"] = {str(k): str(v) for k, v in (values.get("extra") or {}).items()}
    values["environment"] = JobEnvironment.from_profile(values.get("environment"), path)
    if values["environment"].kind == "container" and not values.get("container_image"):
        raise ConfigError(
            f"{path}: environment kind container needs container_image, e.g. "
            "/cvmfs/unpacked.cern.ch/registry.hub.docker.com/ORG/IMAGE:TAG"
        )
    profile_name = path.parent.name if path.name == PROFILE_FILE else path.stem
    try:
        return CondorProfile(name=profile_name, **values)
    except TypeError as err:
        raise ConfigError(f"{path}: {err}") from None


_NULLABLE = {
    "site_attribute",
    "gpus_minimum_capability",
    "gpus_minimum_memory",
    "schedd",
    "collector",
    "ps_host",
    "job_owner",
    "project_name",
    "container_image",
    "job_flavour",
    "max_runtime_hours",
}


def job_items(jobs: WorkerJobs) -> list[dict[str, str]]:
    """The item data of the cluster: one job per worker index."""
    return [
        {"worker_index": str(jobs.first_index + i), "worker_name": name}
        for i, name in enumerate(jobs.worker_names())
    ]


def _environment(jobs: WorkerJobs, profile: CondorProfile) -> str:
    # HTCondor's quoted environment syntax: NAME=value separated by spaces, 'single' quotes
    # around values with spaces. Never the secret: this string is in the job ClassAd.
    values = {"GRIDTRAIN_PS_ADDRESS": jobs.address, "GRIDTRAIN_THREADS": str(profile.request_cpus)}
    values.update(profile.environment.variables(jobs.venv, jobs.wheel))
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


def _requirements(profile: CondorProfile) -> list[str]:
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


def _site_commands(profile: CondorProfile) -> dict[str, str]:
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


def _extra(profile: CondorProfile, jobs: WorkerJobs) -> dict[str, str]:
    extra = dict(profile.extra)
    if profile.late_materialization and jobs.count > 1:
        # One cluster ad and the item data go to the schedd, which materializes the jobs: about
        # a third faster for 1,000 jobs than sending every job's ad (benchmarks/submit.py).
        extra["max_materialize"] = str(jobs.count)
    return extra


def render_submit_description(
    profile: CondorProfile, jobs: WorkerJobs, template: Path = TEMPLATE
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
        log_dir=run_dir / jobs.log_dir.relative_to(jobs.run_dir),
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
