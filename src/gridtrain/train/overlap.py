"""Exchanges that travel while the model trains: the worker's overlapped exchange.

Layer: train, client logic over ``ps.Exchange``; no training framework, no sockets of its own.
A synchronous exchange stops training for a round trip: push the window's update, wait, set the
weights the parameter server's rule gives back. Here the push of window k leaves in a background
thread and the model trains window k+1 meanwhile; when the reply is in (checked after every step,
waited for at the next exchange point at the latest) it is merged so that the steps taken since
the push are kept::

    new weights = target + (local weights now - local weights at the push)

where ``target`` is what the synchronous exchange would have set at the push: the returned center
(Downpour, ADAG, sync), or the pushed weights moved by the elastic difference (EASGD). A refused
(stale) push gives the center as target, as in the synchronous case. The anchor of the next delta
is the returned center, so the next push carries exactly the local steps taken since the push.

**Adaptive** (``train.overlap: adaptive``): at an exchange point whose previous exchange is still
in flight, the worker does not wait for it but trains on; the next exchange point after the reply
came in pushes every step since the last push. A worker then exchanges as often as its link
allows, never more often than every ``every`` steps, and stands still only at the end of a shard
(``flush``). Where the link keeps up (loopback, a LAN) it is the plain overlapped exchange; where
it does not (a WAN uplink shared by many workers), each push carries several windows instead of
the worker waiting for the network. ``deferred`` counts the exchange points passed that way.

The cost is one window of extra staleness: the center's news arrives a window later than a
synchronous worker would see it, and the next push is computed against a center one exchange
older (the parameter server counts this as ordinary staleness). What each exchange cost the worker
is split in two: ``wait_seconds`` that training stood still for (the wait at an exchange point,
the merge, the end-of-shard flush) and ``overlapped_seconds`` the exchange travelled while
training went on.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from gridtrain.ps.algorithms import Array
from gridtrain.ps.exchange import Exchange

Weights = Callable[[], Sequence[Array]]


def merge(target: Sequence[Array], pushed: Sequence[Array], local: Sequence[Array]) -> list[Array]:
    """``target + (local - pushed)``, tensor by tensor: the reply with the steps since the push."""
    return [
        np.add(t, np.subtract(now, then), dtype=np.result_type(now))
        for t, then, now in zip(target, pushed, local, strict=True)
    ]


class OverlappedExchange:
    """Exchanges every ``every`` local steps without waiting for the reply.

    ``exchange`` must exchange on every call of its ``after_step`` (``Exchange(client, 1)``): the
    window is counted here. The connection is used by one thread at a time: the worker must call
    ``flush`` (which waits for the exchange in flight) before it leases, completes or pulls.
    """

    def __init__(self, exchange: Exchange, every: int, *, adaptive: bool = False) -> None:
        if exchange.every != 1:
            raise ValueError(
                "the overlapped exchange counts the window: give it Exchange(client, 1)"
            )
        if every < 1:
            raise ValueError(f"exchange every {every} steps: must be >= 1")
        self.exchange = exchange
        self.every = every
        self.adaptive = adaptive
        self.steps = 0
        self.unsent = 0  # local steps since the last push
        self.deferred = 0  # exchange points passed while the previous exchange travelled
        self.wait_seconds = 0.0
        self.overlapped_seconds = 0.0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="exchange")
        self._pending: Future[list[Array]] | None = None
        self._pushed: Sequence[Array] = []
        self._started = 0.0
        self._ended = 0.0

    @property
    def updates(self) -> int:
        return self.exchange.updates

    @property
    def version(self) -> int:
        return self.exchange.version

    def after_step(self, weights: Weights) -> list[Array] | None:
        """Call after every local step; returns the weights to set when a reply was merged."""
        self.steps += 1
        self.unsent += 1
        if self.steps % self.every == 0:
            if self.adaptive and self._pending is not None and not self._pending.done():
                self.deferred += 1  # the link is busy: train on, push at a later point
                return None
            return self._push(weights)
        if self._pending is not None and self._pending.done():
            return self._settle(weights)
        return None

    def after_steps(self, count: int, weights: Weights) -> list[Array] | None:
        """``after_step`` for a window of ``count`` steps that ends at the next exchange at most."""
        self.steps += count - 1
        self.unsent += count - 1
        return self.after_step(weights)

    def flush(self, weights: Weights) -> list[Array] | None:
        """Wait for the exchange in flight and send the steps not yet sent (end of a shard).

        Afterwards the center holds every local step and no exchange is in flight.
        """
        merged = self._settle(weights)
        if self.unsent == 0:
            return merged
        self.steps = self.unsent = 0
        before = time.perf_counter()
        current = merged if merged is not None else weights()
        new = self.exchange.after_step(current)
        self.wait_seconds += time.perf_counter() - before
        return new

    def close(self) -> None:
        """Wait for the exchange in flight (its errors no longer matter) and stop the thread."""
        pending, self._pending = self._pending, None
        if pending is not None:
            with contextlib.suppress(Exception):  # the connection is being given up anyway
                pending.result()
        self._pool.shutdown(wait=True)

    def _push(self, weights: Weights) -> list[Array] | None:
        merged = self._settle(weights)
        before = time.perf_counter()
        self._pushed = merged if merged is not None else list(weights())
        self.unsent = 0
        self._started = time.perf_counter()
        self._pending = self._pool.submit(self._exchange, self._pushed)
        self.wait_seconds += self._started - before
        return merged

    def _exchange(self, pushed: Sequence[Array]) -> list[Array]:
        try:
            target = self.exchange.after_step(pushed)
            assert target is not None  # every=1: every call exchanges
            return target
        finally:
            self._ended = time.perf_counter()

    def _settle(self, weights: Weights) -> list[Array] | None:
        """Wait for the exchange in flight, if any, and merge its reply into ``weights()``."""
        pending, self._pending = self._pending, None
        if pending is None:
            return None
        before = time.perf_counter()
        try:
            target = pending.result()  # the exchange's errors (a lost server) surface here
        finally:
            self.overlapped_seconds += max(0.0, min(self._ended, before) - self._started)
        merged = merge(target, self._pushed, weights())
        self._pushed = []
        self.wait_seconds += time.perf_counter() - before
        return merged
