"""The training worker (``gridtrain worker``): leases shards, trains a Keras replica, exchanges.

Layer: train, process. One worker is one process with one device: the GPU(s) in
CUDA_VISIBLE_DEVICES (memory growth on) or, without one, the CPU with the thread pools sized by
``--threads``. The same code runs as a local process (``--executor local``) and as a grid job.

Loop: ask the parameter server for a task (``ps.leases``); for a training lease stage the shard
into scratch (``gridtrain.stage.StageIn``, verified by adler32), load it in a thread while the
previous shard trains, run its batches a window of ``every`` steps per compiled call
(``train/steps.py``) and exchange with the PS after each window (``ps.Exchange``; with the
config's ``train.overlap``, in the background while the next window trains: ``train/overlap.py``);
report the shard done with its loss, events and seconds. For a validation task pull the center
of that epoch, predict the validation shards and report the task's figures (loss for every task,
the one early stopping reads; accuracy and AUC for classifiers: ``train/targets.py``). Stop on
``done``, or on SIGTERM/SIGINT without reporting the shard in hand (its lease returns to the
queue when the connection closes).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any, Protocol

import numpy as np

from gridtrain.backend import use_backend
from gridtrain.data.manifest import Manifest, ShardEntry
from gridtrain.errors import GridtrainError, ProtocolError
from gridtrain.ps import auth
from gridtrain.ps.client import PSClient
from gridtrain.ps.exchange import Exchange
from gridtrain.task import Task
from gridtrain.train.inputs import InputBuilder, Prefetcher, ShardData, fold_rows
from gridtrain.train.overlap import OverlappedExchange
from gridtrain.train.replica import replica, stage_in
from gridtrain.train.settings import WorkerSpec
from gridtrain.train.steps import WindowSteps, windows
from gridtrain.train.targets import validation_record

log = logging.getLogger(__name__)

PREDICT_BATCH = 8192
RECONNECT_WINDOW = 120.0  # seconds a worker keeps trying to reach a parameter server that left


def configure_devices(threads: int | None) -> str:
    """Set up the devices of this process's Keras backend (KERAS_BACKEND, set from the run's
    train.backend before this) before first use; returns a description for the log."""
    from gridtrain.train.backends import configure_devices as configure

    return configure(threads)


@dataclass
class Throughput:
    events: int = 0
    seconds: float = 0.0
    exchange_seconds: float = 0.0  # training stood still for the exchanges
    overlapped_seconds: float = 0.0  # exchanges travelled while training went on
    shards: int = 0
    started: float = field(default_factory=time.perf_counter)


class Worker:
    """One model replica and its conversation with the parameter server."""

    def __init__(
        self,
        spec: WorkerSpec,
        address: str,
        secret: bytes,
        name: str,
        scratch: Path,
        stop: threading.Event,
    ) -> None:
        from gridtrain.models import model_input_names

        settings = spec.settings
        self.spec = spec
        self.settings = settings
        self.name = name
        self.stop = stop
        self.manifest = Manifest.from_dict(spec.manifest)
        self.entries: dict[str, ShardEntry] = {
            entry.path: entry for entries in self.manifest.shards.values() for entry in entries
        }
        self.locations = spec.locations
        self.model = replica(spec)
        self.inputs = model_input_names(self.model)
        self.builder = self._builder(validation=False)
        # k-fold: a shard's validation rows are another role's; otherwise the same builder
        folds = settings.fold is not None
        self.validation_builder = self._builder(validation=True) if folds else self.builder
        budget = settings.scratch_budget_mb
        self.stagein = stage_in(spec, scratch, budget << 20 if budget else None)
        self.prefetcher = Prefetcher(self.builder)
        self.client = PSClient(
            address,
            secret,
            self.model.get_weights(),
            name=name,
            wire=self.settings.wire,
            topk=self.settings.topk,
        )
        self.throughput = Throughput()
        self.exchange: Exchange | None = None
        self.overlap: OverlappedExchange | None = None  # with train.overlap
        self.window_steps = WindowSteps(self.model)

    # -- life cycle ----------------------------------------------------------------------------

    def run(self) -> int:
        """Work until the run is done (0) or a stop signal arrives (143)."""
        try:
            self._connect()
            tasks: deque[dict[str, Any]] = deque()  # leased ahead, in the order to work on them
            while not self.stop.is_set():
                try:
                    task = tasks.popleft() if tasks else self._lease()
                    kind = task["kind"]
                    if kind == "done":
                        self._flush()
                        log.info("%s: run finished (%s)", self.name, task.get("reason", ""))
                        return 0
                    if kind == "validate":
                        self._validate(task)
                        continue
                    if not tasks:
                        tasks.extend(self._lookahead())
                    if self._train(task).get("validation_waiting"):
                        # the epoch just ended: validate it before the shard leased ahead
                        tasks.extendleft(self._lookahead())
                except (ProtocolError, OSError) as err:
                    if self.stop.is_set():
                        break
                    log.warning("%s: lost the parameter server (%s); reconnecting", self.name, err)
                    tasks.clear()
                    self._reconnect()
            log.info("%s: stopped by signal", self.name)
            return 143
        finally:
            self.prefetcher.close()
            self.stagein.close()
            if self.overlap is not None:
                self.overlap.close()  # the exchange in flight, before the connection goes
            self.client.close()
            self._log_throughput()

    def _connect(self) -> None:
        if self.overlap is not None:
            self.overlap.close()  # a reconnection: the exchange in flight went with the server
            self.overlap = None
        self.client.connect()
        every = self.settings.every
        if self.settings.overlap:
            self.exchange = Exchange(self.client, 1)  # the overlapped exchange counts the window
            self.overlap = OverlappedExchange(
                self.exchange, every, adaptive=self.settings.overlap == "adaptive"
            )
        else:
            self.exchange = Exchange(self.client, every)
        self.model.set_weights(self.exchange.start())

    def _reconnect(self) -> None:
        self.client.close()
        deadline = time.monotonic() + RECONNECT_WINDOW
        delay = 1.0
        while not self.stop.is_set():
            try:
                self._connect()
                return
            except (ProtocolError, OSError) as err:
                if time.monotonic() > deadline:
                    raise GridtrainError(
                        f"parameter server {self.client.address[0]}:{self.client.address[1]} "
                        f"unreachable for {RECONNECT_WINDOW:g} s ({err}); is the training "
                        "still running?"
                    ) from None
                self.stop.wait(delay)
                delay = min(delay * 2, 15.0)

    def _lease(self) -> dict[str, Any]:
        while not self.stop.is_set():
            task = self.client.lease()
            if task["kind"] != "wait":
                return task
        return {"kind": "done", "reason": "stopped"}

    def _lookahead(self) -> list[dict[str, Any]]:
        """Lease the next task now (no waiting); a shard starts staging while this one trains."""
        task = self.client.lease(wait=0.0)
        if task["kind"] == "train":
            shard = task["shards"][0]
            self.prefetcher.submit(shard, lambda: self._stage(shard), self._shuffle_seed(task))
        return [] if task["kind"] in ("wait", "done") else [task]

    def _flush(self) -> None:
        """Send the local steps taken since the last exchange."""
        assert self.exchange is not None
        stepper = self.overlap or self.exchange
        new = stepper.flush(self.model.get_weights)
        if new is not None:
            self.model.set_weights(new)

    def _after_steps(self, steps: int) -> Any:
        """Count a window of ``steps`` local steps; the weights to set if an exchange gave any."""
        if self.overlap is not None:
            return self.overlap.after_steps(steps, self.model.get_weights)
        assert self.exchange is not None
        new = None
        for _ in range(steps):  # a window ends at the next exchange at the latest
            new = self.exchange.after_step(self.model.get_weights)
        return new

    def _shuffle_seed(self, task: dict[str, Any]) -> int:
        """The order of a shard's events: a seed per (run seed, epoch, shard)."""
        shard = task["shards"][0]
        return self.settings.seed * 1_000_003 + task["epoch"] * 1009 + zlib.crc32(shard.encode())

    def _stage(self, shard: str) -> Path:
        entry = self.entries[shard]
        return self.stagein.get(self.locations[shard], entry.bytes, entry.adler32)

    # -- tasks ---------------------------------------------------------------------------------

    def _train(self, task: dict[str, Any]) -> dict[str, Any]:
        """Train on the leased shard; returns the parameter server's answer to its completion."""
        assert self.exchange is not None
        shard = task["shards"][0]
        epoch = int(task["epoch"])
        data = self.prefetcher.get(shard, lambda: self._stage(shard), self._shuffle_seed(task))
        start = time.perf_counter()
        exchange_seconds = 0.0  # training stood still for the exchanges
        overlapped_before = self.overlap.overlapped_seconds if self.overlap else 0.0
        updates_before = self.exchange.updates
        deferred_before = self.overlap.deferred if self.overlap else 0
        losses = []
        every = self.settings.every
        stepper = self.overlap or self.exchange

        def room() -> Iterator[int]:  # a window runs up to the next exchange, in one call
            while True:
                yield every - stepper.steps % every

        batches = windows(data.inputs, data.labels, data.weights, self.settings.batch_size, room())
        for steps, inputs, labels, weights in batches:
            for result, step_weights in zip(
                self.window_steps.train(inputs, labels, weights), weights, strict=True
            ):
                # Keras averages weighted losses over the batch size; report the weighted mean,
                # the way validation loss is computed, so both curves share a scale
                loss = float(result)
                total = float(step_weights.sum())
                losses.append(loss * step_weights.size / total if total > 0 else loss)
            before = time.perf_counter()
            new = self._after_steps(steps)
            if new is not None:
                self.model.set_weights(new)
            exchange_seconds += time.perf_counter() - before
            if self.stop.is_set():
                return {}  # the lease goes back when the connection closes
        before = time.perf_counter()
        self._flush()  # the shard's last steps reach the center before it counts as done
        exchange_seconds += time.perf_counter() - before
        seconds = time.perf_counter() - start
        overlapped = (self.overlap.overlapped_seconds if self.overlap else 0.0) - overlapped_before
        self.stagein.release(self.locations[shard])
        self.throughput.events += data.events
        self.throughput.seconds += seconds
        self.throughput.exchange_seconds += exchange_seconds
        self.throughput.overlapped_seconds += overlapped
        self.throughput.shards += 1
        loss = float(np.mean(losses)) if losses else float("nan")
        answer = self.client.complete(
            int(task["lease"]),
            {
                **({"loss": loss} if losses else {}),  # none: no event of the shard (k-fold)
                "events": data.events,
                "seconds": round(seconds, 4),
                "exchange_seconds": round(exchange_seconds, 4),
                "overlapped_seconds": round(overlapped, 4),
                "version": self.exchange.version,
                # the worker's own count, which the lease log's server-side count must match
                "updates": self.exchange.updates - updates_before,
            },
        )
        deferred = (self.overlap.deferred if self.overlap else 0) - deferred_before
        log.info(
            "%s: epoch %d %s: %d events in %.2f s (%.0f events/s, %.0f%% waiting on the "
            "network, %.0f%% overlapped%s), loss %.4f%s",
            self.name,
            epoch,
            shard,
            data.events,
            seconds,
            data.events / max(seconds, 1e-9),
            100 * exchange_seconds / max(seconds, 1e-9),
            100 * overlapped / max(seconds, 1e-9),
            f", {deferred} exchanges deferred: the link was busy" if deferred else "",
            loss,
            "" if answer.get("accepted") else f" (not counted: {answer.get('reason')})",
        )
        return answer

    def _validate(self, task: dict[str, Any]) -> None:
        start = time.perf_counter()
        epoch = int(task["epoch"])
        version, center = self.client.pull(epoch=epoch)
        local = self.model.get_weights()
        self.model.set_weights(center)
        try:
            predicted = self.predict(task["shards"])
        finally:
            self.model.set_weights(local)
        if self.stop.is_set():
            return
        metrics = predicted.validation_record(self.builder.task)
        self.client.complete(
            int(task["lease"]),
            {**metrics, "events": predicted.events, "seconds": time.perf_counter() - start},
        )
        log.info(
            "%s: validated epoch %d (center version %d): %s",
            self.name,
            epoch,
            version,
            ", ".join(f"{key} {value:.4f}" for key, value in metrics.items()),
        )

    def _builder(self, validation: bool) -> InputBuilder:
        """The shards' reader for training, or for validation (a k-fold run keeps other rows)."""
        s = self.settings
        return InputBuilder(
            self.manifest,
            self.spec.features,
            self.spec.groups,
            self.inputs,
            s.negative_weights,
            fold_rows(self.manifest, s.fold, s.folds, validation),
        )

    def predict(self, shards: list[str]) -> Predictions:
        """The model's outputs on ``shards`` under its current weights."""

        def load(shard: str) -> ShardData:
            data = self.prefetcher.get(  # k-fold: a shard trains and validates other rows
                f"validation:{shard}", lambda: self._stage(shard), builder=self.validation_builder
            )
            self.stagein.release(self.locations[shard])
            return data

        return predict_shards(self.model, shards, load, self.stop)

    def _log_throughput(self) -> None:
        done = self.throughput
        if done.shards:
            log.info(
                "%s: trained %d shards, %d events in %.1f s: %.0f events/s, %.1f%% waiting on "
                "the network, %.1f%% overlapped",
                self.name,
                done.shards,
                done.events,
                done.seconds,
                done.events / max(done.seconds, 1e-9),
                100 * done.exchange_seconds / max(done.seconds, 1e-9),
                100 * done.overlapped_seconds / max(done.seconds, 1e-9),
            )


