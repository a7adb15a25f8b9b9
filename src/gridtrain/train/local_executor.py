"""``LocalExecutor``: a run's workers as child processes of the driver (the embedded default).

Layer: train, process edge. The same ``gridtrain worker`` command that grid jobs run, one process
per GPU (round robin) or dividing this machine's cores.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from gridtrain.backend import DEFAULT_BACKEND, backend_environment
from gridtrain.errors import ConfigError
from gridtrain.jobstate import JobState
from gridtrain.train.executor import Executor, Launch, Slot
from gridtrain.train.helper import Helper

if TYPE_CHECKING:
    import numpy as np

    from gridtrain.train.settings import WorkerSpec

log = logging.getLogger(__name__)


def visible_gpus() -> list[str]:
    """GPU ids for one-process-per-GPU: CUDA_VISIBLE_DEVICES, else what nvidia-smi lists."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [gpu for gpu in visible.split(",") if gpu.strip() and gpu.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(index) for index, line in enumerate(listing.splitlines()) if line.startswith("GPU")]


class LocalExecutor(Executor):
    """Workers as child processes of the driver, dividing this machine's cores or GPUs.

    ``prewarm(count, run, backend)`` starts the worker processes before the run exists: each
    imports its Keras backend (seconds) while the driver checks the config and builds the model,
    then waits for its launch line on stdin (``gridtrain worker --await-launch``). ``start`` hands
    the run to them; a prewarmed process that died, was never made, or imported another backend
    than the run's (a backend is chosen before Keras is imported) is replaced by a plain start.
    The first prewarmed worker also does the driver's Keras work (``helper``, train/helper.py):
    the initial weights before its launch, the final scoring after its training.
    """

    name = "local"

    def __init__(self, cores: int | None = None) -> None:
        self.cores = cores or len(os.sched_getaffinity(0))
        self.slots: list[Slot] = []
        self._launch: Launch | None = None
        self.gpus = visible_gpus()
        # prewarmed processes by worker name: (threads, process)
        self._waiting: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
        self._prewarmed_backend = DEFAULT_BACKEND
        self.helper: Helper | None = None

    def threads_per_worker(self, count: int) -> int:
        return max(1, self.cores // count)

    def _environment(self, index: int, threads: int, backend: str) -> dict[str, str]:
        env = {
            **backend_environment(backend),
            "OMP_NUM_THREADS": str(threads),
            "TF_NUM_INTRAOP_THREADS": str(threads),
            "TF_NUM_INTEROP_THREADS": str(min(threads, 2)),
            "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"),
        }
        if self.gpus:  # one GPU per worker, round robin when workers outnumber GPUs
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[index % len(self.gpus)]
        return env

    def prewarm(self, count: int, run_name: str, backend: str = DEFAULT_BACKEND) -> None:
        """Start ``count`` workers that import Keras on ``backend`` now and wait for ``start``."""
        threads = self.threads_per_worker(count)
        self._prewarmed_backend = backend
        for index in range(count):
            name = f"{run_name}-w{index}"
            command = [sys.executable, "-m", "gridtrain", "worker", "--await-launch"]
            helps = index == 0  # its stdout answers the driver; others' until the launch line
            process = subprocess.Popen(
                [*command, *(["--answer-driver"] if helps else []), "--name", name, "--threads",
                 str(threads)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE if helps else subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,  # until the launch line names the worker's log
                env={**os.environ, **self._environment(index, threads, backend)},
                start_new_session=True,
            )  # fmt: skip
            self._waiting[name] = (threads, process)
            if helps:
                self.helper = Helper(process, backend)

    def initial_weights(self, spec: WorkerSpec) -> list[np.ndarray] | None:
        return self.helper.build(spec) if self.helper is not None else None

    def finalize_run(self, run_dir: Path, plots: bool) -> bool:
        helper, self.helper = self.helper, None
        if helper is None:
            return False
        try:
            return helper.finalize(run_dir, plots)
        finally:
            helper.close()

    def _is_helper(self, slot: Slot) -> bool:
        return self.helper is not None and slot.process is self.helper.process

    def _kept(self, slot: Slot) -> bool:
        """The helper, done training and waiting for the finalize request."""
        return self._is_helper(slot) and self.helper is not None and self.helper.awaiting

    def discard_prewarmed(self) -> None:
        """End the prewarmed workers that were not handed a run: killed, since one holds nothing
        yet but the import it is busy with (seconds of CPU that nobody would use); and the
        helper, if the run did not ask it to finalize."""
        self._discard_waiting()
        helper, self.helper = self.helper, None
        if helper is not None:
            helper.close()

    def _discard_waiting(self) -> None:
        waiting, self._waiting = list(self._waiting.values()), {}
        for _, process in waiting:
            if process.poll() is None:
                process.kill()
            for stream in (process.stdin, process.stdout):  # the helper's answers too
                if stream is not None:
                    stream.close()
        for _, process in waiting:
            process.wait()

    def _hand_over(self, slot: Slot, threads: int, launch: Launch) -> bool:
        """Give ``slot``'s run to its waiting prewarmed process; False when there is none, or it
        died, or it was made for another number of threads."""
        ready, process = self._waiting.pop(slot.name, (0, None))
        if process is None or process.stdin is None:
            return False
        line = {
            "spec": str(launch.spec),
            "address": launch.address,
            "secret_file": str(launch.secret_file),
            "name": slot.name,
            "log": str(launch.log_dir / f"{slot.name}.log"),
        }
        try:
            if (
                ready != threads
                or self._prewarmed_backend != launch.backend
                or process.poll() is not None
            ):
                raise BrokenPipeError
            process.stdin.write(json.dumps(line).encode() + b"\n")
            if self.helper is not None and process is self.helper.process:
                process.stdin.flush()  # kept open for the finalize request
                # the final scoring on the helper's threads: not on a sliver of the machine
                self.helper.finalizes = bool(self.gpus) or 2 * threads >= self.cores
            else:
                process.stdin.close()
        except OSError:  # died before or while it was told: it ends, a plain start replaces it
            self._waiting[f"{slot.name} (unused)"] = (ready, process)
            if self.helper is not None and process is self.helper.process:
                self.helper = None
            return False
        slot.process = process
        return True

    def start(self, launch: Launch, count: int) -> None:
        if count < 1:
            raise ConfigError(f"--workers {count}: start at least one worker")
        self._launch = launch
        self._log_dir = launch.log_dir
        launch.log_dir.mkdir(parents=True, exist_ok=True)
        threads = self.threads_per_worker(count)
        for index in range(count):
            env = self._environment(index, threads, launch.backend)
            slot = Slot(index, f"{launch.run_name}-w{index}", env=env)
            self.slots.append(slot)
            if self._hand_over(slot, threads, launch):
                slot.state, slot.detail = JobState.RUNNING, ""
            else:
                self._spawn(slot, threads)
        self._discard_waiting()  # more were made than asked for (a --workers that changed)
        where = f"GPUs {','.join(self.gpus)}" if self.gpus else f"{threads} CPU threads each"
        log.info("started %d local workers (%s)", count, where)

    def _spawn(self, slot: Slot, threads: int) -> None:
        assert self._launch is not None
        launch = self._launch
        command = [
            sys.executable,
            "-m",
            "gridtrain",
            "worker",
            "--spec",
            str(launch.spec),
            "--address",
            launch.address,
            "--secret-file",
            str(launch.secret_file),
            "--name",
            slot.name,
            "--threads",
            str(threads),
        ]
        if slot.log is not None:
            slot.log.close()
        slot.log = open(launch.log_dir / f"{slot.name}.log", "ab")  # noqa: SIM115
        slot.returncode = None
        slot.state, slot.detail = JobState.RUNNING, ""
        slot.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=slot.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **slot.env},
            start_new_session=True,  # Ctrl-C reaches the driver only; it stops workers in order
        )

    def poll(self) -> list[Slot]:
        ended = []
        for slot in self.slots:
            if slot.returncode is None and self._is_helper(slot):
                assert self.helper is not None
                if self.helper.check_trained():  # done, waiting to finalize: not running
                    slot.returncode, slot.state, slot.detail = 0, JobState.DONE, "trained"
                    ended.append(slot)
                    continue
            if slot.process is not None and slot.returncode is None:
                code = slot.process.poll()
                if code is not None:
                    slot.returncode = code
                    slot.state = JobState.DONE if code == 0 else JobState.FAILED
                    slot.detail = f"exit {code}"
                    ended.append(slot)
        return ended

    def restart(self, slot: Slot) -> None:
        if self._is_helper(slot):  # a plain start replaces it: the driver finalizes itself
            assert self.helper is not None
            self.helper.close()
            self.helper = None
        slot.restarts += 1
        self._spawn(slot, self.threads_per_worker(len(self.slots)))

    def running(self) -> int:
        return sum(slot.returncode is None and slot.process is not None for slot in self.slots)

    def stop(self, grace: float) -> None:
        live = [
            slot
            for slot in self.slots
            if slot.process and slot.process.poll() is None and not self._kept(slot)
        ]  # a helper still training is stopped; one waiting to finalize is kept for that
        for slot in live:
            assert slot.process is not None
            slot.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for slot in live:
            assert slot.process is not None
            try:
                slot.process.wait(max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %g s; killing it", slot.name, grace)
                slot.process.kill()
                slot.process.wait()
        for slot in self.slots:
            if slot.process is not None and not self._kept(slot):
                slot.returncode = slot.process.poll()
            if slot.log is not None:
                slot.log.close()
                slot.log = None
