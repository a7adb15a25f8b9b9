"""The center variable, shared by all connections: versioning, staleness, atomic updates.

Layer: ps, state. Thread-safe, no sockets, no disk. Decides whether a push is accepted (staleness,
synchronous rounds) and applies it through ``rules.Updater``.

Consistency without stalls (read-copy-update): a reader (a connection sending the center) takes a
reference to the current *generation* under a short lock and sends it without any lock held. An
update is applied in place when no reader holds the current generation; otherwise it is applied to
a copy (a recycled spare when one is free) that becomes the new generation, and the old one is
recycled once its last reader is done. So a pull never observes a half-applied update, and a slow
reader never stalls writers. Updates are serialised by ``_update_lock``, which a checkpoint also
takes, so a checkpoint sees center, optimizer state and version of the same instant.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gridtrain.ps.algorithms import Array, dynsgd_scale
from gridtrain.ps.protocol import Signature, tensor_views
from gridtrain.ps.rules import AlgorithmConfig, Updater

log = logging.getLogger(__name__)

REFUSED_STALE = "stale"
REFUSED_FUTURE = "future"
REFUSED_DUPLICATE = "duplicate"


@dataclass(eq=False)
class Generation:
    """One immutable-while-read state of the center."""

    arrays: list[Array]
    version: int
    readers: int = 0
    views: list[memoryview] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.views = tensor_views(self.arrays)


@dataclass(frozen=True)
class PushOutcome:
    """What became of one push."""

    accepted: bool
    version: int
    staleness: int
    reason: str = ""
    message: str = ""
    consumed: bool = False


@dataclass
class CenterSnapshot:
    """Everything a checkpoint holds; only valid inside ``CenterStore.with_snapshot``."""

    center: list[Array]
    version: int
    optimizer_state: dict[str, list[Array]]
    optimizer_step: int
    counters: dict[str, int]
    algorithm: dict[str, Any]


class CenterStore:
    """The center variable with its version, optimizer and counters.

    The store takes ownership of the ``center`` arrays (no copy: the model may be large) and
    updates them in place.
    """

    def __init__(
        self,
        center: Sequence[Array],
        config: AlgorithmConfig,
        *,
        version: int = 0,
        optimizer_state: dict[str, list[Array]] | None = None,
        optimizer_step: int = 0,
        counters: dict[str, int] | None = None,
    ) -> None:
        arrays = [np.ascontiguousarray(array) for array in center]
        self.signature = Signature.of(arrays)
        for index, spec in enumerate(self.signature.specs):
            if spec.dtype.kind != "f":
                raise ValueError(
                    f"center tensor {index} has dtype {spec.dtype.name}; the parameter server "
                    "trains floating-point weights only (cast it, or leave it out of the center)"
                )
        self.config = config
        self.updater = Updater(config, self.signature, optimizer_state, optimizer_step)
        self._update_lock = threading.Lock()
        self._cond = threading.Condition()
        self._current = Generation(arrays, version)
        self._spare: list[Array] | None = None
        self._recycler: Callable[[list[Array]], None] | None = None
        self._owed = 0
        self.counters = {"pushes_accepted": 0, "pushes_refused": 0, "updates_applied": 0}
        if counters:
            self.counters.update(counters)
        self._sync_sum: list[Array] | None = None
        self._sync_contributors: list[int] = []
        self._closed = False

    @classmethod
    def resume(cls, snapshot: CenterSnapshot, config: AlgorithmConfig) -> CenterStore:
        """A store continuing from a checkpoint's snapshot, under ``config``'s rule."""
        return cls(
            snapshot.center,
            config,
            version=snapshot.version,
            optimizer_state=snapshot.optimizer_state or None,
            optimizer_step=snapshot.optimizer_step,
            counters=snapshot.counters,
        )

    def set_recycler(self, recycler: Callable[[list[Array]], None]) -> None:
        """Where arrays go when a consumed receive buffer has become the center (see apply_push)."""
        self._recycler = recycler

    @property
    def version(self) -> int:
        with self._cond:
            return self._current.version

    # -- readers -------------------------------------------------------------------------------

    def acquire(self) -> Generation:
        """The current generation, held until ``release``; it will not change meanwhile."""
        with self._cond:
            generation = self._current
            generation.readers += 1
            return generation

    def release(self, generation: Generation) -> None:
        with self._cond:
            generation.readers -= 1
            if generation is not self._current and generation.readers == 0:
                self._recycle(generation)

    def _recycle(self, generation: Generation) -> None:
        # A generation built in a connection's receive buffer repays that buffer's pool.
        if self._owed and self._recycler is not None:
            self._owed -= 1
            self._recycler(generation.arrays)
        elif self._spare is None:
            self._spare = generation.arrays

    def copy_center(self) -> tuple[int, list[Array]]:
        """A private copy of the center and its version (tests and checkpoints use it)."""
        generation = self.acquire()
        try:
            return generation.version, [array.copy() for array in generation.arrays]
        finally:
            self.release(generation)

    def wait_for_version(self, after: int, timeout: float) -> int | None:
        """Block until the version exceeds ``after`` (a synchronous round), at most ``timeout``.

        Returns the version, or None when the store closed first (the server is stopping and
        the round will never complete: the waiter must not answer as if it had).
        """
        with self._cond:
            self._cond.wait_for(lambda: self._current.version > after or self._closed, timeout)
            if self._closed and self._current.version <= after:
                return None
            return self._current.version

    def close(self) -> None:
        """Wake every waiter (the server is stopping)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- writers -------------------------------------------------------------------------------

    def precheck(self, base_version: int) -> PushOutcome | None:
        """A refusal decided from the header alone, so the tensor bytes need not be kept."""
        with self._cond:
            refusal = self._refusal(self._current.version, base_version)
            if refusal is not None:
                self.counters["pushes_refused"] += 1
            return refusal

    def _refusal(self, version: int, base_version: int) -> PushOutcome | None:
        if self.config.algorithm == "easgd":
            return None  # the push is the worker's whole variable: it cannot be stale
        if base_version > version:
            return PushOutcome(
                False,
                version,
                0,
                REFUSED_FUTURE,
                f"push claims base version {base_version} but the center is at {version} (the "
                "parameter server was restarted from a checkpoint); pull the center first",
            )
        stale = version - base_version
        limit = self.config.max_staleness
        if self.config.algorithm == "sync":
            limit = 0
        if limit is not None and stale > limit:
            return PushOutcome(
                False,
                version,
                stale,
                REFUSED_STALE,
                f"push is {stale} versions stale, the limit is {limit}; pull the center first",
            )
        return None

    def apply_push(
        self, update: list[Array], base_version: int, worker_id: int, *, consumable: bool = False
    ) -> PushOutcome:
        """Accept or refuse one verified push; ``update`` is overwritten with the delta.

        With ``consumable``, while readers hold the center the store may take ``update``'s arrays
        as the next center instead of allocating (``PushOutcome.consumed``); it hands back arrays
        of the same shapes through the recycler once the old center's last reader is done. So
        the model is held at most once per receive buffer plus once, however many pulls run.
        """
        with self._update_lock:
            version = self._current.version
            refusal = self._refusal(version, base_version)
            if refusal is None and self.config.algorithm == "sync":
                refusal = self._gather(update, version, worker_id)
                if refusal is None:
                    self._count("pushes_accepted")
                    return PushOutcome(True, self.version, 0)
            if refusal is not None:
                self._count("pushes_refused")
                return refusal
            stale = max(version - base_version, 0)
            scale = dynsgd_scale(stale) if self.config.staleness_scaling == "dynsgd" else 1.0
            consumed = self._apply(update, scale, consumable)
            self._count("pushes_accepted")
            return PushOutcome(True, version + 1, stale, consumed=consumed)

    def _count(self, name: str) -> None:
        with self._cond:
            self.counters[name] += 1

    def _gather(self, update: list[Array], version: int, worker_id: int) -> PushOutcome | None:
        if worker_id in self._sync_contributors:
            return PushOutcome(
                False,
                version,
                0,
                REFUSED_DUPLICATE,
                f"worker {worker_id} already pushed in round {version}; wait for the round",
            )
        if self._sync_sum is None:
            self._sync_sum = [array.copy() for array in update]
        elif not self._sync_contributors:
            for total, array in zip(self._sync_sum, update, strict=True):
                np.copyto(total, array)
        else:
            for total, array in zip(self._sync_sum, update, strict=True):
                np.add(total, array, out=total)
        self._sync_contributors.append(worker_id)
        # Backup workers: the round closes at the first sync_workers arrivals; later ones are
        # stale by then and refused.
        if len(self._sync_contributors) >= self.config.sync_workers:
            count = len(self._sync_contributors)
            for total in self._sync_sum:
                np.multiply(total, 1.0 / count, out=total)
            self._apply(self._sync_sum, 1.0)
            self._sync_contributors = []
            log.debug("synchronous round %d closed with %d updates", version, count)
        return None

    def _apply(self, update: list[Array], scale: float, consumable: bool = False) -> bool:
        """Apply one update; True when ``update``'s arrays became the new center (exchange)."""
        current = self._current  # stable: only this method replaces it, under _update_lock
        self.updater.to_delta(current.arrays, update, scale)
        with self._cond:
            if current.readers == 0:
                for center, delta in zip(current.arrays, update, strict=True):
                    np.add(center, delta, out=center)
                current.version += 1
                self.counters["updates_applied"] += 1
                self._cond.notify_all()
                return False
            consumed = consumable and not self.config.reply_is_delta
            target: list[Array] | None = update
            if not consumed:
                target, self._spare = self._spare, None
        # Readers hold the current generation: build the next one beside it, without the lock.
        if target is None:
            target = [np.empty_like(array) for array in current.arrays]
        for out, center, delta in zip(target, current.arrays, update, strict=True):
            np.add(center, delta, out=out)
        with self._cond:
            self._current = Generation(target, current.version + 1)
            self.counters["updates_applied"] += 1
            if consumed:
                self._owed += 1
            if current.readers == 0:
                self._recycle(current)
            self._cond.notify_all()
        return consumed

    def counter_values(self) -> dict[str, int]:
        with self._cond:
            return dict(self.counters)

    def with_snapshot(self, action: Callable[[CenterSnapshot], None]) -> None:
        """Run ``action`` on a consistent snapshot (no copy; updates wait until it returns)."""
        with self._update_lock:
            current = self._current
            action(
                CenterSnapshot(
                    center=current.arrays,
                    version=current.version,
                    optimizer_state=self.updater.state,
                    optimizer_step=self.updater.step,
                    counters=self.counter_values(),
                    algorithm=self.config.to_dict(),
                )
            )
