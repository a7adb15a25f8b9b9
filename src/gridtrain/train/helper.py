"""The driver's Keras work done in its first local worker's process: one backend import fewer.

Layer: train, process edge. A training imports its Keras backend (TensorFlow: about 3 CPU-seconds
and 650 MB here) in every worker, and the driver used to import it too, twice over the run's
life: to build the model once for the initial weights, and to score the final model on the
validation shards. With the local executor, the first prewarmed worker (``gridtrain worker
--await-launch --answer-driver``) has that import done already, so it does both:

1. before its launch line, ``{"build": {"spec": PATH, "out": PATH}}``: it builds the run's model
   from the worker spec (``initial_weights``: the fine-tuning source applied) and writes the
   weights as .npz; it answers ``{"built": true}``, or ``{"error": MESSAGE, "kind": CLASS,
   "ours": BOOL}`` (gridtrain's own error is raised by the driver as it came; any other makes
   the driver build the model itself, so that the error shows with its traceback);
2. its launch line, then the training as any worker's;
3. when the parameter server said the run is finished (not on a stop signal), it answers
   ``{"trained": true}`` and waits: ``{"finalize": {"run_dir": PATH, "plots": BOOL}}`` writes the
   run's outputs (``finalize.write_outputs``: model.keras, metrics.json, plots) and answers
   ``{"finalized": true}`` or an error; the end of its stdin lets it leave instead.

Requests travel on the worker's stdin, one JSON line each; answers on the stdout it was started
with (kept as its own descriptor when the launch sends its output to the log). The driver falls
back to doing the work itself whenever the helper cannot: it died, it imported another backend,
a restart replaced it, the run is resumed, or the executor is not local. A helper with fewer than
half of this machine's cores and no GPU does not finalize: the final scoring would run on its few
threads (``LocalExecutor.start``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

import numpy as np

from gridtrain import errors
from gridtrain.errors import GridtrainError
from gridtrain.ps.checkpoint import read_initial_weights, write_initial_weights
from gridtrain.train.settings import WorkerSpec

log = logging.getLogger(__name__)


def initial_weights(spec: WorkerSpec) -> list[np.ndarray]:
    """The run's model as every process builds it (``replica``), started from the fine-tuning
    source when ``train.init_from`` names one: its weights, in ``model.get_weights()`` order."""
    from gridtrain.train.finetune import initialise_from
    from gridtrain.train.replica import replica

    model = replica(spec)
    if spec.settings.init_from is not None:
        initialise_from(model, spec.settings.init_from, spec.settings.head)
    return [np.asarray(weight) for weight in model.get_weights()]


# -- the worker's side ---------------------------------------------------------------------------


class DriverChannel:
    """A prewarmed worker's requests from the driver (stdin) and its answers (a copy of the
    stdout descriptor it was started with, so that sending output to the log keeps it)."""

    def __init__(self, requests: IO[str]) -> None:
        self.requests = requests
        self._answers = os.fdopen(os.dup(1), "w", buffering=1)

    def next(self) -> dict[str, Any] | None:
        """The next request; None when the driver closed the stream."""
        line = self.requests.readline()
        return json.loads(line) if line.strip() else None

    def answer(self, **message: Any) -> None:
        try:
            self._answers.write(json.dumps(message) + "\n")
            self._answers.flush()
        except OSError:  # the driver is gone: nobody to tell
            pass

    def fail(self, err: BaseException) -> None:
        """Tell the driver what failed: gridtrain's own errors by class and message (one line,
        as the driver would have said it); any other only by name, since the driver then does
        the work itself and shows that error with its traceback."""
        kind = type(err).__name__
        message = str(err).splitlines()[0] if str(err) else kind
        self.answer(error=message, kind=kind, ours=isinstance(err, GridtrainError))

    def build(self, request: dict[str, Any]) -> None:
        """Answer a ``build`` request: the initial weights written where it says."""
        try:
            weights = initial_weights(WorkerSpec.read(Path(request["spec"])))
            write_initial_weights(Path(request["out"]), weights)
        except Exception as err:  # every failure is the driver's to report, in one line
            self.fail(err)
        else:
            self.answer(built=True)

    def finalize(self, spec: WorkerSpec) -> int:
        """After a finished training: wait for the driver's ``finalize`` (or the end of the
        stream) and write the run's outputs; the process's exit code."""
        from gridtrain.rundir import RunDir
        from gridtrain.train.finalize import write_outputs

        self.answer(trained=True)
        request = self.next()
        if request is None or "finalize" not in request:
            return 0
        try:
            details = request["finalize"]
            write_outputs(RunDir(Path(details["run_dir"])), spec, plots=bool(details["plots"]))
        except Exception as err:
            log.exception("final scoring failed")
            self.fail(err)
            return 1
        self.answer(finalized=True)
        return 0


# -- the driver's side ---------------------------------------------------------------------------


class Helper:
    """The driver's end of one prewarmed worker's channel (``LocalExecutor`` holds it)."""

    def __init__(self, process: subprocess.Popen[bytes], backend: str) -> None:
        assert process.stdin is not None
        assert process.stdout is not None
        self.process = process
        self.backend = backend
        self.awaiting = False  # trained, waiting for finalize
        self.finalizes = False  # allowed to finalize (set at start)

    def _send(self, message: dict[str, Any]) -> bool:
        stdin = self.process.stdin
        if stdin is None or stdin.closed:
            return False
        try:
            stdin.write(json.dumps(message).encode() + b"\n")
            stdin.flush()
        except (OSError, ValueError):
            return False
        return True

    def _receive(self) -> dict[str, Any] | None:
        """The next answer, waiting for it; None when the process ended first. Whatever else
        the process printed before its launch (a user's model function that prints its
        summary) is passed on to this process's stdout, as if the driver had built the model."""
        assert self.process.stdout is not None
        while line := self.process.stdout.readline():
            try:
                answer = json.loads(line)
            except ValueError:
                answer = None
            if isinstance(answer, dict):
                return answer
            sys.stdout.write(line.decode(errors="replace"))
        return None

    def _raise(self, answer: dict[str, Any]) -> None:
        """Raise gridtrain's own error that the helper answered; return for any other (the
        driver does the work itself, and a failure shows with its traceback)."""
        kind = getattr(errors, str(answer.get("kind", "")), None)
        log.debug("the helper failed: %s: %s", answer.get("kind"), answer.get("error"))
        if answer.get("ours") and isinstance(kind, type) and issubclass(kind, GridtrainError):
            try:
                err = kind(str(answer.get("error", "")))
            except TypeError:  # a class made from more than a message: the driver's to raise
                return
            raise err

    def build(self, spec: WorkerSpec) -> list[np.ndarray] | None:
        """The initial weights built in the helper; None when it cannot build them (the driver
        builds them itself); raises what building the model raised there."""
        if self.backend != spec.settings.backend or self.process.poll() is not None:
            return None
        with tempfile.TemporaryDirectory(prefix="gridtrain-build-") as folder:
            written, out = Path(folder) / "worker.json", Path(folder) / "initial.npz"
            spec.write(written)
            if not self._send({"build": {"spec": str(written), "out": str(out)}}):
                return None
            answer = self._receive()
            if answer is None:  # died while building: the driver tries, and says what fails
                return None
            if not answer.get("built"):
                self._raise(answer)
                return None
            return read_initial_weights(out)

    def check_trained(self) -> bool:
        """Whether the helper said it finished training (without waiting)."""
        if not self.awaiting and self.process.stdout is not None:
            ready, _, _ = select.select([self.process.stdout], [], [], 0)
            if ready:
                answer = self._receive()
                self.awaiting = bool(answer and answer.get("trained"))
        return self.awaiting

    def finalize(self, run_dir: Path, plots: bool) -> bool:
        """The run's outputs written by the helper; False when it cannot (it died, or it never
        finished training); raises what the final scoring raised there."""
        if not (self.finalizes and self.check_trained() and self.process.poll() is None):
            return False
        if not self._send({"finalize": {"run_dir": str(run_dir), "plots": plots}}):
            return False
        answer = self._receive()
        self.process.wait()
        if answer is None:
            log.warning("the worker finalizing the run died; the driver scores the model itself")
            return False
        if not answer.get("finalized"):
            self._raise(answer)
            return False
        return True

    def close(self, grace: float = 10.0) -> None:
        """Let the process leave (the end of its stdin), killed after ``grace`` seconds."""
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None and not stream.closed:
                with contextlib.suppress(OSError):
                    stream.close()
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
