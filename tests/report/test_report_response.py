"""The response plot of a regression whose truth comes near zero: the difference, said on the plot
and in the summary, instead of a ratio with a first bin at 1e7 (issue 29)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from report_helpers import write_task_run
from test_report_plots import drawn_numbers

from gridtrain.evaluation import regression_metrics
from gridtrain.report import load_run, summary_lines, write_report


def test_a_truth_near_zero_is_drawn_as_the_difference_and_says_why(tmp_path: Path) -> None:
    run_dir = write_task_run(tmp_path / "run", "regression")
    with np.load(run_dir / "validation.npz") as saved:
        arrays = {name: saved[name] for name in saved.files}
    arrays["truth"][0, 0] = 1.49e-10  # one jet whose true value is (almost) zero
    np.savez(run_dir / "validation.npz", **arrays)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics.update(
        regression_metrics(arrays["truth"], arrays["prediction"], arrays["weights"], ["pt"])
    )
    (run_dir / "metrics.json").write_text(json.dumps(metrics))

    write_report(run_dir)
    drawn = drawn_numbers(run_dir / "plots" / "response.png")
    assert drawn["response_kind"].tolist() == ["difference"]
    assert "comes near zero" in str(drawn["response_reason"][0])
    assert np.all(np.abs(drawn["response_0"]) < 100)  # GeV differences, not 1e7 ratios
    line = next(x for x in summary_lines(load_run(run_dir)) if x.startswith("pt:"))
    assert "of prediction - truth (the truth comes near zero" in line
