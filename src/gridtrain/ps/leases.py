"""Shard leases: which worker trains which shard, epochs, validation tasks and early stopping.

Layer: ps, state. Thread-safe, no sockets, no disk (events go to the ``journal`` callables, which
the training driver writes to ``leases.jsonl`` and ``history.jsonl``). The session layer calls
``grant``, ``complete``, ``renew`` and ``release_connection``; the server's housekeeping thread
calls ``expire``.

Semantics:

* Each epoch's training shards are queued in an order shuffled by (seed, epoch). A worker gets one
  shard per lease; a lease lasts ``timeout`` seconds and every frame the worker sends renews it.
  A worker that disconnects (killed, evicted) or stays silent past the timeout loses its leases
  and their shards go back to the front of their epoch's queue.
* A completion counts only while its lease is valid, so each shard is completed exactly once per
  epoch: a late completion of a lease that expired is refused (``accepted: False``) because the
  shard is someone else's by then.
* What "exactly once" does not undo: a worker pushes its updates every few steps, so the part of
  a shard it trained before its lease was lost is already in the center when the shard is leased
  again. That partial work is kept; those events count up to twice in that epoch. Every accepted
  update is counted (``count_update``): a worker trains one shard at a time, so the updates of a
  connection since its last completion are the shard it completes next, and the lease log
  records them as that lease's ``updates``. A connection lost holding leases records the updates
  it had pushed since its last completion (kept work) on the oldest of them, so that every
  update the center took is counted under exactly one lease.
* Workers may start epoch e+1 while the last shards of epoch e are still out (no barrier), but not
  epoch e+2. When the last shard of an epoch completes, ``on_epoch_end`` snapshots the center and
  a validation task for that epoch is queued ahead of any training shard. One validation task is
  out at a time, so results arrive in epoch order.
* Early stopping on validation loss: ``patience`` epochs without an improvement of more than
  ``min_delta`` end the run. The run also ends once the last epoch is validated (or, without
  validation shards, trained). Workers then get ``done``.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gridtrain.ps.algorithms import Array
from gridtrain.ps.center import CenterStore

log = logging.getLogger(__name__)

TRAIN = "train"
VALIDATE = "validate"
WAIT = "wait"
DONE = "done"

_SHARD_RESULT = (
    "version",
    "loss",
    "events",
    "seconds",
    "exchange_seconds",
    "overlapped_seconds",
    "updates",
)

Journal = Callable[[dict[str, Any]], None]


def _ignore(record: dict[str, Any]) -> None:
    del record


@dataclass
class Lease:
    lease_id: int
    kind: str
    epoch: int
    shards: list[str]
    worker: str
    connection: int
    granted: float
    updates: int = 0  # accepted pushes trained under this lease


@dataclass
class LeasePlan:
    """What to train: shard names, epochs, lease timeout and early stopping."""

    train_shards: list[str]
    validation_shards: list[str]
    epochs: int
    timeout: float = 600.0
    patience: int | None = None
    min_delta: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.train_shards:
            raise ValueError("no training shards to lease; is the manifest's train split empty?")
        if self.epochs < 1:
            raise ValueError(f"epochs = {self.epochs}: train for at least 1 epoch")
        if not self.timeout > 0:
            raise ValueError(f"lease timeout {self.timeout}: must be a positive number of seconds")


@dataclass
class LeaseState:
    """The resumable part of a ``LeaseBook`` (JSON-able through ``to_dict``)."""

    completed: dict[int, list[str]] = field(default_factory=dict)
    validated: list[dict[str, Any]] = field(default_factory=list)
    next_lease: int = 1
    best_epoch: int | None = None
    best_loss: float | None = None
    stopped: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "completed": {str(epoch): shards for epoch, shards in self.completed.items()},
            "validated": self.validated,
            "next_lease": self.next_lease,
            "best_epoch": self.best_epoch,
            "best_loss": self.best_loss,
            "stopped": self.stopped,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LeaseState:
        return cls(
            completed={int(epoch): list(shards) for epoch, shards in data["completed"].items()},
            validated=list(data["validated"]),
            next_lease=int(data["next_lease"]),
            best_epoch=data.get("best_epoch"),
            best_loss=data.get("best_loss"),
            stopped=str(data.get("stopped", "")),
        )


class LeaseBook:
    """Hands out training and validation tasks as leases; see the module docstring."""

    def __init__(
        self,
        plan: LeasePlan,
        *,
        state: LeaseState | None = None,
        lease_log: Journal = _ignore,
        history: Journal = _ignore,
        on_epoch_end: Callable[[int], int] | None = None,
        on_validated: Callable[[int, bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        time_offset: float = 0.0,
    ) -> None:
        self.plan = plan
        self.state = state or LeaseState()
        self._lease_log = lease_log
        self._history = history
        self._on_epoch_end = on_epoch_end or (lambda epoch: 0)
        self._on_validated = on_validated or (lambda epoch, best: None)
        self._clock = clock
        self._started = time.time() - time_offset
        self._cond = threading.Condition()
        self._leases: dict[int, Lease] = {}
        self._heard: dict[int, float] = {}  # last frame of each connection holding leases
        self._pending: dict[int, int] = {}  # updates of a connection since its last completion
        self._queues: dict[int, deque[str]] = {}
        self._train_loss: dict[int, list[float]] = {}
        self._pending_validation: deque[tuple[int, int]] = deque()  # (epoch, center version)
        self._validating = False
        for epoch in range(plan.epochs):
            done = set(self.state.completed.get(epoch, ()))
            order = list(plan.train_shards)
            random.Random(plan.seed * 1_000_003 + epoch).shuffle(order)
            self._queues[epoch] = deque(shard for shard in order if shard not in done)
        self._next_close = 0  # epochs below this one are closed: snapshot taken, validation queued
        with self._cond:  # a resumed run may already be finished; stopping notifies waiters
            self._close_epochs()
            self._update_stopped()

    # -- queries -------------------------------------------------------------------------------

    def _epoch_trained(self, epoch: int) -> bool:
        return len(self.state.completed.get(epoch, ())) == len(self.plan.train_shards)

    def _current_epoch(self) -> int:
        """The lowest epoch not yet fully trained (``plan.epochs`` when all are)."""
        for epoch in range(self.plan.epochs):
            if not self._epoch_trained(epoch):
                return epoch
        return self.plan.epochs

    @property
    def done(self) -> bool:
        with self._cond:
            return bool(self.state.stopped)

    def wait_done(self, timeout: float | None = None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: bool(self.state.stopped), timeout)

    def progress(self) -> dict[str, Any]:
        """Counters for progress bars and ``gridtrain ps status``."""
        with self._cond:
            epoch = self._current_epoch()
            shown = min(epoch, self.plan.epochs - 1)
            latest = self.state.validated[-1] if self.state.validated else None
            return {
                "epoch": shown,
                "epochs": self.plan.epochs,
                "shards_done": len(self.state.completed.get(shown, ())),
                "shards_total": len(self.plan.train_shards),
                "leases_out": len(self._leases),
                "latest_validation": latest,
                "best_epoch": self.state.best_epoch,
                "stopped": self.state.stopped,
            }

    def snapshot_state(self) -> dict[str, Any]:
        with self._cond:
            return LeaseState.from_dict(self.state.to_dict()).to_dict()

    # -- the session's calls -------------------------------------------------------------------

    def grant(self, worker: str, connection: int, wait: float = 0.0) -> dict[str, Any]:
        """The next task for ``worker``: train, validate, wait (retry later) or done.

        With ``wait`` > 0 blocks up to that long for a task to become available (long poll).
        """
        deadline = self._clock() + wait
        with self._cond:
            while True:
                self._expire_locked(self._clock())
                task = self._next_task(worker, connection)
                remaining = deadline - self._clock()
                if task["kind"] != WAIT or remaining <= 0:
                    return task
                self._cond.wait(min(remaining, 1.0))

    def _next_task(self, worker: str, connection: int) -> dict[str, Any]:
        if self.state.stopped:
            return {"kind": DONE, "reason": self.state.stopped}
        if self._pending_validation and not self._validating:
            epoch, version = self._pending_validation[0]
            self._validating = True
            lease = self._new_lease(
                VALIDATE, epoch, list(self.plan.validation_shards), worker, connection
            )
            return self._describe(lease, version=version)
        current = self._current_epoch()
        for epoch in (current, current + 1):
            queue = self._queues.get(epoch)
            if queue:
                shard = queue.popleft()
                lease = self._new_lease(TRAIN, epoch, [shard], worker, connection)
                return self._describe(lease)
        return {"kind": WAIT, "retry_after": 1.0}

    def _new_lease(
        self, kind: str, epoch: int, shards: list[str], worker: str, connection: int
    ) -> Lease:
        now = self._clock()
        lease = Lease(self.state.next_lease, kind, epoch, shards, worker, connection, now)
        self._heard[connection] = now
        self.state.next_lease += 1
        self._leases[lease.lease_id] = lease
        self._log("granted", lease)
        return lease

    def _describe(self, lease: Lease, **extra: Any) -> dict[str, Any]:
        return {
            "kind": lease.kind,
            "lease": lease.lease_id,
            "epoch": lease.epoch,
            "shards": lease.shards,
            "timeout": self.plan.timeout,
            **extra,
        }

    def renew(self, connection: int) -> None:
        """Every frame of a connection keeps its leases alive (constant time: every frame)."""
        with self._cond:
            if connection in self._heard:
                self._heard[connection] = self._clock()

    def count_update(self, connection: int) -> None:
        """An update of ``connection`` reached the center: it belongs to the shard the worker is
        training, the next one it completes (not always its oldest lease: a lease taken ahead at
        an epoch's end can be trained before one taken earlier)."""
        with self._cond:
            self._pending[connection] = self._pending.get(connection, 0) + 1

    def complete(self, lease_id: int, connection: int, result: dict[str, Any]) -> dict[str, Any]:
        """Record a finished task; refused when the lease is no longer this connection's."""
        with self._cond:
            lease = self._leases.get(lease_id)
            if lease is None or lease.connection != connection:
                self._lease_log(
                    {
                        "time": self._elapsed(),
                        "event": "refused",
                        "lease": lease_id,
                        "reason": "lease expired or unknown",
                    }
                )
                return {"accepted": False, "reason": f"lease {lease_id} expired or unknown"}
            del self._leases[lease_id]
            if lease.kind == TRAIN:
                lease.updates = self._pending.pop(connection, 0)
            self._log("completed", lease)
            if lease.kind == TRAIN:
                self._complete_train(lease, result)
            else:
                self._complete_validation(lease, result)
            self._cond.notify_all()
            return {
                "accepted": True,
                "stopped": self.state.stopped,
                # a worker holding a lease ahead asks for this task before training that shard
                "validation_waiting": bool(self._pending_validation) and not self._validating,
            }

    def release_connection(self, connection: int, reason: str) -> None:
        """A connection ended: its leases go back to the queues."""
        with self._cond:
            mine = [lease for lease in self._leases.values() if lease.connection == connection]
            for lease in mine:
                self._return(lease, "released", reason)
            self._heard.pop(connection, None)
            self._pending.pop(connection, None)

    def expire(self) -> None:
        with self._cond:
            self._expire_locked(self._clock())

    def stop(self, reason: str) -> None:
        """End the run early (the driver was interrupted)."""
        with self._cond:
            if not self.state.stopped:
                self.state.stopped = reason
            self._cond.notify_all()

    # -- internals (lock held) -----------------------------------------------------------------

    def _expire_locked(self, now: float) -> None:
        silent = {c for c, heard in self._heard.items() if heard + self.plan.timeout <= now}
        if not silent:
            return
        for lease in [lease for lease in self._leases.values() if lease.connection in silent]:
            self._return(lease, "expired", f"no word from the worker for {self.plan.timeout:g} s")
        for connection in silent:
            del self._heard[connection]

    def _return(self, lease: Lease, event: str, reason: str) -> None:
        del self._leases[lease.lease_id]
        if lease.kind == TRAIN:  # the kept work goes on the first lost lease (leases go in order)
            lease.updates = self._pending.pop(lease.connection, 0)
        self._log(event, lease, reason=reason)
        if lease.kind == TRAIN:
            self._queues[lease.epoch].appendleft(lease.shards[0])
        else:
            self._validating = False
        self._cond.notify_all()

    def _complete_train(self, lease: Lease, result: dict[str, Any]) -> None:
        epoch, shard = lease.epoch, lease.shards[0]
        self.state.completed.setdefault(epoch, []).append(shard)
        loss = result.get("loss")
        if isinstance(loss, int | float):
            self._train_loss.setdefault(epoch, []).append(float(loss))
        self._history(
            {
                "type": "shard",
                "time": self._elapsed(),
                "unix_time": round(time.time(), 3),
                "epoch": epoch,
                "shard": shard,
                "worker": lease.worker,
                **{key: result[key] for key in _SHARD_RESULT if key in result},
            }
        )
        self._close_epochs()

    def _close_epochs(self) -> None:
        """Close fully trained epochs in order: snapshot the center, queue their validation.

        A worker may finish epoch e+1 before the last shard of epoch e; epoch e+1 then closes
        right after epoch e, so validations (and early stopping) always go in epoch order.
        """
        recorded = {record["epoch"] for record in self.state.validated}
        while self._next_close < self.plan.epochs and self._epoch_trained(self._next_close):
            epoch = self._next_close
            self._next_close += 1
            if epoch in recorded:  # resumed: validated before the interruption
                continue
            version = self._on_epoch_end(epoch)
            log.info("epoch %d trained (center version %d)", epoch, version)
            if self.plan.validation_shards:
                self._pending_validation.append((epoch, version))
            else:
                self._record_epoch(epoch, version, {})
                self._update_stopped()

    def _complete_validation(self, lease: Lease, result: dict[str, Any]) -> None:
        epoch, version = self._pending_validation.popleft()
        self._validating = False
        metrics: dict[str, float] = {
            key: float(result[key]) for key in ("loss", "accuracy", "auc") if key in result
        }
        self._record_epoch(epoch, version, metrics)
        loss = metrics.get("loss")
        best = loss is not None and (
            self.state.best_loss is None or loss < self.state.best_loss - self.plan.min_delta
        )
        if best:
            self.state.best_loss, self.state.best_epoch = loss, epoch
        self._on_validated(epoch, best)
        self._update_stopped()

    def _record_epoch(self, epoch: int, version: int, metrics: dict[str, float]) -> None:
        losses = self._train_loss.pop(epoch, [])
        record: dict[str, Any] = {
            "type": "epoch",
            "time": self._elapsed(),
            "unix_time": round(time.time(), 3),
            "epoch": epoch,
            "version": version,
            "updates": version,
        }
        if losses:
            record["train_loss"] = sum(losses) / len(losses)
        record.update({f"val_{key}": value for key, value in metrics.items()})
        self.state.validated.append({"epoch": epoch, "version": version, **metrics})
        self._history(record)

    def _update_stopped(self) -> None:
        if self.state.stopped:
            return
        validated = [record["epoch"] for record in self.state.validated]
        if len(validated) >= self.plan.epochs:
            self.state.stopped = f"trained {self.plan.epochs} epochs"
        elif (
            self.plan.patience is not None
            and self.state.best_epoch is not None
            and validated
            and validated[-1] - self.state.best_epoch >= self.plan.patience
        ):
            self.state.stopped = (
                f"early stop: validation loss did not improve for {self.plan.patience} epochs "
                f"after epoch {self.state.best_epoch}"
            )
        if self.state.stopped:
            log.info("run finished: %s", self.state.stopped)
            self._cond.notify_all()

    def _elapsed(self) -> float:
        return round(time.time() - self._started, 3)

    def _log(self, event: str, lease: Lease, reason: str = "") -> None:
        record: dict[str, Any] = {
            "time": self._elapsed(),
            "event": event,
            "lease": lease.lease_id,
            "kind": lease.kind,
            "epoch": lease.epoch,
            "worker": lease.worker,
        }
        if lease.kind == TRAIN:
            record["shard"] = lease.shards[0]
            if event != "granted":
                record["updates"] = lease.updates
        if reason:
            record["reason"] = reason
        self._lease_log(record)


class EpochSnapshots:
    """Copies of the center taken when an epoch's training ends, kept until it is validated.

    A validation task evaluates exactly the snapshot of its epoch (the worker pulls it by epoch),
    while other workers already train the next epoch. The best validated snapshot is kept and
    handed to ``on_best`` (the driver writes it to disk); the others are dropped after validation.
    """

    def __init__(
        self, store: CenterStore, on_best: Callable[[int, int, list[Array]], None] | None = None
    ) -> None:
        self._store = store
        self._on_best = on_best
        self._lock = threading.Lock()
        self._snapshots: dict[int, tuple[int, list[Array]]] = {}
        self.best: tuple[int, int, list[Array]] | None = None  # (epoch, version, weights)

    def take(self, epoch: int) -> int:
        version, arrays = self._store.copy_center()
        with self._lock:
            self._snapshots[epoch] = (version, arrays)
        return version

    def get(self, epoch: int) -> tuple[int, list[Array]] | None:
        with self._lock:
            return self._snapshots.get(epoch)

    def validated(self, epoch: int, best: bool) -> None:
        with self._lock:
            snapshot = self._snapshots.pop(epoch, None)
            if best and snapshot is not None:
                self.best = (epoch, *snapshot)
        if best and snapshot is not None and self._on_best is not None:
            self._on_best(epoch, *snapshot)
