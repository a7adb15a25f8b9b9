"""The executor interface: what the driver needs to start, watch and stop a run's workers.

Layer: train, interface only. The driver talks to ``Executor``; ``local_executor.LocalExecutor``
runs workers as local processes (the embedded default) and ``condor_executor.CondorExecutor``
submits the same ``gridtrain worker`` command as HTCondor jobs (one cluster). This module knows
neither of them.
"""

from __future__ import annotations

import subprocess
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from gridtrain.backend import DEFAULT_BACKEND
from gridtrain.jobstate import JobState

if TYPE_CHECKING:
    import numpy as np

    from gridtrain.train.settings import WorkerSpec


@dataclass(frozen=True)
class Launch:
    """What every worker of a run is started with."""

    spec: Path
    address: str
    secret_file: Path
    log_dir: Path
    run_name: str
    backend: str = DEFAULT_BACKEND  # train.backend: every worker's KERAS_BACKEND


@dataclass
class Slot:
    """One worker position; a restarted worker keeps its slot and its name."""

    index: int
    name: str
    restarts: int = 0
    state: JobState = JobState.IDLE
    detail: str = ""  # e.g. a hold's reason and code, an exit code
    job: str = ""  # the batch system's id of the current attempt ("17.0"); "" for processes
    process: subprocess.Popen[bytes] | None = None
    log: IO[bytes] | None = None
    returncode: int | None = None
    env: dict[str, str] = field(default_factory=dict)


class Executor(ABC):
    """Starts ``count`` workers, reports the ones that ended, restarts or stops them."""

    name = "abstract"
    # Seconds a finished run's workers get to leave on their own before they are stopped.
    leave_grace = 10.0

    @abstractmethod
    def start(self, launch: Launch, count: int) -> None: ...

    @abstractmethod
    def poll(self) -> list[Slot]:
        """Workers that ended since the last call (``slot.returncode`` set)."""

    @abstractmethod
    def restart(self, slot: Slot) -> None: ...

    @abstractmethod
    def running(self) -> int: ...

    @abstractmethod
    def stop(self, grace: float) -> None:
        """Ask every worker to stop (SIGTERM), wait ``grace`` seconds, then kill."""

    def prewarm(self, count: int, run_name: str, backend: str = DEFAULT_BACKEND) -> None:
        """Start what ``count`` workers of run ``run_name`` need before the run exists (the local
        executor starts their processes, which import Keras on ``backend`` meanwhile); by
        default nothing."""
        del count, run_name, backend

    def discard_prewarmed(self) -> None:  # noqa: B027 (an optional hook, not abstract)
        """End whatever ``prewarm`` started and ``start`` did not use."""

    def initial_weights(self, spec: WorkerSpec) -> list[np.ndarray] | None:
        """The run's initial weights built by a process that has Keras imported already (the
        local executor's prewarmed helper, train/helper.py); None: the driver builds them."""
        del spec
        return None

    def finalize_run(self, run_dir: Path, plots: bool) -> bool:
        """Whether a worker's process wrote the finished run's outputs (the local executor's
        helper); False: the driver writes them."""
        del run_dir, plots
        return False

    def ps_hosts(self) -> tuple[str, str]:
        """(where the parameter server listens, the host name its workers dial)."""
        return "127.0.0.1", "127.0.0.1"

    def log_dir(self) -> Path:
        """Where the workers' output goes, for messages that point the user at it."""
        assert self._log_dir is not None
        return self._log_dir

    def log_file(self, slot: Slot) -> Path:
        return self.log_dir() / f"{slot.name}.log"

    def summary(self) -> str:
        """A few words for the progress line ('' when there is nothing beyond the PS's view)."""
        return ""

    def status(self) -> dict[str, Any] | None:
        """The run's workers as the batch system sees them, for ``gridtrain status`` (from a new
        process, the driver running or not); None when there is nothing beyond the PS's view."""
        return None

    def cancel(self) -> int:
        """Remove what the batch system still holds of the run once its driver has stopped (or
        died); the number of jobs removed."""
        return 0

    _log_dir: Path | None = None
