"""gridtrain apply: friend trees of scores, equal to the model's own predictions event by event."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import uproot
from apply_helpers import (
    DATA,
    DY,
    SELECTION,
    TTBAR,
    Runs,
    apply_cli,
    marker,
    model_predictions,
    read_scores,
)

IDS = ("run", "luminosityBlock", "event")


def _scored(runs: Runs, task: str, out: Path, *args: str) -> dict[str, dict[str, np.ndarray]]:
    files = runs.inputs(task)
    done = apply_cli(str(runs.run(task)), *files, "--out", str(out), *args)
    assert done.returncode == 0, done.stderr[-3000:]
    return {path: read_scores(out / f"{Path(path).stem}_scores.root") for path in files}


def _matched(scores: dict[str, dict[str, np.ndarray]], branches: list[str], run: Path) -> int:
    """Compare every scored event that is in the run's shards with the model's prediction
    there (matched by event id: the id branches, or the sample's index and the entry); return
    how many were compared."""
    predicted = model_predictions(run)
    compared = 0
    for sample, tree in enumerate(scores.values()):
        got = np.stack([tree[b] for b in branches], axis=1)
        if "entry" in tree:
            keys = [(sample, int(entry)) for entry in tree["entry"]]
        else:
            keys = [tuple(int(k) for k in key) for key in zip(*(tree[i] for i in IDS), strict=True)]
        for row, key in enumerate(keys):
            reference = predicted.get(key)
            if reference is not None:
                np.testing.assert_allclose(got[row], reference, rtol=1e-6, atol=1e-6)
                compared += 1
    return compared


def test_binary_scores_are_friends_of_the_real_files_and_equal_the_model(
    runs: Runs, tmp_path: Path
) -> None:
    """Every entry of each NanoAOD file (the selection not applied, the data file without
    genWeight scored too), in its order, with the Keras model's prediction for each event of the
    shards to 1e-6; the scores file works as a friend of its input."""
    scores = _scored(runs, "binary", tmp_path)
    for path, tree in scores.items():
        with uproot.open(path) as file:
            events = file["Events"]
            ids = events.arrays(list(IDS), library="np")
            assert list(tree) == [*IDS, "score"]
            assert len(tree["score"]) == events.num_entries
            for name in IDS:
                assert tree[name].dtype == ids[name].dtype
                np.testing.assert_array_equal(tree[name], ids[name])
        assert np.all((tree["score"] >= 0) & (tree["score"] <= 1))
    compared = _matched(scores, ["score"], runs.run("binary"))
    assert compared == 48  # the selection kept 38 DY and 10 ttbar events in the shards
    inputs = uproot.iterate(f"{DY}:Events", ["event"], step_size=7, library="np")
    friends = uproot.iterate(
        f"{tmp_path}/nano_dy_scores.root:scores", ["event", "score"], step_size=7, library="np"
    )
    for events, friend in zip(inputs, friends, strict=True):  # read side by side, chunk by chunk
        np.testing.assert_array_equal(events["event"], friend["event"])


def test_kfold_run_scores_each_event_by_the_fold_model_that_never_saw_it(
    runs: Runs, tmp_path: Path
) -> None:
    """On a k-fold run every event is scored by the fold model that did not train on it: the
    scores equal the run's out-of-fold validation scores (validation.npz) event by event, and the
    fold branch says which model it was."""
    run = runs.run("kfold")
    scores = _scored(runs, "kfold", tmp_path)
    with np.load(run / "validation.npz") as validation:
        out_of_fold = {
            tuple(int(x) for x in key): (float(score[0]), int(fold))
            for key, score, fold in zip(
                validation["event_id"], validation["scores"], validation["fold"], strict=True
            )
        }
    other = model_predictions(run / "fold-0")  # fold 0's model, on every event
    compared = differs = 0
    for tree in scores.values():
        assert list(tree) == [*IDS, "score", "fold"]
        for row, key in enumerate(zip(*(tree[i] for i in IDS), strict=True)):
            key = tuple(int(k) for k in key)
            if key in out_of_fold:
                score, fold = out_of_fold[key]
                assert tree["fold"][row] == fold
                np.testing.assert_allclose(tree["score"][row], score, rtol=1e-6, atol=1e-6)
                compared += 1
                if fold == 1:
                    differs += abs(float(other[key][0]) - score) > 1e-4
    assert compared == 48  # every event of the shards, each in one fold
    assert differs > 0  # the other fold's model would have scored them otherwise


def _out_of_fold(run: Path) -> dict[tuple[int, ...], tuple[float, int]]:
    """The run's out-of-fold validation scores and folds (validation.npz) by event id."""
    with np.load(run / "validation.npz") as validation:
        return {
            tuple(int(x) for x in key): (float(score[0]), int(fold))
            for key, score, fold in zip(
                validation["event_id"], validation["scores"], validation["fold"], strict=True
            )
        }


def test_kfold_run_scores_with_its_onnx_export(runs: Runs, tmp_path: Path) -> None:
    """``gridtrain export`` of a k-fold run writes every fold's model below RUN_DIR/export; apply
    --engine onnx scores with them, by default and with --export-dir RUN_DIR/export, each event
    by the fold model that never saw it (the out-of-fold validation scores, to 1e-6)."""
    run = runs.export("kfold")
    out_of_fold = _out_of_fold(run)
    for out, args in (("default", ()), ("given", ("--export-dir", str(run / "export")))):
        scores = _scored(runs, "kfold", tmp_path / out, "--engine", "onnx", *args)
        compared = 0
        for tree in scores.values():
            assert list(tree) == [*IDS, "score", "fold"]
            for row, key in enumerate(zip(*(tree[i] for i in IDS), strict=True)):
                found = out_of_fold.get(tuple(int(k) for k in key))
                if found is not None:
                    assert tree["fold"][row] == found[1]
                    np.testing.assert_allclose(tree["score"][row], found[0], atol=1e-6)
                    compared += 1
        assert compared == 48
        assert marker(tmp_path / out / "nano_dy_scores.root")["request"]["engine"] == "onnx"


def test_onnx_engine_scores_as_keras(runs: Runs, tmp_path: Path) -> None:
    runs.export("binary")
    keras = _scored(runs, "binary", tmp_path / "keras")
    onnx = _scored(runs, "binary", tmp_path / "onnx", "--engine", "onnx")
    for path in keras:
        np.testing.assert_array_equal(onnx[path]["event"], keras[path]["event"])
        np.testing.assert_allclose(onnx[path]["score"], keras[path]["score"], atol=1e-6)
    assert marker(tmp_path / "onnx" / "nano_dy_scores.root")["request"]["engine"] == "onnx"


def test_onnx_engine_imports_no_tensorflow(runs: Runs, tmp_path: Path) -> None:
    run = runs.export("binary")
    script = (
        "import sys\n"
        "from gridtrain.cli import main\n"
        f"code = main(['apply', {str(run)!r}, {DATA!r}, '--out', {str(tmp_path)!r}, "
        "'--engine', 'onnx'])\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "print(code, loaded)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "0 []"
    assert len(read_scores(tmp_path / "nano_dimuon_scores.root")["score"]) == 40


@pytest.mark.parametrize("task", ["multiclass", "regression"])
def test_multiclass_and_regression_branches(runs: Runs, tmp_path: Path, task: str) -> None:
    """score_<class> per class (probabilities summing to 1) and <target>_pred per target in
    physical units, each equal to the model's prediction for the events of the shards."""
    scores = _scored(runs, task, tmp_path)
    if task == "multiclass":
        branches = ["score_qcd", "score_w", "score_top"]
    else:
        branches = ["pt_pred", "response_pred"]
    ids = ["entry"] if task == "multiclass" else list(IDS)
    for tree in scores.values():
        assert list(tree) == [*ids, *branches]
        assert len(tree[ids[0]]) == 1200 // len(scores)
        if task == "multiclass":
            np.testing.assert_array_equal(tree["entry"], np.arange(400))
    assert _matched(scores, branches, runs.run(task)) == 1200  # every event was converted
    values = np.stack([np.concatenate([t[b] for t in scores.values()]) for b in branches], 1)
    if task == "multiclass":
        np.testing.assert_allclose(values.sum(axis=1), 1.0, atol=1e-5)
    else:  # physical units: jet pt in GeV (hundreds), a response near 1; never standardised
        assert np.median(values[:, 0]) > 50
        assert 0.3 < np.median(values[:, 1]) < 3


def test_selection_flag_keep_and_rntuple(runs: Runs, tmp_path: Path) -> None:
    """--selection flags the events the dataset's selection rejects (all still scored);
    --keep copies observer branches; --format rntuple holds what the TTree holds."""
    scores = _scored(runs, "binary", tmp_path / "ttree", "--selection", "--keep", "nJet", "MET_pt")
    rntuple = _scored(
        runs, "binary", tmp_path / "rntuple", "--selection", "--keep", "nJet", "MET_pt",
        "--format", "rntuple",
    )  # fmt: skip
    for path, tree in scores.items():
        with uproot.open(path) as file:
            source = file["Events"].arrays(["nJet", "MET_pt"], library="np")
        assert list(tree) == [*IDS, "score", "selected", "nJet", "MET_pt"]
        np.testing.assert_array_equal(tree["selected"], source["nJet"] >= 2)
        np.testing.assert_array_equal(tree["nJet"], source["nJet"])
        np.testing.assert_array_equal(tree["MET_pt"], source["MET_pt"])
        for name, values in tree.items():
            np.testing.assert_array_equal(rntuple[path][name], values)
    assert int(scores[DATA]["selected"].sum()) == 39  # one data event has no jet: flagged
    with uproot.open(tmp_path / "rntuple" / "nano_dy_scores.root") as file:
        assert file.classnames()["scores;1"] == "ROOT::RNTuple"
    assert marker(tmp_path / "ttree" / "nano_dy_scores.root")["request"]["selection"] == SELECTION


def test_jobs_score_as_one_process(runs: Runs, tmp_path: Path) -> None:
    runs.export("binary")
    one = _scored(runs, "binary", tmp_path / "one", "--engine", "onnx")
    three = _scored(runs, "binary", tmp_path / "three", "--engine", "onnx", "--jobs", "3")
    for path, tree in one.items():
        for name, values in tree.items():
            np.testing.assert_array_equal(three[path][name], values)


@pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="signals: main thread only"
)
def test_sigterm_ends_apply_and_leaves_no_partial_scores_file(tmp_path: Path) -> None:
    """SIGTERM (an HTCondor eviction, through the job wrapper) ends apply as Ctrl-C does: the
    scores file being written is removed, not left under its temporary name."""
    from gridtrain.apply.cli import stop_on_sigterm
    from gridtrain.apply.outputs import Request, write_scores

    request = Request("x.root", "Events", 6, "onnx", "0" * 64, None, ("score",), "ttree")

    def blocks() -> Iterator[dict[str, np.ndarray]]:
        yield {"score": np.zeros(3, dtype=np.float32)}
        os.kill(os.getpid(), signal.SIGTERM)  # as the wrapper forwards an eviction
        yield {"score": np.ones(3, dtype=np.float32)}

    previous = signal.getsignal(signal.SIGTERM)
    try:
        stop_on_sigterm()
        with pytest.raises(SystemExit) as ended:
            write_scores(tmp_path / "x_scores.root", request, blocks())
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert ended.value.code == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []


def test_resume_skips_verified_files_and_redoes_corrupt_ones(runs: Runs, tmp_path: Path) -> None:
    run = runs.export("binary")
    args = [str(run), DY, TTBAR, DATA, "--out", str(tmp_path), "--engine", "onnx"]
    first = apply_cli(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    dy, ttbar = tmp_path / "nano_dy_scores.root", tmp_path / "nano_tree_scores.root"
    reference = read_scores(dy)
    inode = dy.stat().st_ino
    again = apply_cli(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "3 files (3 finished already, skipped), 0 events scored" in again.stdout
    assert dy.stat().st_ino == inode  # not rewritten
    dy.write_bytes(dy.read_bytes()[: dy.stat().st_size // 2])  # truncated
    tampered = read_scores(ttbar)
    tampered["score"][3] += 0.125  # the content no longer matches the marker's adler32
    text = str(uproot.open(ttbar)["gridtrain_apply"])
    with uproot.recreate(ttbar) as file:
        file["scores"] = tampered
        file["gridtrain_apply"] = text
    redone = apply_cli(*args)
    assert redone.returncode == 0, redone.stderr[-3000:]
    assert "3 files (1 finished already, skipped), 50 events scored" in redone.stdout
    assert "nano_dy_scores.root: " in redone.stderr
    assert "not the" in redone.stderr  # bytes against the header's end of file
    assert "fails its adler32" in redone.stderr
    for name, values in reference.items():
        np.testing.assert_array_equal(read_scores(dy)[name], values)
    assert marker(dy)["entries"] == 40


def test_a_bad_input_stops_the_run_before_anything_is_written(runs: Runs, tmp_path: Path) -> None:
    """Every input is checked first: one without the model's branches writes nothing at all."""
    bad = tmp_path / "bad.root"
    with uproot.recreate(bad) as file:
        file["Events"] = {"run": np.zeros(3, dtype=np.uint32)}
    out = tmp_path / "out"
    done = apply_cli(str(runs.run("binary")), DY, str(bad), "--out", str(out))
    assert done.returncode == 2
    assert not out.exists()


@pytest.mark.xrootd
def test_a_root_url_scores_as_the_local_file(runs: Runs, tmp_path: Path, xrootd_server) -> None:
    """A root:// input (a real xrootd on 127.0.0.1) gives the scores file the local copy gives."""
    run = runs.export("binary")
    remote = xrootd_server.local("apply/nano_dy.root")
    remote.parent.mkdir(parents=True, exist_ok=True)
    remote.write_bytes(Path(DY).read_bytes())
    remote.chmod(0o644)
    url = xrootd_server.url("apply/nano_dy.root")
    for out, source in ((tmp_path / "remote", url), (tmp_path / "local", DY)):
        done = apply_cli(str(run), source, "--out", str(out), "--engine", "onnx", "--selection")
        assert done.returncode == 0, done.stderr[-3000:]
    local = read_scores(tmp_path / "local" / "nano_dy_scores.root")
    via_url = read_scores(tmp_path / "remote" / "nano_dy_scores.root")
    assert list(via_url) == list(local)
    for name, values in local.items():
        np.testing.assert_array_equal(via_url[name], values)
