"""The plots of multiclass and regression runs, from ``validation.npz`` and ``metrics.json``.

Layer: report, drawing. Multiclass: one-vs-rest ROC curves per class as background rejection
against signal efficiency (the HEP view), the confusion matrix, and each tagger's rejection of
each other class at fixed signal efficiencies. Regression: response and resolution against the
true value, and the residuals' histogram. All weighted, with negative weights counted as zero
(``gridtrain.evaluation.metric_weights``), the same numbers ``metrics.json`` holds. Each keeps
what it draws (``drawing.keep``), arrays of target or class ``i`` suffixed ``_i``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from gridtrain.evaluation import (
    FIXED_EFFICIENCIES,
    auc_from_curve,
    metric_weights,
    multiclass_metrics,
    one_vs_rest_roc,
    regression_metrics,
)
from gridtrain.report.drawing import MissingData, figure, keep, thin
from gridtrain.report.run import Run, Validation

if TYPE_CHECKING:
    from matplotlib.figure import Figure

RESIDUAL_BINS = 60


def _number(value: Any) -> float:
    """A metric from metrics.json as a float; NaN when it is absent or not a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return float("nan")
    return float(value)


def _validation(run: Run, kind: str) -> Validation:
    v = run.validation
    if v is None:
        raise MissingData("no validation.npz (the run ended before the final evaluation?)")
    if v.kind != kind:
        raise MissingData(f"validation.npz holds {v.kind} arrays, not {kind} ones")
    return v


def multiclass_record(run: Run) -> dict[str, Any]:
    """The multiclass metrics: metrics.json's when it has them, else from validation.npz."""
    m = run.metrics or {}
    if isinstance(m.get("confusion"), list) and isinstance(m.get("rejection"), dict):
        return m
    v = _validation(run, "multiclass")
    assert v.labels is not None
    assert v.scores is not None
    return multiclass_metrics(v.labels, v.scores, v.weights, v.names)


def regression_record(run: Run) -> dict[str, Any]:
    """The regression metrics per target: metrics.json's when it has them, else computed."""
    targets = (run.metrics or {}).get("targets")
    if isinstance(targets, dict) and all(
        isinstance(t, dict) and isinstance(t.get("binned"), dict) for t in targets.values()
    ):
        return targets
    v = _validation(run, "regression")
    assert v.truth is not None
    assert v.prediction is not None
    found: dict[str, Any] = regression_metrics(v.truth, v.prediction, v.weights, v.names)["targets"]
    return found


def multiclass_roc(run: Run) -> Figure:
    """Per class, its tagger against all other classes: ROC (linear) and rejection (log)."""
    v = _validation(run, "multiclass")
    assert v.labels is not None
    assert v.scores is not None
    w = metric_weights(v.weights)
    fig = figure(size=(11.0, 5.0))
    linear, rejection = fig.subplots(1, 2)
    aucs, curves = [], []
    for k, name in enumerate(v.names):
        if not (np.any(w[v.labels == k] > 0) and np.any(w[v.labels != k] > 0)):
            continue
        fpr, tpr, thresholds = one_vs_rest_roc(v.labels, v.scores, w, k)
        auc = auc_from_curve(fpr, tpr)
        aucs.append(auc)
        curves.append(k)
        points = thin(fpr, tpr)
        fpr, tpr = fpr[points], tpr[points]
        keep(fig, **{f"fpr_{k}": fpr, f"tpr_{k}": tpr, f"threshold_{k}": thresholds[points]})
        label = f"{name} vs rest, AUC = {auc:.4f}"
        linear.plot(tpr, fpr, color=f"C{k % 10}", label=label)
        selected = fpr > 0
        rejection.plot(tpr[selected], 1.0 / fpr[selected], color=f"C{k % 10}", label=label)
    if not aucs:
        raise MissingData("validation.npz has no class with both its events and others")
    keep(fig, classes=np.array(v.names, dtype=np.str_), curves=curves, auc=aucs)
    linear.plot([0, 1], [0, 1], ":", color="0.5", label="random")
    linear.set_xlabel("signal efficiency (the class)")
    linear.set_ylabel("background efficiency (the other classes)")
    linear.set_xlim(0, 1)
    linear.set_ylim(0, 1)
    linear.legend(loc="upper left", fontsize=8)
    linear.grid(alpha=0.3)
    grid = np.linspace(0.01, 1.0, 100)
    rejection.plot(grid, 1.0 / grid, ":", color="0.5", label="random")
    rejection.set_yscale("log")
    rejection.set_xlabel("signal efficiency (the class)")
    rejection.set_ylabel("background rejection 1 / background efficiency")
    rejection.set_xlim(0, 1)
    rejection.legend(loc="upper right", fontsize=8)
    rejection.grid(alpha=0.3, which="both")
    fig.suptitle(
        f"one-vs-rest ROC curves on the validation shards, macro AUC = {np.mean(aucs):.4f}"
    )
    return fig


