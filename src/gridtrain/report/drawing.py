"""What every report plot shares: the figure factory, the missing-data signal, curve thinning,
and the record of the numbers a figure draws.

Layer: report, drawing helpers. Figures are made with the object-oriented API and rendered by
Agg, never through ``pyplot``: no display is needed and no global backend is switched. A plot
hands the arrays it draws to ``keep``; ``drawn`` gives them back to whoever saves the figure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 110
MAX_ROC_POINTS = 4000
_DRAWN = "_gridtrain_drawn"  # the figure's attribute holding what ``keep`` recorded


class MissingData(Exception):
    """A plot cannot be drawn because the run lacks what it shows; the message says what."""


def figure(size: tuple[float, float]) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=size, dpi=DPI, layout="constrained")


def thin(fpr: np.ndarray, tpr: np.ndarray, points: int = MAX_ROC_POINTS) -> np.ndarray:
    """Indices of at most about ``points`` curve points, dense in tpr and in log(fpr)."""
    n = fpr.size
    if n <= points:
        return np.arange(n)
    positive = fpr[fpr > 0]
    low = float(positive.min()) if positive.size else 1.0
    picks = [
        np.linspace(0, n - 1, points // 2).astype(np.int64),
        np.searchsorted(fpr, np.geomspace(low, 1.0, points // 4)),
        np.searchsorted(tpr, np.linspace(0.0, 1.0, points // 4)),
    ]
    return np.unique(np.clip(np.concatenate(picks), 0, n - 1))


def keep(fig: Figure, **arrays: npt.ArrayLike) -> None:
    """Record arrays ``fig`` draws, by name (numbers, or strings such as class names)."""
    kept: dict[str, npt.NDArray[Any]] = fig.__dict__.setdefault(_DRAWN, {})
    for name, values in arrays.items():
        if name in kept:
            raise ValueError(f"the plot keeps {name!r} twice")
        kept[name] = np.asarray(values)


def drawn(fig: Figure) -> dict[str, npt.NDArray[Any]]:
    """What ``keep`` recorded for ``fig``, by name; empty when nothing was kept."""
    return dict(fig.__dict__.get(_DRAWN, {}))
