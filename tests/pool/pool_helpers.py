"""The one-machine HTCondor pool of tests/pool/pool.sh, seen from Python (tests, benchmarks).

``Pool.start()`` builds the chroot on first use (about a minute) and starts the daemons (a few
seconds); ``stop()`` stops them and removes the mounts. Jobs run as the chroot's ordinary user
``gridtrain``; run directories live under ``Pool.runs``, shared with the chroot at the same path
and owned by that user, who writes the event log and the jobs' output there.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

POOL_SH = Path(__file__).resolve().with_name("pool.sh")
_counter = itertools.count()


class PoolError(RuntimeError):
    pass


@dataclass
class Pool:
    dir: Path = Path(os.environ.get("GRIDTRAIN_POOL_DIR", "/var/tmp/gridtrain-pool"))

    def _sh(self, action: str, timeout: float) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "GRIDTRAIN_POOL_DIR": str(self.dir)}
        return subprocess.run(
            ["bash", str(POOL_SH), action],
            capture_output=True, text=True, timeout=timeout, env=env, check=False,
        )  # fmt: skip

    def start(self) -> float:
        """Build if needed and start; the seconds it took. Sets CONDOR_CONFIG for the bindings."""
        started = time.monotonic()
        done = self._sh("start", timeout=900)
        if done.returncode != 0:
            raise PoolError(f"pool.sh start exited {done.returncode}:\n{done.stderr}{done.stdout}")
        for line in self._sh("env", timeout=60).stdout.splitlines():
            key, _, value = line.partition("=")
            if key == "CONDOR_CONFIG":
                os.environ["CONDOR_CONFIG"] = value
        import htcondor2

        htcondor2.reload_config()
        return time.monotonic() - started

    def stop(self) -> None:
        done = self._sh("stop", timeout=120)
        if done.returncode != 0:
            raise PoolError(f"pool.sh stop exited {done.returncode}:\n{done.stderr}")

    @property
    def env(self) -> dict[str, str]:
        pairs = (line.partition("=") for line in (self.dir / "pool.env").read_text().splitlines())
        return {key: value for key, _, value in pairs}

    @property
    def root(self) -> Path:
        return Path(self.env["GRIDTRAIN_POOL_ROOT"])

    @property
    def runs(self) -> Path:
        return Path(self.env["GRIDTRAIN_POOL_RUNS"])

    @property
    def user(self) -> str:
        return self.env["GRIDTRAIN_POOL_USER"]

    @property
    def uid(self) -> int:
        return int(self.env["GRIDTRAIN_POOL_UID"])

    def in_root(self, *command: str, user: str | None = None) -> str:
        """Run an HTCondor tool inside the chroot (as root, or as ``user``); its stdout."""
        done = subprocess.run(
            self.command(*command, user=user),
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise PoolError(f"{' '.join(command)} exited {done.returncode}: {done.stderr}")
        return done.stdout

    def command(self, *command: str, user: str | None = None) -> list[str]:
        """``command`` inside the chroot, with the chroot's own HTCondor config (not the host's)."""
        spec = [f"--userspec={user}:{user}"] if user else []
        return ["env", "-u", "CONDOR_CONFIG", "chroot", *spec, str(self.root), *command]

    def run_dir(self, name: str) -> Path:
        """A fresh run directory owned by the job user, with a worker.json and a ps.secret."""
        path = self.runs / f"{name}-{os.getpid()}-{next(_counter)}"
        shutil.rmtree(path, ignore_errors=True)
        (path / "condor").mkdir(parents=True)
        (path / "worker.json").write_text("{}\n")
        secret = path / "ps.secret"
        secret.write_text(os.urandom(16).hex() + "\n")
        secret.chmod(0o600)
        for item in (path, path / "condor", path / "worker.json", secret):
            os.chown(item, self.uid, self.uid)
        return path


def pool_unavailable() -> str | None:
    """Why this machine cannot build the pool, or None."""
    if os.geteuid() != 0:
        return "the HTCondor test pool needs root (debootstrap, chroot, mounts)"
    if shutil.which("apt-get") is None:
        return "the HTCondor test pool needs apt-get (a Debian-like machine)"
    if shutil.which("debootstrap") is None and not (Path(Pool().dir) / "chroot").is_dir():
        return "debootstrap is missing: run 'make system-deps' (or apt-get install debootstrap)"
    return None


def write_pool_training(work: Path, toy_dir: Path, profile: str, shard_events: int) -> None:
    """``work/config.yaml``: the toy converted into ``work/dataset``, 2 MLP workers as pool jobs
    with the site profile ``profile``; the tree opened to the job user."""
    import yaml

    from gridtrain.config import DatasetConfig
    from gridtrain.data.convert import convert
    from tests.conftest import toy_section

    section = toy_section(toy_dir, work / "dataset", shard_events=shard_events, step_events=1500)
    convert(DatasetConfig.from_dict(section), work / "dataset")
    train = {
        "model": {"name": "mlp", "params": {"hidden": [16]}},
        "batch_size": 64,
        "early_stopping": {"patience": None},
        "workers": 2,
        "executor": "condor",
        "condor": {"profile": profile},
    }
    (work / "config.yaml").write_text(yaml.safe_dump({"dataset": section, "train": train}))
    subprocess.run(["chmod", "-R", "a+rX", str(work)], check=True)


# -- holding a run at a known point: the worker processes, stopped and continued by the test ----

SIGTERM_BIT = 1 << (15 - 1)  # SIGTERM in /proc/PID/status's pending-signal masks


def worker_process(name: str, exclude: set[int] | frozenset[int] = frozenset()) -> Any:
    """The running ``gridtrain worker --name NAME`` process (a job's, inside the pool's chroot,
    seen from the host) whose pid is not in ``exclude`` (an earlier attempt's), or None."""
    import psutil

    for process in psutil.process_iter(["cmdline"]):
        if process.pid in exclude:
            continue
        command = process.info["cmdline"] or []
        if "worker" in command and "--name" in command:
            at = command.index("--name")
            if at + 1 < len(command) and command[at + 1] == name:
                return process
    return None


def sigterm_pending(process: Any) -> bool:
    """Whether a stopped process has been sent SIGTERM (delivered when it continues), or it has
    gone: what a test waits for before continuing a worker it stopped and then evicted."""
    try:
        status = Path(f"/proc/{process.pid}/status").read_text()
    except OSError:
        return True
    masks = [
        int(line.split()[1], 16)
        for line in status.splitlines()
        if line.startswith(("SigPnd:", "ShdPnd:"))
    ]
    return any(mask & SIGTERM_BIT for mask in masks)


def hold_workers(names: list[str], ready: Callable[[], bool], timeout: float = 300) -> list[Any]:
    """Stop (SIGSTOP) the named workers as soon as all run and ``ready()`` holds; returns their
    processes. The run then cannot end, however fast the machine, until the test continues them
    (``process.resume()``): a test that acts on a running training holds it first."""
    from tests.waiting import wait_until

    def found() -> list[Any] | None:
        processes = [worker_process(name) for name in names]
        if any(p is None for p in processes) or not ready():
            return None
        return processes

    processes: list[Any] = wait_until(found, timeout, f"workers {names} running and ready", 0.05)
    for process in processes:
        process.suspend()
    return processes
