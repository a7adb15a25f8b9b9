"""``gridtrain doctor``: can this host train on the configured pool? One line per check.

Layer: batch-system edge, read-only (it binds a port for a moment, nothing else). Each check
says what it found, and when it fails, what to do. The checks follow the path of a training:
the schedd that takes the jobs, the grid proxy they carry, the XRootD endpoint they read the
shards from, the parameter-server port they dial, the environment they run in, and a slot in
the pool that can match their GPU request.
"""

from __future__ import annotations

import argparse
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gridtrain.errors import GridtrainError


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    found: str
    fix: str = ""

    def line(self) -> str:
        text = f"{'ok' if self.ok else 'FAIL':<5} {self.name:<12} {self.found}"
        return text + (f" -> {self.fix}" if not self.ok and self.fix else "")


class _Failed(Exception):
    def __init__(self, found: str, fix: str) -> None:
        super().__init__(found)
        self.found, self.fix = found, fix


def check_schedd(profile: Any) -> str:
    from gridtrain.condor.submit import query_jobs

    try:
        queued = query_jobs(
            "true", ["ClusterId"], schedd=profile.schedd, collector=profile.collector
        )
    except GridtrainError as err:
        raise _Failed(
            str(err),
            "check CONDOR_CONFIG (and _CONDOR_SCHEDD_HOST); on the test pool run "
            "tests/pool/pool.sh start",
        ) from None
    return f"{profile.schedd or 'the local schedd'} answers ({len(queued)} jobs in its queue)"


def check_proxy_lifetime(profile: Any) -> str:
    from gridtrain.condor.proxy import check_proxy, proxy_expires, proxy_path

    if not profile.x509_proxy:
        return f"not needed by profile {profile.name}"
    try:
        check_proxy(profile)
    except GridtrainError as err:
        raise _Failed(str(err), "") from None  # the message says how to renew it
    return f"{proxy_path()} valid until {proxy_expires(proxy_path()):%Y-%m-%d %H:%M} UTC"


def check_xrootd(url: str | None, timeout: float) -> str:
    if not url:
        return "stage.url not set: workers read the shards at this host's paths"
    from gridtrain.stage import xrd
    from gridtrain.stage.location import parse_location

    location = parse_location(url)
    if not location.is_remote:
        return f"{url} is a local folder"
    try:
        rtt = xrd.ping(location, timeout)
        checksums = xrd.checksums_enabled(location, timeout)
        version = xrd.server_version(location, timeout) or "unknown version"
    except GridtrainError as err:
        raise _Failed(str(err), "check stage.url and that the server runs") from None
    if not checksums:
        raise _Failed(
            f"{location.server_url} ({version}) answers but computes no adler32",
            "ask for `xrootd.chksum adler32` in its configuration, or use another endpoint",
        )
    return f"{location.server_url} ({version}) answers in {rtt * 1000:.0f} ms, adler32 on"


def check_ps_port(profile: Any) -> str:
    bind, advertised = profile.ps_hosts()
    try:
        listener = socket.create_server((bind, 0))
    except OSError as err:
        raise _Failed(
            f"cannot listen on {bind}: {err.strerror}", "set ps_host in the profile"
        ) from None
    with listener:
        port = listener.getsockname()[1]
        try:
            socket.create_connection((advertised, port), timeout=5).close()
        except OSError as err:
            raise _Failed(
                f"listening on {bind}:{port}, but {advertised}:{port} is unreachable "
                f"({err.strerror or err})",
                "set ps_host to an address the execute nodes reach, or open the port range",
            ) from None
    return f"listens on {bind}, reachable as {advertised}:{port} from here"


