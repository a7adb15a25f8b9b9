"""Reports of multiclass and regression runs, and the negative-weight line of the summary.

The numbers each plot was drawn from (``<plot>.npz``) are checked against validation.npz with
plain numpy written here, not with ``gridtrain.evaluation``, which made them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from report_helpers import write_run, write_task_run
from test_report_plots import ALL_PLOTS, assert_png, drawn_numbers

from gridtrain.report import (
    PLOTS,
    MissingData,
    load_run,
    plots_for,
    summary_lines,
    tasks,
    write_report,
)

MULTICLASS_PLOTS = [
    "training_vs_time.png",
    "training_vs_updates.png",
    "roc.png",
    "confusion.png",
    "rejection.png",
    "staleness.png",
    "throughput.png",
]
REGRESSION_PLOTS = [
    "training_vs_time.png",
    "training_vs_updates.png",
    "response.png",
    "residuals.png",
    "staleness.png",
    "throughput.png",
]


def validation_arrays(run_dir: Path) -> dict[str, np.ndarray]:
    """validation.npz, with the weights as metrics count them (negative ones as zero)."""
    with np.load(run_dir / "validation.npz", allow_pickle=False) as saved:
        arrays = {name: saved[name] for name in saved.files}
    arrays["w"] = np.clip(arrays["weights"], 0.0, None)
    return arrays


def weight_at_or_above(
    scores: np.ndarray, weights: np.ndarray, thresholds: np.ndarray
) -> np.ndarray:
    """For each threshold t, the total weight of the events with score >= t."""
    order = np.argsort(scores)
    tail = np.r_[np.cumsum(weights[order][::-1])[::-1], 0.0]  # tail[i]: the weight from i up
    return tail[np.searchsorted(scores[order], thresholds, side="left")]


def check_multiclass_plots(run_dir: Path) -> None:
    v = validation_arrays(run_dir)
    labels, scores, w = v["labels"], v["scores"], v["w"]
    classes = v["names"].tolist()
    k = len(classes)

    got = drawn_numbers(run_dir / "plots" / "roc.png")
    assert got["classes"].tolist() == classes
    assert got["curves"].tolist() == list(range(k))
    for c in range(k):
        signal = labels == c
        ws, wb = w * signal, w * ~signal
        s, b = scores[signal, c], scores[~signal, c]
        thresholds = got[f"threshold_{c}"]
        tpr = weight_at_or_above(scores[:, c], ws, thresholds) / ws.sum()
        fpr = weight_at_or_above(scores[:, c], wb, thresholds) / wb.sum()
        np.testing.assert_allclose(got[f"tpr_{c}"], tpr, atol=1e-12)
        np.testing.assert_allclose(got[f"fpr_{c}"], fpr, atol=1e-12)
        assert got[f"tpr_{c}"][[0, -1]].tolist() == [0.0, 1.0]
        # the AUC: the weighted share of (signal, background) pairs the tagger orders right
        pairs = np.outer(w[signal], w[~signal])
        mann_whitney = np.sum(pairs * (s[:, None] > b[None, :])) / np.sum(pairs)
        assert got["auc"][c] == pytest.approx(mann_whitney, abs=1e-9)

    got = drawn_numbers(run_dir / "plots" / "confusion.png")
    predicted = np.argmax(scores, axis=1)
    matrix = np.array(
        [[w[(labels == i) & (predicted == j)].sum() for j in range(k)] for i in range(k)]
    )
    np.testing.assert_allclose(got["matrix"], matrix / matrix.sum(axis=1, keepdims=True))

    got = drawn_numbers(run_dir / "plots" / "rejection.png")
    assert got["efficiency"].tolist() == [0.5, 0.9]
    for e_index, e in enumerate(got["efficiency"]):
        for i in range(k):
            for j in range(k):
                if i == j:
                    assert np.isnan(got["rejection"][e_index, i, j])
                    continue
                # the cut on class i's score that first keeps a share e of class i's weight
                s, ws = scores[labels == i, i], w[labels == i]
                order = np.argsort(-s)
                kept = np.cumsum(ws[order]) / ws.sum()
                cut = s[order][np.argmax(kept >= e)]
                b, wb = scores[labels == j, i], w[labels == j]
                background = wb[b >= cut].sum() / wb.sum()
                assert got["rejection"][e_index, i, j] == pytest.approx(1 / background, rel=1e-9)


def check_regression_plots(run_dir: Path) -> None:
    v = validation_arrays(run_dir)
    truth, prediction, w = v["truth"][:, 0], v["prediction"][:, 0], v["w"]
    ratio, residual = prediction / truth, prediction - truth

    def quantile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
        return float(np.quantile(values, q, weights=weights, method="inverted_cdf"))

    got = drawn_numbers(run_dir / "plots" / "response.png")
    assert got["targets"].tolist() == ["pt"]
    assert got["response_kind"].tolist() == ["ratio"]
    # (the weighted quantiles differ from numpy's by less than one event's step, ~1e-3 here)
    assert got["response"][0] == pytest.approx(quantile(ratio, w, 0.5), abs=5e-3)
    iqr = quantile(ratio, w, 0.75) - quantile(ratio, w, 0.25)
    assert got["resolution"][0] == pytest.approx(iqr / 1.349, abs=5e-3)
    edges = got["edges_0"]
    assert edges.size == 11
    assert edges[[0, -1]].tolist() == [truth.min(), truth.max()]
    which = np.clip(np.searchsorted(edges, truth, side="right") - 1, 0, edges.size - 2)
    for b in range(edges.size - 1):
        inside = which == b
        assert abs(w[inside].sum() - w.sum() / 10) <= w.max()  # bins of equal weight
        centre = np.sum(w[inside] * truth[inside]) / w[inside].sum()
        assert got["truth_0"][b] == pytest.approx(centre, rel=1e-9)
        assert got["response_0"][b] == pytest.approx(
            quantile(ratio[inside], w[inside], 0.5), abs=1e-2
        )
        iqr = quantile(ratio[inside], w[inside], 0.75) - quantile(ratio[inside], w[inside], 0.25)
        assert got["resolution_0"][b] == pytest.approx(iqr / 1.349, abs=1e-2)

    got = drawn_numbers(run_dir / "plots" / "residuals.png")
    assert got["targets"].tolist() == ["pt"]
    low, high = np.quantile(residual[w > 0], [0.005, 0.995])  # the central 99 %
    np.testing.assert_allclose(got["edges_0"], np.linspace(low, high, 61))
    counts, _ = np.histogram(residual, bins=got["edges_0"], weights=w)
    np.testing.assert_allclose(got["counts_0"], counts)
    assert got["rmse_0"] == pytest.approx(np.sqrt(np.sum(w * residual**2) / w.sum()), rel=1e-9)
    assert got["mae_0"] == pytest.approx(np.sum(w * np.abs(residual)) / w.sum(), rel=1e-9)


def test_a_multiclass_run_has_its_plots_and_summary(tmp_path: Path) -> None:
    run_dir = write_task_run(tmp_path / "run", "multiclass")
    written = write_report(run_dir)
    assert [p.name for p in written] == MULTICLASS_PLOTS
    for path in written:
        assert_png(path)
    check_multiclass_plots(run_dir)
    lines = summary_lines(load_run(run_dir))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert lines[0].startswith(f"validation macro AUC {metrics['macro_auc']:.4f}, loss 0.2370")
    assert lines[1].startswith("one-vs-rest AUC: top 0.")
    assert "QCD 0." in lines[1]
    assert "task: multiclass (top, W, QCD), classes balanced" in lines
    negative = next(line for line in lines if line.startswith("negative weights"))
    events = metrics["negative_weights"]["negative_events"]
    assert f"{events} of 3000 validation events" in negative
    assert "training: abs (train.negative_weights); metrics count them as zero" in negative


def test_a_regression_run_has_its_plots_and_summary(tmp_path: Path) -> None:
    run_dir = write_task_run(tmp_path / "run", "regression")
    written = write_report(run_dir)
    assert [p.name for p in written] == REGRESSION_PLOTS
    for path in written:
        assert_png(path)
    check_regression_plots(run_dir)
    lines = summary_lines(load_run(run_dir))
    target = json.loads((run_dir / "metrics.json").read_text())["targets"]["pt"]
    assert lines[0] == "validation loss 0.2370 (deepsets)"
    assert lines[1].startswith(f"pt: RMSE {target['rmse']:.4g}, MAE {target['mae']:.4g}")
    assert "response 1.0" in lines[1]  # the synthetic 3 % bias
    assert lines[1].endswith("of prediction / truth")
    assert "task: regression of pt (huber)" in lines


def test_without_task_metrics_they_come_from_validation_npz(tmp_path: Path) -> None:
    run_dir = write_task_run(tmp_path / "run", "multiclass", task_metrics=False)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    del metrics["task"]  # nor a task: the arrays say multiclass
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    run = load_run(run_dir)
    assert run.kind == "multiclass"
    lines = summary_lines(run)
    assert lines[0].startswith("validation macro AUC 0.")
    assert "task: multiclass" in lines
    assert lines[1].startswith("one-vs-rest AUC: top 0.")


def test_an_unreadable_validation_file_leaves_the_other_plots(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = write_task_run(tmp_path / "run", "regression", task_metrics=False)
    np.savez(run_dir / "validation.npz", weights=np.ones(3), truth=np.ones((2, 1)))
    with caplog.at_level(logging.WARNING, logger="gridtrain.report"):
        run = load_run(run_dir)
    assert "validation.npz: unreadable" in caplog.text
    assert "truth has shape (2, 1); expected (3, K)" in caplog.text
    assert run.kind == "regression"  # from the task record
    assert list(plots_for(run)) == REGRESSION_PLOTS
    for draw in (tasks.response, tasks.residuals):
        with pytest.raises(MissingData, match=r"no validation\.npz"):
            draw(run)
    assert summary_lines(run)[0] == "validation loss 0.2370 (deepsets)"


def test_a_binary_run_with_negative_weights_renders_as_before_and_says_so(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run")
    weights = np.array([1.0, -0.5, 2.0, 1.0])
    np.savez(
        run_dir / "validation.npz",
        weights=weights,
        labels=np.array([1, 0, 1, 0]),
        scores=np.array([[0.9], [0.2], [0.7], [0.4]]),
        names=np.array(["background", "signal"]),
    )
    run = load_run(run_dir)
    assert plots_for(run) == PLOTS
    assert list(PLOTS) == ALL_PLOTS
    lines = summary_lines(run)
    assert lines[0].startswith("validation AUC 0.")
    assert lines[2] == (
        "negative weights: 1 of 4 validation events (11.1 % of |w|); training: not recorded "
        "(train.negative_weights); metrics count them as zero"
    )