def confusion(run: Run) -> Figure:
    """The weighted confusion matrix, each true class's row normalised to 1."""
    record = multiclass_record(run)
    names = [
        str(c) for c in record.get("classes") or (run.validation.names if run.validation else ())
    ]
    matrix = np.asarray(record["confusion"], dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape != (len(names), len(names)):
        raise MissingData(f"the confusion matrix has shape {matrix.shape}, {len(names)} classes")
    k = len(names)
    fig = figure(size=(2.0 + 0.9 * k, 1.6 + 0.8 * k))
    keep(fig, classes=np.array(names, dtype=np.str_), matrix=matrix)
    ax = fig.subplots()
    image = ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                f"{matrix[i, j]:.2f}",
                ha="center",
                va="center",
                fontsize=9,
                color="white" if matrix[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(k), names, rotation=45 if k > 5 else 0)
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted class (largest score)")
    ax.set_ylabel("true class")
    fig.colorbar(image, ax=ax, label="share of the true class's weight")
    accuracy = record.get("accuracy")
    extra = f", accuracy {accuracy:.3f}" if isinstance(accuracy, float) else ""
    fig.suptitle(f"confusion matrix (weighted){extra}")
    return fig


def class_rejection(run: Run) -> Figure:
    """Each class's tagger against each other class: rejection at fixed signal efficiencies."""
    record = multiclass_record(run)
    names = [str(c) for c in record["classes"]]
    table: dict[str, dict[str, dict[str, float | None]]] = record["rejection"]
    efficiencies = sorted(
        {e for rows in table.values() for e_r in rows.values() for e in e_r},
        key=float,
    ) or [f"{e:g}" for e in FIXED_EFFICIENCIES]
    k = len(names)
    fig = figure(size=(1.0 + len(efficiencies) * (1.5 + 0.9 * k), 1.8 + 0.8 * k))
    # rejection[e, i, j]: class j's rejection by class i's tagger; NaN: none, or no background left
    tables = np.full((len(efficiencies), k, k), np.nan)
    for index, e in enumerate(efficiencies):
        for i, tagger in enumerate(names):
            for j, background in enumerate(names):
                r = table.get(tagger, {}).get(background, {}).get(e)
                if isinstance(r, int | float):
                    tables[index, i, j] = r
    keep(
        fig,
        classes=np.array(names, dtype=np.str_),
        efficiency=np.array([float(e) for e in efficiencies]),
        rejection=tables,
    )
    axes = np.atleast_1d(fig.subplots(1, len(efficiencies)))
    for ax, e, values in zip(axes, efficiencies, tables, strict=True):
        shown = np.log10(np.where(np.isfinite(values), values, 1.0))
        top = max(1.0, float(np.nanmax(shown)))
        ax.imshow(shown, cmap="Greens", vmin=0.0, vmax=top)
        for i in range(k):
            for j in range(k):
                if i == j:
                    text = ""
                elif np.isfinite(values[i, j]):
                    text = f"{values[i, j]:.3g}"
                else:
                    text = "none\npass"
                dark = shown[i, j] > 0.6 * top
                ax.text(
                    j,
                    i,
                    text,
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if dark else "black",
                )
        ax.set_xticks(range(k), names, rotation=45 if k > 5 else 0)
        ax.set_yticks(range(k), names)
        ax.set_xlabel("background class")
        ax.set_ylabel("tagger (signal class)")
        ax.set_title(f"signal efficiency {float(e):.0%}")
    fig.suptitle("background rejection 1 / background efficiency, per pair of classes")
    return fig


def response(run: Run) -> Figure:
    """Per target: response (median) and resolution (IQR / 1.349) in bins of the true value."""
    targets = regression_record(run)
    fig = figure(size=(11.0, 3.6 * len(targets)))
    keep(
        fig,
        targets=np.array(list(targets), dtype=np.str_),
        response_kind=np.array([str(t.get("response_kind")) for t in targets.values()]),
        response_reason=np.array([str(t.get("response_reason", "")) for t in targets.values()]),
        response=[float(t["response"]) for t in targets.values()],
        resolution=[float(t["resolution"]) for t in targets.values()],
    )
    axes = np.asarray(fig.subplots(len(targets), 2, squeeze=False))
    for index, ((centre_ax, spread_ax), (name, t)) in enumerate(
        zip(axes, targets.items(), strict=True)
    ):
        binned = t["binned"]
        rows = [
            (x, c, r)
            for x, c, r in zip(
                binned["truth"], binned["response"], binned["resolution"], strict=True
            )
            if x is not None
        ]
        x = np.array([row[0] for row in rows], dtype=np.float64)
        centre = np.array([row[1] for row in rows], dtype=np.float64)
        spread = np.array([row[2] for row in rows], dtype=np.float64)
        edges = np.asarray(binned["edges"], dtype=np.float64)
        keep(
            fig,
            **{
                f"truth_{index}": x,
                f"response_{index}": centre,
                f"resolution_{index}": spread,
                f"edges_{index}": edges,
            },
        )
        ratio = t.get("response_kind") == "ratio"
        ideal = 1.0 if ratio else 0.0
        what = "prediction / truth" if ratio else "prediction - truth"
        centre_ax.plot(x, centre, "o-", color="C0", label="median")
        centre_ax.axhline(ideal, color="0.5", linestyle=":")
        spread_ax.plot(x, spread, "s-", color="C1", label="IQR / 1.349")
        for ax in (centre_ax, spread_ax):
            for edge in edges:
                ax.axvline(edge, color="0.85", linewidth=0.6)
            ax.set_xlabel(f"true {name} (bins of equal weight)")
            ax.grid(alpha=0.3)
        centre_ax.set_ylabel(f"response: {what}")
        spread_ax.set_ylabel(f"resolution of {what}")
        why = t.get("response_reason")
        centre_ax.set_title(
            f"{name}: response {t['response']:.4g}" + (f"\n({what}: {why})" if why else ""),
            fontsize=10 if not why else 8,
        )
        spread_ax.set_title(f"{name}: resolution {t['resolution']:.4g}", fontsize=10)
    fig.suptitle("response and resolution against the true value (weighted)")
    return fig


def residuals(run: Run) -> Figure:
    """Per target: the weighted histogram of prediction - truth, with RMSE and MAE."""
    v = _validation(run, "regression")
    assert v.truth is not None
    assert v.prediction is not None
    w = metric_weights(v.weights)
    targets = regression_record(run)
    fig = figure(size=(6.0 * min(len(v.names), 3), 4.5 * ((len(v.names) + 2) // 3)))
    axes = np.asarray(
        fig.subplots((len(v.names) + 2) // 3, min(len(v.names), 3), squeeze=False)
    ).reshape(-1)
    for index, (ax, name) in enumerate(zip(axes, v.names, strict=False)):
        residual = v.prediction[:, index] - v.truth[:, index]
        low, high = np.quantile(residual[w > 0], [0.005, 0.995]) if np.any(w > 0) else (0, 1)
        if not high > low:
            low, high = low - 0.5, high + 0.5
        counts, edges, _ = ax.hist(
            residual, bins=RESIDUAL_BINS, range=(low, high), weights=w, color="C0"
        )
        ax.axvline(0.0, color="0.3", linestyle=":")
        t = targets.get(name, {})
        rmse, mae = (_number(t.get(key)) for key in ("rmse", "mae"))
        keep(
            fig,
            **{
                f"counts_{index}": counts,
                f"edges_{index}": edges,
                f"rmse_{index}": rmse,
                f"mae_{index}": mae,
            },
        )
        ax.set_title(f"{name}: RMSE {rmse:.4g}, MAE {mae:.4g}", fontsize=10)
        ax.set_xlabel(f"prediction - true {name} (central 99 %)")
        ax.set_ylabel("weighted events")
        ax.grid(alpha=0.3)
    for ax in axes[len(v.names) :]:
        ax.set_visible(False)
    keep(fig, targets=np.array(v.names, dtype=np.str_))
    fig.suptitle("residuals on the validation shards")
    return fig