@dataclass
class Predictions:
    """A model's outputs on validation events and what they are compared with: ``y`` as the
    model is fit to it, the training's sample ``weights`` and the converted ``event_weights``."""

    y: np.ndarray
    outputs: np.ndarray
    weights: np.ndarray
    event_weights: np.ndarray

    @property
    def events(self) -> int:
        return int(self.weights.shape[0])

    def validation_record(self, task: Task) -> dict[str, float]:
        """The epoch's figures for the parameter server (``targets.validation_record``)."""
        return validation_record(task, self.y, self.outputs, self.weights, self.event_weights)


def predict_shards(
    model: Any,
    shards: list[str],
    load: Callable[[str], ShardData],
    stop: threading.Event | None = None,
) -> Predictions:
    """The outputs of ``model`` on ``shards`` (loaded one at a time), (N, units)."""
    from gridtrain.models import arrange_inputs

    ys, outputs, weights, event_weights = [], [], [], []
    for shard in shards:
        data = load(shard)
        for inputs, batch_y, _ in data.batches(PREDICT_BATCH):
            # float32 whatever the model computes in (a user model's 16-bit head)
            out = np.asarray(model.predict_on_batch(arrange_inputs(model, inputs)), np.float32)
            outputs.append(out.reshape(out.shape[0], -1))
            ys.append(batch_y)
        weights.append(data.weights)
        event_weights.append(data.event_weights)
        if stop is not None and stop.is_set():
            break
    return Predictions(
        np.concatenate(ys),
        np.concatenate(outputs),
        np.concatenate(weights),
        np.concatenate(event_weights),
    )


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGTERM or SIGINT (the batch system's eviction, or Ctrl-C)."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        del frame
        log.info("received %s; stopping after this window of steps", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def scratch_dir(name: str) -> Path:
    """A private folder for staged shards: under $_CONDOR_SCRATCH_DIR in a grid job."""
    base = os.environ.get("_CONDOR_SCRATCH_DIR") or None
    return Path(tempfile.mkdtemp(prefix=f"gridtrain-{name}-", dir=base))


class DriverChannel(Protocol):
    """A prewarmed worker's requests from the driver besides its launch (train/helper.py)."""

    def build(self, request: dict[str, Any]) -> None: ...

    def finalize(self, spec: WorkerSpec) -> int: ...


def await_launch(
    stream: IO[str], channel: DriverChannel | None = None
) -> tuple[Path, str, Path, str] | None:
    """A prewarmed worker's run: (spec, address, secret file, name) from one JSON line on
    ``stream``, with this process's output sent to the log file the line names from then on.
    None when the stream ends first (the driver stopped before the run started). With a
    ``channel`` to the driver, its ``build`` requests are answered while waiting."""
    while True:
        line = stream.readline()
        if not line.strip():
            return None
        launch = json.loads(line)
        if channel is None or "build" not in launch:
            break
        channel.build(launch["build"])
    log_fd = os.open(launch["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for fd in (1, 2):
        os.dup2(log_fd, fd)
    os.close(log_fd)
    return Path(launch["spec"]), launch["address"], Path(launch["secret_file"]), launch["name"]


def main(
    spec_path: Path,
    address: str,
    secret_file: Path,
    name: str,
    devices: str,
    channel: DriverChannel | None = None,
) -> int:
    """Entry point of ``gridtrain worker``, once ``configure_devices`` has set up ``devices``.
    With a ``channel`` to the driver, a run that finished (not one stopped by a signal) is
    followed by the driver's ``finalize`` request, if it sends one (train/helper.py)."""
    spec = WorkerSpec.read(spec_path)
    use_backend(spec.settings.backend)  # refuses a prewarmed process of another backend
    secret = auth.read_secret_file(secret_file)
    log.info("%s: training on %s", name, devices)
    scratch = scratch_dir(name)
    try:
        with stop_on_signals() as stop:
            code = Worker(spec, address, secret, name, scratch, stop).run()
            finished = code == 0 and not stop.is_set()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return channel.finalize(spec) if channel is not None and finished else code
