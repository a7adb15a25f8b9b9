"""Reports of multiclass and regression runs, and the negative-weight line of the summary."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from report_helpers import write_run, write_task_run
from test_report_plots import ALL_PLOTS, assert_png

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


def test_a_multiclass_run_has_its_plots_and_summary(tmp_path: Path) -> None:
    run_dir = write_task_run(tmp_path / "run", "multiclass")
    written = write_report(run_dir)
    assert [p.name for p in written] == MULTICLASS_PLOTS
    for path in written:
        assert_png(path)
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
    assert plots_for(run) is PLOTS
    assert list(PLOTS) == ALL_PLOTS
    lines = summary_lines(run)
    assert lines[0].startswith("validation AUC 0.")
    assert lines[2] == (
        "negative weights: 1 of 4 validation events (11.1 % of |w|); training: not recorded "
        "(train.negative_weights); metrics count them as zero"
    )
