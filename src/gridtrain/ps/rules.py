"""The server's update rule: algorithm configuration and in-place application with optimizer state.

Layer: ps, logic. Applies the pure functions of ``algorithms.py`` to the center in place (one pass,
no model-sized temporaries for the ``add`` and plain SGD paths) and owns the optimizer state.
It never locks, never touches a socket and never decides *whether* an update is accepted; that is
``center.py``'s job.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from gridtrain.errors import ConfigError
from gridtrain.ps.algorithms import GEM_MAX_SCALE, Array
from gridtrain.ps.protocol import Signature

ALGORITHMS = ("downpour", "easgd", "adag", "gem", "sync")
OPTIMIZERS = ("add", "sgd", "adam")
STALENESS_SCALINGS = ("none", "dynsgd")
GEM_PLACEMENTS = ("server", "worker")


@dataclass(frozen=True)
class AlgorithmConfig:
    """How the parameter server turns pushes into center updates.

    ``optimizer`` applies to downpour and sync: ``add`` adds the pushed delta (workers that run
    their own optimizer over a window), ``sgd`` and ``adam`` treat the push as a gradient.
    ``easgd`` and ``adag`` always add (the elastic difference, or the delta divided by ``window``).
    ``gem`` always adds the pushed delta rescaled by GEM's pi (``kappa``, ``proxy_momentum``).
    ``kappa`` defaults to 0.2 = 2 (1 - proxy_momentum), where pi settles at 1 in a direction all
    updates agree on; NNLO's 1.0 settles at the cap (5x) and diverged with 8 workers
    (docs/reference/benchmarks.md, stale gradients). ``gem_on`` places the rule: ``worker``
    (the paper's, the default: each worker keeps its own proxy and matches it against the
    center's move between its own last two pulls, which holds every other worker's updates; it
    pushes the rescaled delta and the server adds it as Downpour does) or ``server`` (NNLO's: one
    proxy fed every push, matched against the center's last move; it lost 0.098 AUC at 8 workers
    where the worker placement lost 0.001).

    These defaults are the only ones written: ``gridtrain ps serve`` takes its options from the
    fields, and tests/ps/test_ps_defaults.py holds the schema's ``train.algorithm`` to them
    (a training differs on purpose in ``optimizer`` and ``staleness_scaling`` only).
    """

    algorithm: str = "downpour"
    optimizer: str = "sgd"
    learning_rate: float = 0.01
    momentum: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-7
    alpha: float = 0.1
    window: int = 1
    staleness_scaling: str = "none"
    max_staleness: int | None = None
    sync_workers: int = 1
    backup_workers: int = 0
    sync_timeout: float = 60.0
    kappa: float = 0.2
    proxy_momentum: float = 0.9
    gem_on: str = "worker"

    def __post_init__(self) -> None:
        def bad(name: str, value: object, expected: str) -> ConfigError:
            return ConfigError(f"{name} = {value!r} is invalid: expected {expected}")

        if self.algorithm not in ALGORITHMS:
            raise bad("algorithm", self.algorithm, f"one of {', '.join(ALGORITHMS)}")
        if self.optimizer not in OPTIMIZERS:
            raise bad("optimizer", self.optimizer, f"one of {', '.join(OPTIMIZERS)}")
        if self.staleness_scaling not in STALENESS_SCALINGS:
            raise bad("staleness_scaling", self.staleness_scaling, f"one of {STALENESS_SCALINGS}")
        if not self.learning_rate > 0:
            raise bad("learning_rate", self.learning_rate, "a positive number, e.g. 0.01")
        if not 0 <= self.momentum < 1:
            raise bad("momentum", self.momentum, "0 <= momentum < 1, e.g. 0.9")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1 and self.epsilon > 0):
            raise bad(
                "beta1/beta2/epsilon", (self.beta1, self.beta2, self.epsilon), "betas in [0, 1)"
            )
        if not 0 < self.alpha < 1:
            raise bad("alpha", self.alpha, "0 < alpha < 1, e.g. 0.1 (EASGD moving rate)")
        if self.window < 1:
            raise bad("window", self.window, "an integer >= 1 (local steps per push)")
        if self.max_staleness is not None and self.max_staleness < 0:
            raise bad("max_staleness", self.max_staleness, "an integer >= 0, or None")
        if self.sync_workers < 1 or self.backup_workers < 0:
            raise bad(
                "sync_workers/backup_workers",
                (self.sync_workers, self.backup_workers),
                "sync_workers >= 1 and backup_workers >= 0",
            )
        if not self.kappa > 0:
            raise bad("kappa", self.kappa, "a positive number, e.g. 0.2 (GEM proxy amplification)")
        if not 0 <= self.proxy_momentum < 1:
            raise bad("proxy_momentum", self.proxy_momentum, "0 <= proxy_momentum < 1, e.g. 0.9")
        if self.gem_on not in GEM_PLACEMENTS:
            raise bad("gem_on", self.gem_on, f"one of {', '.join(GEM_PLACEMENTS)}")
        if not self.sync_timeout > 0:
            raise bad("sync_timeout", self.sync_timeout, "a positive number of seconds")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> AlgorithmConfig:
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown algorithm settings {unknown}; known: {sorted(known)}")
        return cls(**values)

    @property
    def reply_is_delta(self) -> bool:
        """EASGD replies to push-and-pull with the elastic difference, not the center."""
        return self.algorithm == "easgd"

    @property
    def gem_on_worker(self) -> bool:
        """GEM's rescaling happens on each worker (the paper's placement); the server adds."""
        return self.algorithm == "gem" and self.gem_on == "worker"


class Updater:
    """Applies one update to the center in place and keeps the optimizer state.

    ``apply`` may overwrite ``update`` (it is the connection's receive buffer): for EASGD it holds
    the elastic difference afterwards, which is what the worker needs back.
    """

    def __init__(
        self,
        config: AlgorithmConfig,
        signature: Signature,
        state: dict[str, list[Array]] | None = None,
        step: int = 0,
    ) -> None:
        self.config = config
        self.step = step
        names: tuple[str, ...] = ()
        if config.algorithm in ("downpour", "sync"):
            if config.optimizer == "sgd" and config.momentum > 0:
                names = ("velocity",)
            elif config.optimizer == "adam":
                names = ("first_moment", "second_moment")
        elif config.algorithm == "gem" and not config.gem_on_worker:
            names = ("proxy", "central_moment")
        if state is None:
            state = {name: signature.allocate() for name in names}
        if set(state) != set(names):
            if config.gem_on_worker and set(state) == {"proxy", "central_moment"}:
                raise ConfigError(
                    "this checkpoint holds the state of GEM on the server; set gem_on: server "
                    "(ps serve --gem-on server) to resume it"
                )
            raise ConfigError(
                f"optimizer state holds {sorted(state)} but {config.algorithm}/{config.optimizer} "
                f"needs {sorted(names)}; resume with the algorithm settings of the checkpoint"
            )
        self.state = state

    def apply(self, center: list[Array], update: list[Array], scale: float = 1.0) -> None:
        """center += delta, in place; ``update`` holds the delta afterwards."""
        self.to_delta(center, update, scale)
        for c, d in zip(center, update, strict=True):
            np.add(c, d, out=c)

    def to_delta(self, center: list[Array], update: list[Array], scale: float = 1.0) -> None:
        """Turn ``update`` (in place) into the delta to add to ``center``; advances the state.

        ``center`` is only read (EASGD's elastic difference needs it).
        """
        config = self.config
        if config.algorithm == "easgd":
            for c, u in zip(center, update, strict=True):
                np.subtract(u, c, out=u)
                np.multiply(u, config.alpha, out=u)
            return
        if config.algorithm == "adag":
            for u in update:
                np.multiply(u, scale / config.window, out=u, casting="same_kind")
            return
        if config.algorithm == "gem" and not config.gem_on_worker:
            self._gem(update, scale)
            return
        self.step += 1
        if config.optimizer == "add" or config.gem_on_worker:  # the worker rescaled already
            if scale != 1.0:
                for u in update:
                    np.multiply(u, scale, out=u, casting="same_kind")
        elif config.optimizer == "sgd":
            factor = -config.learning_rate * scale
            for u in update:
                np.multiply(u, factor, out=u, casting="same_kind")
            if config.momentum > 0:
                for u, v in zip(update, self.state["velocity"], strict=True):
                    np.multiply(v, config.momentum, out=v, casting="same_kind")
                    np.add(v, u, out=v)
                    np.copyto(u, v)
        else:
            self._adam(update, scale)

    def _gem(self, update: list[Array], scale: float) -> None:
        config = self.config
        tensors = zip(update, self.state["proxy"], self.state["central_moment"], strict=True)
        for u, p, c in tensors:
            if scale != 1.0:
                np.multiply(u, scale, out=u, casting="same_kind")
            np.multiply(p, config.proxy_momentum, out=p, casting="same_kind")
            np.add(p, u, out=p)
            magnitude = np.abs(u)
            room = np.abs(p)
            np.multiply(room, config.kappa, out=room, casting="same_kind")
            np.subtract(room, np.abs(c), out=room)
            pi = np.divide(room, magnitude, out=np.zeros_like(room), where=magnitude > 0)
            np.clip(pi, 0.0, GEM_MAX_SCALE, out=pi)
            np.multiply(u, pi, out=u, casting="same_kind")
            np.copyto(c, u)

    def _adam(self, update: list[Array], scale: float) -> None:
        config = self.config
        bias1 = 1 - config.beta1**self.step
        bias2 = 1 - config.beta2**self.step
        moments = zip(self.state["first_moment"], self.state["second_moment"], strict=True)
        for g, (m, v) in zip(update, moments, strict=True):
            if scale != 1.0:
                np.multiply(g, scale, out=g, casting="same_kind")
            np.multiply(m, config.beta1, out=m, casting="same_kind")
            np.add(m, (1 - config.beta1) * g, out=m, casting="same_kind")
            np.multiply(v, config.beta2, out=v, casting="same_kind")
            np.add(v, (1 - config.beta2) * np.square(g), out=v, casting="same_kind")
            denominator = np.sqrt(v / bias2) + config.epsilon
            np.multiply(m / bias1 / denominator, -config.learning_rate, out=g, casting="same_kind")
