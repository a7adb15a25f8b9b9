"""Update rules of asynchronous parameter-server training, as pure functions on numpy arrays.

Layer: ps, pure logic. Every function takes arrays and numbers and returns new arrays; none keeps
state, locks, or touches a socket or the disk. The server (``rules.py``) applies them in place;
the worker side uses the same functions, so both ends agree by construction.

* Downpour (Dean et al. 2012): workers push gradients, or deltas accumulated over a window of k
  steps; the PS applies them with its own optimizer (``sgd_step`` with momentum, ``adam_step``).
* EASGD (Zhang, Choromanska & LeCun 2015): worker and center attract each other with moving rate
  alpha every tau steps; ``easgd_step`` returns the elastic difference.
* ADAG (Hermans, Spanakis & Moeckel 2017): the accumulated delta of a window is normalised by the
  window length, ``adag_delta``.
* DynSGD (Jiang et al. 2017): an update ``s`` versions stale is scaled by 1/(s+1),
  ``dynsgd_scale``.
* Synchronous SGD with backup workers (Chen et al. 2016, arXiv 1604.00981): average the first N
  updates of a round, ``average_updates``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]


def staleness(center_version: int, base_version: int) -> int:
    """How many center updates happened since the version an update was computed on."""
    if base_version > center_version:
        raise ValueError(
            f"update claims base version {base_version}, newer than the center's "
            f"{center_version}; the worker must use the version returned by pull"
        )
    return center_version - base_version


def dynsgd_scale(stale: int) -> float:
    """DynSGD's factor for an update that is ``stale`` versions old: 1 / (stale + 1)."""
    if stale < 0:
        raise ValueError(f"staleness must be >= 0, got {stale}")
    return 1.0 / (stale + 1)


def sgd_step(
    gradient: Array, velocity: Array, learning_rate: float, momentum: float
) -> tuple[Array, Array]:
    """SGD with (heavy-ball) momentum: returns (delta to add to the center, new velocity)."""
    new_velocity = (momentum * velocity - learning_rate * gradient).astype(gradient.dtype)
    return new_velocity, new_velocity.copy()


def adam_step(
    gradient: Array,
    first_moment: Array,
    second_moment: Array,
    step: int,
    *,
    learning_rate: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    epsilon: float = 1e-7,
) -> tuple[Array, Array, Array]:
    """Adam (Kingma & Ba 2015) at step ``step`` (1 for the first update).

    Returns (delta to add to the center, new first moment, new second moment).
    """
    if step < 1:
        raise ValueError(f"Adam's step count starts at 1, got {step}")
    dtype = gradient.dtype
    m = beta1 * first_moment + (1 - beta1) * gradient
    v = beta2 * second_moment + (1 - beta2) * np.square(gradient)
    m_hat = m / (1 - beta1**step)
    v_hat = v / (1 - beta2**step)
    delta = -learning_rate * m_hat / (np.sqrt(v_hat) + epsilon)
    return delta.astype(dtype, copy=False), m.astype(dtype, copy=False), v.astype(dtype, copy=False)


def easgd_step(center: Array, worker: Array, alpha: float) -> Array:
    """EASGD's elastic difference alpha * (worker - center).

    The center moves by +delta, the worker by -delta: both are pulled toward each other.
    """
    return (alpha * (worker - center)).astype(center.dtype, copy=False)


def adag_delta(accumulated: Array, window: int) -> Array:
    """ADAG: the delta accumulated over ``window`` local steps, normalised by the window."""
    if window < 1:
        raise ValueError(f"ADAG window must be >= 1, got {window}")
    return (accumulated / window).astype(accumulated.dtype, copy=False)


def average_updates(updates: Sequence[Sequence[Array]]) -> list[Array]:
    """Element-wise mean of several workers' updates (each a list of tensors)."""
    if not updates:
        raise ValueError("cannot average zero updates")
    count = len(updates)
    return [
        (sum(tensors[1:], start=tensors[0].copy()) / count).astype(tensors[0].dtype, copy=False)
        for tensors in zip(*updates, strict=True)
    ]


def backup_round(arrivals: Sequence[int], needed: int) -> tuple[list[int], list[int]]:
    """Synchronous round with backup workers: the first ``needed`` arrivals are applied.

    ``arrivals`` are worker ids in arrival order; returns (applied, dropped).
    """
    if needed < 1:
        raise ValueError(f"a synchronous round needs at least 1 update, got {needed}")
    return list(arrivals[:needed]), list(arrivals[needed:])
