"""``gridtrain report RUN_DIR``: paths and a summary on success, exit code 2 and the path if not."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_helpers import write_run

from gridtrain.cli import EXIT_USER_ERROR, main


def test_report_prints_the_plots_and_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = write_run(tmp_path / "run")
    assert main(["report", str(run_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    written = [line.removeprefix("wrote ") for line in out if line.startswith("wrote ")]
    assert len(written) == 5
    assert all(Path(p).is_file() for p in written)
    assert any(line.startswith("validation AUC") for line in out)


def test_missing_run_dir_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run_dir = tmp_path / "runs" / "missing"
    assert main(["report", str(run_dir)]) == EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert err.startswith("gridtrain report: error: ")
    assert str(run_dir) in err
    assert "gridtrain train" in err
    assert len(err.strip().splitlines()) == 1
