"""gridtrain apply's mistakes: one line naming the file and the way out, exit code 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import uproot
from apply_helpers import DATA, DY, Runs, apply_cli


def _one_line(*args: str) -> str:
    done = apply_cli(*args)
    assert done.returncode == 2, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("gridtrain apply: error: ")
    return lines[0]


def test_a_file_without_the_tree(runs: Runs, tmp_path: Path) -> None:
    line = _one_line(str(runs.run("binary")), DY, "--out", str(tmp_path), "--tree", "Jets")
    assert f"{DY}: no TTree or RNTuple 'Jets'" in line
    assert "'Events'" in line
    assert "--tree" in line


def test_a_missing_branch(runs: Runs, tmp_path: Path) -> None:
    partial = tmp_path / "partial.root"
    arrays = uproot.open(DY)["Events"].arrays(["run", "MET_pt", "MET_phi"], library="np")
    with uproot.recreate(partial) as file:
        file["Events"] = arrays
    line = _one_line(str(runs.run("binary")), str(partial), "--out", str(tmp_path / "out"))
    assert f"{partial}: RNTuple 'Events' has no field 'Muon_pt' (feature 'lead_muon_pt' = " in line
    missing = _one_line(str(runs.run("binary")), DY, "--out", str(tmp_path), "--keep", "Nope")
    assert "has no branch 'Nope' (--keep)" in missing


def test_an_output_that_exists_and_differs(runs: Runs, tmp_path: Path) -> None:
    run = str(runs.export("binary"))
    done = apply_cli(run, DATA, "--out", str(tmp_path), "--engine", "onnx")
    assert done.returncode == 0, done.stderr[-3000:]
    line = _one_line(run, DATA, "--out", str(tmp_path), "--engine", "onnx", "--selection")
    assert "nano_dimuon_scores.root: exists and differs from what this apply would write" in line
    assert "--overwrite" in line
    replaced = apply_cli(run, DATA, "--out", str(tmp_path), "--engine", "onnx", "--selection",
                         "--overwrite")  # fmt: skip
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    foreign = tmp_path / "other"
    foreign.mkdir()
    with uproot.recreate(foreign / "nano_dimuon_scores.root") as file:
        file["scores"] = {"score": np.zeros(40, dtype=np.float32)}
    line = _one_line(run, DATA, "--out", str(foreign), "--engine", "onnx")
    assert "exists and was not written by gridtrain apply" in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--executor", "condor"], "--executor condor needs --profile NAME"),
        (["--executor", "condor", "--profile", "local-pool", "--jobs", "2"], "--jobs 2 is for lo"),
        (["--executor", "condor", "--profile", "x", "--files-per-job", "0"], "give 1 or more"),
        (["--profile", "local-pool"], "--profile is for --executor condor"),
        (["--files-per-job", "2"], "--files-per-job is for --executor condor"),
        (["--format", "rntuple", "--jobs", "0"], "--jobs 0: give 1 or more"),
    ],
)
def test_refusals(runs: Runs, tmp_path: Path, args: list[str], expected: str) -> None:
    assert expected in _one_line(str(runs.run("binary")), DY, "--out", str(tmp_path), *args)


def test_onnx_without_an_export_and_selection_without_one(tmp_path: Path, runs: Runs) -> None:
    run = runs.run("multiclass")  # never exported
    line = _one_line(str(run), DY, "--out", str(tmp_path), "--engine", "onnx")
    assert "no export.json; export the run first" in line
    line = _one_line(str(run), DY, "--out", str(tmp_path), "--selection")
    assert "--selection: the run's dataset has no selection" in line


def test_two_inputs_with_one_name(runs: Runs, tmp_path: Path) -> None:
    twin = tmp_path / "twin"
    twin.mkdir()
    (twin / "nano_dy.root").write_bytes(Path(DY).read_bytes())
    line = _one_line(str(runs.run("binary")), DY, str(twin / "nano_dy.root"), "--out", "x")
    assert "would both write nano_dy_scores.root" in line
