"""Plots from a run directory: all five written as valid PNGs, atomically, and what is missing;
each with the numbers it was drawn from (``<plot>.npz``), checked against the run's own files."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from report_helpers import EPOCHS, SHARDS_PER_EPOCH, write_run

from gridtrain.report import PLOTS, RunDirError, load_run, summary_lines, write_report
from gridtrain.report.drawing import MAX_ROC_POINTS, drawn
from gridtrain.report.plots import _thin, _time_axis, roc

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALL_PLOTS = [
    "training_vs_time.png",
    "training_vs_updates.png",
    "roc.png",
    "staleness.png",
    "throughput.png",
]


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 10_000, f"{path}: only {len(data)} bytes"


def drawn_numbers(png: Path) -> dict[str, np.ndarray]:
    """What a plot says it was drawn from: the ``.npz`` beside its PNG (no pickles)."""
    with np.load(png.with_suffix(".npz"), allow_pickle=False) as data:
        return {name: data[name] for name in data.files}


@pytest.fixture(scope="module")
def reported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """A synthetic binary run and the report written from it, once for the tests that read it."""
    run_dir = write_run(tmp_path_factory.mktemp("reported") / "run")
    return run_dir, write_report(run_dir)


def test_all_five_plots_are_valid_pngs(reported: tuple[Path, list[Path]]) -> None:
    run_dir, written = reported
    assert [p.name for p in written] == ALL_PLOTS == list(PLOTS)
    assert all(p.parent == run_dir / "plots" for p in written)
    for path in written:
        assert_png(path)
    beside = [name.replace(".png", ".npz") for name in ALL_PLOTS]
    assert sorted(p.name for p in (run_dir / "plots").iterdir()) == sorted(ALL_PLOTS + beside)


def test_the_training_plots_hold_the_history_as_written(reported: tuple[Path, list[Path]]) -> None:
    run_dir, _ = reported
    records = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    shards = [r for r in records if r["type"] == "shard"]
    epochs = sorted((r for r in records if r["type"] == "epoch"), key=lambda r: r["time"])
    best = json.loads((run_dir / "metrics.json").read_text())["best_epoch"]
    for plot, along in (("training_vs_time", "time"), ("training_vs_updates", "version")):
        got = drawn_numbers(run_dir / "plots" / f"{plot}.png")
        assert float(got["x_scale"]) == 1.0  # 47 s: seconds on the axis; updates as they are
        np.testing.assert_array_equal(got["shard_x"], [r[along] for r in shards])
        np.testing.assert_array_equal(got["shard_loss"], [r["loss"] for r in shards])
        assert got["shard_worker"].tolist() == [r["worker"] for r in shards]
        assert got["epoch"].tolist() == [r["epoch"] for r in epochs] == [1, 2, 3]
        np.testing.assert_array_equal(got["epoch_x"], [r[along] for r in epochs])
        for key in ("train_loss", "val_loss", "val_auc", "val_accuracy"):
            np.testing.assert_array_equal(got[key], [r[key] for r in epochs], err_msg=key)
        np.testing.assert_array_equal(got["best_epoch_x"], [epochs[best - 1][along]])


def test_the_roc_plot_draws_points_of_the_run_curve(reported: tuple[Path, list[Path]]) -> None:
    run_dir, _ = reported
    got = drawn_numbers(run_dir / "plots" / "roc.png")
    with np.load(run_dir / "roc.npz") as saved:
        fpr, tpr, thresholds = saved["fpr"], saved["tpr"], saved["thresholds"]
    assert fpr.size > MAX_ROC_POINTS >= got["fpr"].size  # thinned, not the whole curve
    where = np.searchsorted(-thresholds, -got["threshold"])  # thresholds strictly descending
    np.testing.assert_array_equal(thresholds[where], got["threshold"])
    np.testing.assert_array_equal(got["fpr"], fpr[where])
    np.testing.assert_array_equal(got["tpr"], tpr[where])
    assert where[0] == 0
    assert where[-1] == fpr.size - 1  # both ends, (0, 0) and (1, 1)
    assert np.all(np.diff(where) > 0)
    assert np.max(np.diff(got["tpr"])) < 0.01  # dense along the signal efficiency
    auc = json.loads((run_dir / "metrics.json").read_text())["auc"]
    assert float(got["auc"]) == auc
    assert float(got["auc"]) == pytest.approx(np.trapezoid(tpr, fpr), abs=1e-12)
    fig = roc(load_run(run_dir))  # the curves on the figure are these points
    linear, rejection = fig.axes
    np.testing.assert_array_equal(linear.lines[0].get_xydata(), np.c_[got["tpr"], got["fpr"]])
    passed = got["fpr"] > 0
    np.testing.assert_array_equal(rejection.lines[0].get_xdata(), got["tpr"][passed])
    np.testing.assert_allclose(rejection.lines[0].get_ydata(), 1 / got["fpr"][passed])
    assert drawn(fig).keys() == got.keys()


def test_staleness_and_throughput_plots_hold_the_metrics(
    reported: tuple[Path, list[Path]],
) -> None:
    run_dir, _ = reported
    metrics = json.loads((run_dir / "metrics.json").read_text())
    staleness = drawn_numbers(run_dir / "plots" / "staleness.png")
    histogram = metrics["staleness"]["histogram"]
    assert staleness["bucket"].tolist() == ["0", "1", "2", "3-4", "5-8", ">64"]
    assert staleness["count"].tolist() == [histogram[b] for b in staleness["bucket"]]
    throughput = drawn_numbers(run_dir / "plots" / "throughput.png")
    assert throughput["worker"].tolist() == [w["name"] for w in metrics["workers"]]
    assert throughput["events_per_s"].tolist() == [w["events_per_s"] for w in metrics["workers"]]


def test_regenerating_replaces_the_plots(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run")
    (run_dir / "plots").mkdir()
    stale = run_dir / "plots" / "roc.png"
    stale.write_bytes(b"an old, broken plot")
    first = write_report(run_dir)
    assert_png(stale)
    inodes = {p: p.stat().st_ino for p in first}
    second = write_report(run_dir)
    assert second == first
    assert all(p.stat().st_ino != inodes[p] for p in second)  # renamed into place, not rewritten
    assert not list((run_dir / "plots").glob(".*"))  # no temporary files left


def test_a_truncated_last_line_and_junk_are_tolerated(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = write_run(tmp_path / "run")
    history = run_dir / "history.jsonl"
    lines = history.read_text().splitlines()
    lines.insert(3, '{"type": "shard", "time": "soon"}')  # complete but unreadable
    lines.append('{"type": "shard", "time": 99.0, "epo')  # killed mid-write
    history.write_text("\n".join(lines))
    with caplog.at_level(logging.INFO, logger="gridtrain.report"):
        run = load_run(run_dir)
    assert len(run.shards) == EPOCHS * SHARDS_PER_EPOCH
    assert [e.epoch for e in run.epochs] == list(range(1, EPOCHS + 1))
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "history.jsonl:4" in warnings[0].getMessage()
    assert any("truncated last record" in r.getMessage() for r in caplog.records)
    assert len(write_report(run_dir, run)) == 5


def test_without_roc_the_other_plots_are_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    run_dir = write_run(tmp_path / "run", roc=False)
    with caplog.at_level(logging.WARNING, logger="gridtrain.report"):
        written = write_report(run_dir)
    assert [p.name for p in written] == [n for n in ALL_PLOTS if n != "roc.png"]
    assert any("roc.png: skipped" in r.getMessage() for r in caplog.records)


def test_history_alone_gives_the_training_plots(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run", roc=False, metrics=False)
    written = write_report(run_dir)
    assert [p.name for p in written] == ["training_vs_time.png", "training_vs_updates.png"]
    lines = summary_lines(load_run(run_dir))
    assert "training unfinished" in lines[0]
    assert f"after epoch {EPOCHS}" in lines[0]


def test_summary_of_a_finished_run(tmp_path: Path) -> None:
    lines = summary_lines(load_run(write_run(tmp_path / "run")))
    assert 2 <= len(lines) <= 3
    assert lines[0].startswith("validation AUC 0.")
    assert "deepsets" in lines[0]
    assert "3 epochs (best 2)" in lines[1]
    assert "wall time 47.0 s" in lines[1]
    assert "360 updates (3 refused)" in lines[1]
    assert "2 workers, 1,623 events/s" in lines[2]


@pytest.mark.parametrize("present", [False, True])
def test_a_missing_or_empty_run_dir_is_an_error_naming_it(tmp_path: Path, present: bool) -> None:
    run_dir = tmp_path / "nowhere"
    if present:
        run_dir.mkdir()
    with pytest.raises(RunDirError, match="run 'gridtrain train' first") as caught:
        write_report(run_dir)
    assert str(run_dir) in str(caught.value)
    assert not (run_dir / "plots").exists()


def test_a_long_roc_curve_is_thinned_keeping_its_ends() -> None:
    fpr = np.linspace(0, 1, 1_000_001) ** 3
    tpr = np.linspace(0, 1, 1_000_001) ** 0.3
    keep = _thin(fpr, tpr)
    assert keep.size <= 4000
    assert keep[0] == 0
    assert keep[-1] == fpr.size - 1
    assert np.all(np.diff(keep) > 0)
    assert np.min(fpr[keep][fpr[keep] > 0]) < 1e-12  # the low-fpr end, where rejection is high


def test_time_axis_units() -> None:
    assert _time_axis([30.0]) == (1.0, "s")
    assert _time_axis([600.0]) == (60.0, "min")
    assert _time_axis([5 * 3600.0]) == (3600.0, "h")


def test_reports_need_no_tensorflow(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run")
    code = (
        "import sys; from gridtrain.report import write_report; "
        f"write_report({str(run_dir)!r}); sys.exit('tensorflow' in sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_sparse_records_and_an_empty_staleness_histogram(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "run")
    (run_dir / "history.jsonl").write_text(
        '{"type": "shard", "time": 1.0, "epoch": 1, "shard": "train-00000.h5", "worker": "w0"}\n'
        '{"type": "epoch", "time": 2.0, "epoch": 1, "version": 0}\n'
    )
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["staleness"] = {"histogram": dict.fromkeys(["0", "1", "2", "3-4", ">64"], 0)}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    run = load_run(run_dir)
    assert run.shards[0].version is None
    assert np.isnan(run.shards[0].loss)
    assert np.isnan(run.epochs[0].val_auc)
    assert [p.name for p in write_report(run_dir, run)] == ALL_PLOTS
