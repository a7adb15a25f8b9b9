"""The plots of kinematic reweighting: per variable, each class before and after, normalised.

The run's ``metrics.json`` gets a ``reweight`` record as training writes it (the manifest's record
made here from generated values with ``gridtrain.data.reweight``); the shares each plot was drawn
from (``<plot>.npz``) are checked against numpy histograms of the same values.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from report_helpers import write_task_run
from test_report_plots import assert_png, drawn_numbers

from gridtrain.config import Reweight
from gridtrain.data.reweight import ReweightHistograms, applied_histograms, reweight_record
from gridtrain.report import MissingData, load_run, plots_for, write_report
from gridtrain.report.reweight import distribution

CLASSES = ("top", "W", "QCD")
PT = (20.0, 40.0, 80.0, 160.0, 320.0)  # equal in log: drawn on a log axis
ETA = (-2.5, -1.0, 0.0, 1.0, 2.5)


def values(seed: int) -> dict[str, np.ndarray]:
    """Per class, jet pt and eta (N x 2) of different shapes, all inside the bins."""
    rng = np.random.default_rng(seed)
    found = {}
    for k, name in enumerate(CLASSES):
        pt = np.exp(rng.uniform(np.log(20.0), np.log(320.0), 4000) ** (1 + 0.02 * k))
        eta = rng.normal(0.0, 0.8 + 0.3 * k, 4000)
        found[name] = np.stack([np.clip(pt, 20.0, 319.0), np.clip(eta, -2.49, 2.49)], axis=1)
    return found


@pytest.fixture
def reweighted_run(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    run_dir = write_task_run(tmp_path / "run", "multiclass")
    generated = values(5)
    histograms = ReweightHistograms(Reweight(("jet_pt", "jet_eta"), (PT, ETA), "flat", 50.0),
                                    CLASSES)  # fmt: skip
    for k, name in enumerate(CLASSES):
        histograms.add(generated[name], np.full(4000, k), np.ones(4000))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["reweight"] = applied_histograms(reweight_record(histograms), "abs")
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir, generated


def test_a_reweighted_run_gets_a_plot_per_variable_drawn_from_its_histograms(reweighted_run):
    run_dir, generated = reweighted_run
    written = write_report(run_dir)
    names = [p.name for p in written]
    assert "reweight_jet_pt.png" in names
    assert "reweight_jet_eta.png" in names
    for axis, (variable, edges) in enumerate((("jet_pt", PT), ("jet_eta", ETA))):
        png = run_dir / "plots" / f"reweight_{variable}.png"
        assert_png(png)
        drawn = drawn_numbers(png)
        assert drawn["classes"].tolist() == list(CLASSES)
        np.testing.assert_allclose(drawn["edges"], edges)
        for k, name in enumerate(CLASSES):
            counts, _ = np.histogram(generated[name][:, axis], bins=edges)
            np.testing.assert_allclose(drawn["unweighted"][k], counts / counts.sum(), rtol=1e-12)
        # flat in pt x eta: every class the same share of its weight in every bin
        np.testing.assert_allclose(drawn["weighted"], np.full((3, 4), 0.25), rtol=1e-9)
        assert np.abs(drawn["unweighted"] - 0.25).max() > 0.05  # there was something to do


def test_a_run_without_reweighting_has_no_such_plot(tmp_path):
    run = load_run(write_task_run(tmp_path / "run", "multiclass"))
    assert not [name for name in plots_for(run) if name.startswith("reweight_")]
    with pytest.raises(MissingData, match="no reweight record"):
        distribution(run, "jet_pt")
