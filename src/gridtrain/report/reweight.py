"""The plots of kinematic reweighting (``dataset.reweight``): per variable, every class's
training-split distribution before and after reweighting, from ``metrics.json``'s ``reweight``.

Layer: report, drawing. Training records the histograms it weighted with (the manifest's, as the
run treated negative weights: ``gridtrain.data.reweight.applied_histograms``); each plot is
``reweight_<variable>.png``, the 2-D histograms of two variables drawn as one projection per
variable. Each class is normalised to 1 (the share of its weight per bin): dashed before
reweighting, solid after, where the solid lines of all classes should coincide. It keeps what it
draws (``drawing.keep``): ``edges``, ``unweighted`` and ``weighted`` (classes x bins), ``classes``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from gridtrain.report.drawing import MissingData, figure, keep
from gridtrain.report.run import Run

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def plot_name(variable: str) -> str:
    """The file name of a variable's plot (characters unsafe in a file name become ``_``)."""
    return f"reweight_{re.sub(r'[^A-Za-z0-9_.-]', '_', variable)}.png"


def _record(run: Run) -> dict[str, Any]:
    record = (run.metrics or {}).get("reweight")
    if not isinstance(record, dict):
        raise MissingData("metrics.json has no reweight record (no dataset.reweight)")
    return record


def _shares(histograms: np.ndarray, axis: int) -> np.ndarray:
    """Each class's projection on ``axis`` (its other variable summed), normalised to 1."""
    other = tuple(a for a in range(1, histograms.ndim) if a != axis + 1)
    projected = np.maximum(histograms.sum(axis=other) if other else histograms, 0.0)
    totals = projected.sum(axis=1, keepdims=True)
    return np.divide(projected, totals, out=np.zeros_like(projected), where=totals > 0)


def _is_log(edges: np.ndarray) -> bool:
    """Edges equal in log (``{log: true}`` bins): drawn on a log axis."""
    if len(edges) < 3 or edges[0] <= 0:
        return False
    ratios = edges[1:] / edges[:-1]
    return bool(np.allclose(ratios, ratios[0], rtol=1e-6) and ratios[0] > 1.0 + 1e-9)


def distribution(run: Run, variable: str) -> Figure:
    """Per class, the share of its training weight per bin of ``variable``, before (dashed) and
    after (solid) reweighting."""
    record = _record(run)
    variables = list(record["variables"])
    if variable not in variables:
        raise MissingData(f"metrics.json's reweight record has no variable {variable!r}")
    axis = variables.index(variable)
    edges = np.asarray(record["edges"][axis], dtype=np.float64)
    classes = [str(c) for c in record["classes"]]
    before = _shares(np.asarray(record["unweighted"], dtype=np.float64), axis)
    after = _shares(np.asarray(record["weighted"], dtype=np.float64), axis)
    fig = figure(size=(7.5, 5.0))
    keep(fig, edges=edges, unweighted=before, weighted=after, classes=np.asarray(classes))
    ax = fig.subplots()
    for k, name in enumerate(classes):
        colour = f"C{k % 10}"
        ax.stairs(before[k], edges, baseline=None, color=colour, linestyle="--", alpha=0.7,
                  label=f"{name}, not reweighted")  # fmt: skip
        ax.stairs(after[k], edges, baseline=None, color=colour, linewidth=1.8, alpha=0.85,
                  label=f"{name}, reweighted")  # fmt: skip
    if _is_log(edges):
        ax.set_xscale("log")
    ax.set_ylim(bottom=0.0)
    ax.set_xlabel(variable)
    ax.set_ylabel("share of the class's training weight per bin")
    ax.legend(fontsize="small", ncol=2 if len(classes) > 2 else 1)
    capped = record.get("capped_events") or {}
    note = ", ".join(f"{n} {capped[n]}" for n in classes if capped.get(n))
    target = "flat" if record.get("to") == "flat" else f"class {record.get('to')}"
    title = f"{variable}: every class reweighted to {target}"
    if len(variables) > 1:
        title += f" in {' x '.join(variables)} (projection)"
    title += f"\nweights capped at {record.get('max_weight')}"
    title += f"; capped events: {note}" if note else "; no event capped"
    ax.set_title(title, fontsize="medium")
    return fig


def reweight_plots(run: Run) -> dict[str, Callable[[Run], Figure]]:
    """A plot per reweighting variable, by file name; none for a run without reweighting."""
    record = (run.metrics or {}).get("reweight")
    if not isinstance(record, dict):
        return {}
    return {plot_name(str(v)): partial(distribution, variable=str(v)) for v in record["variables"]}