def check_environment(profile: Any) -> str:
    """The job environment of the profile exists where this host can see it (/cvmfs, files)."""
    from gridtrain.condor.pack import read_info, stale_reason
    from gridtrain.condor.render import current_venv

    environment = profile.environment
    found = []
    if profile.container_image:
        if not Path(profile.container_image).exists():
            raise _Failed(
                f"container image {profile.container_image} not visible here",
                "mount /cvmfs (or fix container_image); jobs need it on the execute nodes",
            )
        found.append(f"container image {profile.container_image}")
    environment.check()  # a ConfigError names the file and the way out
    if environment.kind == "host":
        prefix = Path(environment.path) if environment.path else current_venv()
        if not (prefix / "bin" / "python3").exists() or not any(
            (prefix / "lib").glob("python3*/site-packages/*gridtrain*")
        ):
            raise _Failed(f"{prefix} holds no gridtrain", "pip install -e . in that environment")
        found.append(f"{prefix} (this host's, at the same path on the execute nodes)")
    elif environment.kind == "lcg":
        setup = Path(environment.path) / "setup.sh"
        if not setup.is_file():
            raise _Failed(
                f"LCG view {setup} not visible here",
                "mount /cvmfs/sft.cern.ch, or fix environment.path (ls /cvmfs/sft.cern.ch/lcg)",
            )
        found.append(f"LCG view {environment.path}, gridtrain shipped as a wheel")
    elif environment.local_tarball is not None:
        info = read_info(environment.local_tarball)
        reason = stale_reason(environment.local_tarball, info)
        if reason:
            raise _Failed(reason, "")
        found.append(f"packed {environment.path}: Python {info.python}, gridtrain {info.gridtrain}")
    elif environment.kind == "packed":
        found.append(f"packed {environment.path} (a URL, transferred by HTCondor)")
    else:
        shipped = environment.ships_gridtrain
        found.append(f"gridtrain {'shipped as a wheel' if shipped else 'from the image'}")
    return "; ".join(found)


def check_backend(profile: Any, backend: str, timeout: float = 60.0) -> str:
    """The job environment's Python can import the run's Keras backend (``train.backend``) and
    Keras: asked of that Python itself where this host can run it (kind host, an LCG view)."""
    import subprocess

    from gridtrain.backend import BACKEND_EXTRAS, BACKEND_MODULES
    from gridtrain.condor.render import current_venv

    environment = profile.environment
    modules = [BACKEND_MODULES[backend], "keras"]
    probe = (
        "import importlib.util as u; "
        f"print(' '.join(m for m in {modules!r} if u.find_spec(m) is None))"
    )
    if environment.kind == "host":
        prefix = Path(environment.path) if environment.path else current_venv()
        command = [str(prefix / "bin" / "python3"), "-c", probe]
        where = str(prefix)
    elif environment.kind == "lcg":
        setup = Path(environment.path) / "setup.sh"
        command = ["bash", "-c", f'source "{setup}" >/dev/null 2>&1 && python3 -c "{probe}"']
        where = f"LCG view {environment.path}"
    else:
        return f"{backend}: not checked from here (environment kind {environment.kind})"
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise _Failed(f"{where}: could not run its Python ({err})", "") from None
    missing = done.stdout.split()
    if done.returncode != 0 or missing:
        raise _Failed(
            f"{where} lacks {', '.join(missing) or 'a working Python'} (train.backend: {backend})",
            f"install gridtrain[{BACKEND_EXTRAS[backend]}] there, or choose another train.backend",
        )
    return f"{where} has {BACKEND_MODULES[backend]} and keras (train.backend: {backend})"


def _gpus(slot: Any) -> list[tuple[float, float]]:
    """(capability, memory MB) of each GPU a slot advertises, new (nested) or old style."""
    nested = slot.get("AvailableGPUs") or []
    found = []
    for ref in nested:
        gpu = slot.eval(str(ref)) if not hasattr(ref, "get") else ref
        if hasattr(gpu, "get"):
            found.append((float(gpu.get("Capability", 0)), float(gpu.get("GlobalMemoryMb", 0))))
    if found:
        return found
    if slot.get("CUDACapability") is not None:
        count = int(slot.get("GPUs") or slot.get("TotalGPUs") or 0)
        cap, memory = float(slot["CUDACapability"]), float(slot.get("CUDAGlobalMemoryMb") or 0)
        return [(cap, memory)] * count
    return []


