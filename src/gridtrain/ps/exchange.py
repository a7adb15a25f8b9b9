"""Worker side of each algorithm: when to talk to the parameter server, and what to send.

Layer: ps, client logic. Wraps a connected ``PSClient`` and a worker's local weights (lists of
numpy arrays); knows no training framework, so the Keras loop (issue 4) calls it around each
step::

    exchange = Exchange(client, every=4)
    weights = exchange.start()                    # pull the center
    for batch in batches:
        model.train_on_batch(...)                 # one local step
        new = exchange.after_step(model.get_weights())
        if new is not None:
            model.set_weights(new)

What is pushed follows the server's algorithm (told in the handshake): Downpour with optimizer
``add`` and ADAG push the delta accumulated since the last exchange (ADAG's normalisation by the
window happens on the server); EASGD pushes the local variable and moves it by the elastic
difference it gets back. With optimizer ``sgd``/``adam`` the worker pushes gradients instead:
``push_gradients``. A refused (stale) push costs one pull; nothing is lost but that update.

GEM placed on the worker (``gem_on: worker``, the paper's placement) rescales the delta here
before it leaves: the worker's own proxy (a momentum SGD fed its deltas) is matched against the
center's move between this worker's last two pulls, which carries every other worker's updates,
so pi falls as workers are added (``algorithms.gem_worker_step``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np

from gridtrain.errors import StaleUpdateError
from gridtrain.ps.algorithms import Array, gem_worker_step
from gridtrain.ps.client import PSClient
from gridtrain.ps.rules import AlgorithmConfig

log = logging.getLogger(__name__)


class Exchange:
    """Exchanges with the parameter server every ``every`` local steps (tau, the window)."""

    def __init__(self, client: PSClient, every: int = 1) -> None:
        if every < 1:
            raise ValueError(f"exchange every {every} steps: must be >= 1")
        if client.algorithm is None:
            raise ValueError("connect the client first: the algorithm comes with the handshake")
        self.client = client
        self.every = every
        self.algorithm: AlgorithmConfig = client.algorithm
        self.version = 0
        self.steps = 0
        self.refused = 0
        self.updates = 0  # pushes the server accepted
        self._anchor: list[Array] = []
        self._gradient_sum: list[Array] | None = None
        # GEM on the worker: its proxy's velocity, and the center it pulled before the anchor
        self._proxy: list[Array] | None = None
        self._previous_anchor: list[Array] | None = None

    def start(self) -> list[Array]:
        """Pull the center; returns the weights the worker should start from."""
        self.version, center = self.client.pull()
        self._set_anchor(center)
        return center

    def _set_anchor(self, center: Sequence[Array]) -> None:
        if self.algorithm.gem_on_worker and self._anchor:
            self._previous_anchor = self._anchor
        self._anchor = [array.copy() for array in center]

    def after_step(
        self, weights: Sequence[Array] | Callable[[], Sequence[Array]]
    ) -> list[Array] | None:
        """Call after every local step; returns new weights when an exchange happened.

        ``weights`` may be a function returning them (``model.get_weights``), called only on the
        steps that exchange, so the other steps copy nothing.
        """
        if self.algorithm.algorithm in ("downpour", "sync") and self.algorithm.optimizer != "add":
            raise ValueError(
                f"the server's optimizer is {self.algorithm.optimizer}: it expects gradients; "
                "call push_gradients() instead of after_step()"
            )
        self.steps += 1
        if self.steps % self.every:
            return None
        return self._exchange(weights)

    def flush(self, weights: Sequence[Array] | Callable[[], Sequence[Array]]) -> list[Array] | None:
        """Exchange now if local steps are pending (end of a shard, end of the run).

        Without it the last ``steps % every`` steps of a worker would never reach the center.
        """
        if self.steps % self.every == 0:
            return None
        self.steps = 0
        return self._exchange(weights)

    def _exchange(self, weights: Sequence[Array] | Callable[[], Sequence[Array]]) -> list[Array]:
        if callable(weights):
            weights = weights()
        if self.algorithm.algorithm == "easgd":
            return self._easgd(weights)
        delta = [np.subtract(w, a) for w, a in zip(weights, self._anchor, strict=True)]
        if self.algorithm.gem_on_worker:
            delta = self._gem(delta)
        return self._push_pull(delta)

    def _gem(self, delta: list[Array]) -> list[Array]:
        if self._proxy is None:
            self._proxy = [np.zeros_like(d) for d in delta]
        previous = self._previous_anchor or self._anchor  # no move seen before the 2nd pull
        scaled = []
        for index, d in enumerate(delta):
            step, self._proxy[index] = gem_worker_step(
                self._proxy[index],
                np.subtract(self._anchor[index], previous[index]),
                d,
                momentum=self.algorithm.proxy_momentum,
                kappa=self.algorithm.kappa,
            )
            scaled.append(step)
        return scaled

    def push_gradients(self, gradients: Sequence[Array]) -> list[Array] | None:
        """Downpour with a server-side optimizer: accumulate gradients, push every ``every``."""
        if self._gradient_sum is None:
            self._gradient_sum = [np.array(g, copy=True) for g in gradients]
        else:
            for total, gradient in zip(self._gradient_sum, gradients, strict=True):
                total += gradient
        self.steps += 1
        if self.steps % self.every:
            return None
        total_gradient, self._gradient_sum = self._gradient_sum, None
        return self._push_pull(total_gradient)

    def _push_pull(self, update: list[Array]) -> list[Array]:
        try:
            reply = self.client.push_pull(update, self.version)
        except StaleUpdateError as refused:
            self.refused += 1
            log.info("update refused (%s); pulling the center", refused)
            return self.start()
        self.version = reply.version
        self.updates += 1
        self._set_anchor(reply.tensors)
        return reply.tensors

    def _easgd(self, weights: Sequence[Array]) -> list[Array]:
        local = [np.array(w, copy=True) for w in weights]
        reply = self.client.push_pull(local, self.version)
        self.version = reply.version
        self.updates += 1
        # the server sent alpha * (local - center): the worker moves by minus that
        return [w - delta for w, delta in zip(weights, reply.tensors, strict=True)]
