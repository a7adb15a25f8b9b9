"""HTCondor site profiles: what a run's worker jobs ask of a pool, and where a profile is found.

Layer: batch-system, configuration. A site profile (``condor.yaml``) is data: resources, retry
and hold policies, sites and accounting, the job environment. Not to be confused with a Snakemake
profile (``profiles/NAME/config.yaml``: how Snakemake runs the rules); the built-in site profiles
live in the package (``sites/NAME.yaml``) and the checkout's ``profiles/NAME/condor.yaml`` link to
them, so that the two kinds of profile of one site sit side by side.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from gridtrain.condor.environment import JobEnvironment
from gridtrain.errors import ConfigError

BUILTIN = Path(str(resources.files("gridtrain.condor"))) / "sites"  # NAME.yaml
PROFILE_FILE = "condor.yaml"
USER_PROFILES = Path("profiles")  # a user's own profiles/NAME/condor.yaml, beside the config

_PROFILE_EXAMPLE = """request_gpus: 1
gpus_minimum_capability: 7.0
gpus_minimum_memory: 8000
request_cpus: 1
request_memory: 2GB
request_disk: 1GB"""


@dataclass(frozen=True)
class SiteProfile:
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


def builtin_profiles() -> list[str]:
    """The names of the profiles that ship with gridtrain."""
    return sorted(path.stem for path in BUILTIN.glob("*.yaml"))


def resolve_profile(name: str | Path) -> Path:
    """A file or folder path first, then ``profiles/NAME/condor.yaml`` under the current folder
    (a user's own profile overrides a built-in one of the same name), then the built-in one."""
    path = Path(name)
    own = USER_PROFILES / str(name) / PROFILE_FILE
    for candidate in (path, path / PROFILE_FILE, own, BUILTIN / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    known = sorted(
        {*builtin_profiles(), *(p.parent.name for p in USER_PROFILES.glob(f"*/{PROFILE_FILE}"))}
    )
    raise ConfigError(
        f"condor profile {str(name)!r} not found (no {path / PROFILE_FILE} nor {own}, and no "
        f"built-in profile of that name); choose one of {', '.join(known)}"
    )


def load_profile(name: str | Path) -> SiteProfile:
    path = resolve_profile(name)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping such as\n{_PROFILE_EXAMPLE}")
    known = set(SiteProfile.__dataclass_fields__) - {"name"}
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
        return SiteProfile(name=profile_name, **values)
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