def check_gpu_match(profile: Any) -> str:
    import classad2

    from gridtrain.condor.submit import htcondor, keep_none_alive

    if profile.request_gpus < 1:
        return "no GPU requested"
    try:
        keep_none_alive()
        slots = htcondor().Collector(profile.collector).query(htcondor().AdType.Startd, "true", [])
    except Exception as err:
        raise _Failed(f"the collector: {err}", "check CONDOR_CONFIG / collector") from None
    minimum_cap = profile.gpus_minimum_capability or 0.0
    minimum_memory = profile.gpus_minimum_memory or 0
    matching = 0
    for slot in slots:
        good = [gpu for gpu in _gpus(slot) if gpu[0] >= minimum_cap and gpu[1] >= minimum_memory]
        wanted = all(
            classad2.ExprTree(expr).eval(scope=classad2.ClassAd(), target=slot) is True
            for expr in profile.requirements
        )
        if wanted and len(good) >= profile.request_gpus:
            matching += 1
    need = (
        f"request_gpus={profile.request_gpus}, capability >= {minimum_cap:g}, "
        f"memory >= {minimum_memory} MB"
    )
    if not matching:
        raise _Failed(
            f"none of {len(slots)} slots can run a worker ({need})",
            "lower gpus_minimum_capability/memory or requirements, or choose another pool",
        )
    return f"{matching} of {len(slots)} slots can run a worker ({need})"


def run_checks(
    profile: Any, stage_url: str | None, timeout: float = 5.0, backend: str = "tensorflow"
) -> list[Check]:
    steps: list[tuple[str, Callable[[], str]]] = [
        ("schedd", lambda: check_schedd(profile)),
        ("proxy", lambda: check_proxy_lifetime(profile)),
        ("xrootd", lambda: check_xrootd(stage_url, timeout)),
        ("ps port", lambda: check_ps_port(profile)),
        ("environment", lambda: check_environment(profile)),
        ("backend", lambda: check_backend(profile, backend)),
        ("gpu match", lambda: check_gpu_match(profile)),
    ]
    checks = []
    for name, step in steps:
        try:
            checks.append(Check(name, True, step()))
        except _Failed as failed:
            checks.append(Check(name, False, failed.found, failed.fix))
        except GridtrainError as err:  # its message names the value and the way out
            checks.append(Check(name, False, str(err)))
    return checks


def register(subparsers: Any) -> None:
    doctor = subparsers.add_parser(
        "doctor",
        help="check that this host can train on the configured HTCondor pool",
        description="One line per check: schedd, grid proxy, XRootD endpoint (stage.url), "
        "parameter-server port, job environment, and a slot that matches the GPU request. "
        "Exits 1 when a check fails.",
    )
    doctor.add_argument("-c", "--config", default="config/config.yaml", help="YAML config")
    doctor.add_argument("--profile", help="condor profile (default: train.condor.profile)")
    doctor.set_defaults(func=_doctor)


def _doctor(args: argparse.Namespace) -> int:
    from gridtrain.condor.site import load_profile
    from gridtrain.config import load_config

    config = load_config(args.config)
    profile = load_profile(args.profile or config["train"]["condor"]["profile"])
    url = config["stage"]["url"]
    timeout = float(config["stage"].get("timeout") or 5.0)
    print(f"gridtrain doctor: profile {profile.name}, config {args.config}")
    checks = run_checks(profile, url, timeout, config["train"]["backend"])
    for check in checks:
        print(f"  {check.line()}")
    failed = [check.name for check in checks if not check.ok]
    print(f"{len(checks) - len(failed)} of {len(checks)} checks passed" +
          (f"; failing: {', '.join(failed)}" if failed else ""))  # fmt: skip
    return 1 if failed else 0
