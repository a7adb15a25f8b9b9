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
* GEM, Gradient Energy Matching (Hermans & Louppe 2018, arXiv 1805.08469; NNLO's default
  asynchronous rule): each update is rescaled, element by element, so that the center's
  "energy" (its movement) matches kappa times that of a proxy, a single sequential momentum SGD
  fed the same updates: ``gem_proxy``, ``gem_scale``, ``gem_step`` (on the server, as NNLO
  places it) and ``gem_worker_step`` (on each worker, as the paper does).
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


GEM_MAX_SCALE = 5.0
"""GEM's cap on pi: where an update is tiny, (kappa |p| - |c|) / |u| is huge and noisy."""


def gem_proxy(proxy: Array, update: Array, momentum: float) -> Array:
    """The proxy's new velocity: a sequential momentum SGD that took ``update`` as its step."""
    if not 0 <= momentum < 1:
        raise ValueError(f"GEM's proxy momentum must be in [0, 1), got {momentum}")
    return (momentum * proxy + update).astype(update.dtype, copy=False)


def gem_scale(
    proxy: Array,
    central_moment: Array,
    update: Array,
    kappa: float,
    max_scale: float = GEM_MAX_SCALE,
) -> Array:
    """GEM's factor pi = clip((kappa |p| - |c|) / |u|, 0, max_scale), element by element.

    ``proxy`` p is the proxy's velocity (including this update), ``central_moment`` c the
    center's own last movement and ``update`` u the pushed delta. With pi, |c| + pi |u| equals
    kappa |p|: the center moves as much as the proxy, never more; a component the center
    already moves beyond the proxy gets pi = 0. Where u is 0, pi is 0 (the product is 0 anyway).
    """
    if not kappa > 0:
        raise ValueError(f"GEM's kappa must be > 0, got {kappa}")
    magnitude = np.abs(update)
    room = kappa * np.abs(proxy) - np.abs(central_moment)
    pi = np.divide(room, magnitude, out=np.zeros_like(room), where=magnitude > 0)
    return np.clip(pi, 0.0, max_scale).astype(update.dtype, copy=False)


def gem_step(
    proxy: Array, central_moment: Array, update: Array, *, momentum: float, kappa: float
) -> tuple[Array, Array, Array]:
    """One GEM update on the server: returns (delta to add, new proxy, new central moment).

    The central moment after the step is the delta itself: the center's last movement, which
    the next update is matched against (NNLO's server-side placement of the paper's rule, where
    each worker measured the center's movement between its pulls).
    """
    new_proxy = gem_proxy(proxy, update, momentum)
    delta = (gem_scale(new_proxy, central_moment, update, kappa) * update).astype(update.dtype)
    return delta, new_proxy, delta.copy()


def gem_worker_step(
    proxy: Array, center_move: Array, update: Array, *, momentum: float, kappa: float
) -> tuple[Array, Array]:
    """GEM as the paper places it, on one worker: returns (delta to push, new proxy).

    ``proxy`` is this worker's proxy velocity, ``center_move`` the center's move between the
    worker's last two pulls (all workers' accepted updates, this worker's last one among them)
    and ``update`` the worker's delta since its last pull. With n workers agreeing on a
    direction, pi settles near kappa / ((1 - momentum) (1 + n)): one worker at kappa =
    2 (1 - momentum) pushes its whole delta, more workers push proportionally less.
    """
    new_proxy = gem_proxy(proxy, update, momentum)
    pi = gem_scale(new_proxy, center_move, update, kappa)
    return (pi * update).astype(update.dtype, copy=False), new_proxy


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
