"""Helpers of the apply tests. Runs to score: a binary classifier on the real NanoAOD files,
a multi-class and a regression run on the toy, each trained briefly once per session (and
exported to ONNX on first use)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
from train_helpers import gridtrain

from tests.conftest import toy_section

NANOAOD = Path(__file__).parents[1] / "data" / "nanoaod"
DY, TTBAR, DATA = (str(NANOAOD / f"nano_{name}.root") for name in ("dy", "tree", "dimuon"))
TOY_EVENTS = 1200
SELECTION = "len(Jet_pt) >= 2"


def nanoaod_config(out: Path) -> dict[str, Any]:
    """A binary DY-against-ttbar dataset over the real files, with a selection on a list; the
    jets and muons as two jagged groups (the mlp flattens both), MET, the pile-up and two derived
    features (an element of a list with its fill, an expression of per-event branches)."""
    return {
        "dataset": {
            "name": "nanoaod-apply",
            "tree": "Events",
            "weight": "genWeight",
            "samples": [
                {"name": "dy", "files": [DY], "label": 1},
                {"name": "ttbar", "files": [TTBAR], "label": 0},
            ],
            "features": [
                "MET_pt",
                "MET_phi",
                "PV_npvs",
                "fixedGridRhoFastjetAll",
                {"name": "lead_muon_pt", "expr": "Muon_pt[0]", "fill": -1},
                {"name": "met_significance", "expr": "MET_pt / sqrt(MET_sumEt)"},
            ],
            "jagged": {
                "jets": {"branches": ["Jet_pt", "Jet_eta", "Jet_phi", "Jet_mass"], "length": 6},
                "muons": {"branches": ["Muon_pt", "Muon_eta", "Muon_phi"], "length": 3},
            },
            "event_id": ["run", "luminosityBlock", "event"],
            "selection": SELECTION,
            "validation_fraction": 0.3,
            "shard_events": 32,
            "outdir": str(out),
        }
    }


def toy_config(task: str, toy: Path, out: Path) -> dict[str, Any]:
    section = toy_section(toy, out, shard_events=400, step_events=1200)
    if task == "multiclass":
        section["samples"] = [
            {"name": name, "files": [str(toy / f"{name}.root")], "class": name}
            for name in ("qcd", "w", "top")
        ]
        # The multi-class toy's files repeat one another's run/lumi/event numbers: without id
        # branches an event's id is (sample index, entry), and apply writes the entry.
        section["event_id"] = []
        return {"task": {"kind": "multiclass", "classes": ["qcd", "w", "top"]}, "dataset": section}
    section["samples"] = [{"name": "jets", "files": [str(toy / "jets.root")]}]
    targets = [
        {"name": "pt", "expression": "jet_pt_true"},
        {"name": "response", "expression": "jet_pt_true / jet_pt"},
    ]
    return {"task": {"kind": "regression", "targets": targets, "loss": "mse"}, "dataset": section}


class Runs:
    """Trained (and exported) runs by task, made on first use: binary, multiclass, regression,
    and kfold (the binary run trained as two folds)."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.runs: dict[str, Path] = {}
        self.exported: set[str] = set()

    def inputs(self, task: str) -> list[str]:
        if task in ("binary", "kfold"):
            return [DY, TTBAR, DATA]
        names = ("qcd", "w", "top") if task == "multiclass" else ("jets",)
        return [str(self.work / f"toy-{task}" / f"{name}.root") for name in names]

    def run(self, task: str) -> Path:
        if task in self.runs:
            return self.runs[task]
        from gridtrain.config import DatasetConfig
        from gridtrain.data.convert import convert
        from gridtrain.data.toy import write_toy_dataset

        work = self.work / task
        work.mkdir()
        if task in ("binary", "kfold"):
            config = nanoaod_config(work / "dataset")
        else:
            toy = self.work / f"toy-{task}"
            write_toy_dataset(toy, TOY_EVENTS, seed=5, task=task)
            config = toy_config(task, toy, work / "dataset")
        convert(DatasetConfig.from_config(config))
        config["train"] = {
            "epochs": 1,
            "workers": 1,
            "batch_size": 64,
            "seed": 3,
            "model": {"name": "mlp", "params": {"hidden": [8]}},
            "early_stopping": {"patience": None},
        }
        if task == "kfold":  # two fold models, each validated on the events the other trained on
            config["train"]["folds"] = 2
        (work / "config.yaml").write_text(yaml.safe_dump(config))
        done = gridtrain("train", "-c", str(work / "config.yaml"), "--run-dir", str(work / "run"))
        assert done.returncode == 0, done.stderr[-3000:]
        self.runs[task] = work / "run"
        return self.runs[task]

    def export(self, task: str) -> Path:
        run = self.run(task)
        if task not in self.exported:
            done = gridtrain("export", str(run), "--format", "onnx")
            assert done.returncode == 0, done.stderr[-3000:]
            self.exported.add(task)
        return run


def apply_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``gridtrain apply ...`` as a user runs it."""
    return gridtrain("apply", *args)


def read_scores(path: Path) -> dict[str, np.ndarray]:
    import uproot

    with uproot.open(path) as file:
        return {k: np.asarray(v) for k, v in file["scores"].arrays(library="np").items()}


def marker(path: Path) -> dict[str, Any]:
    import uproot

    with uproot.open(path) as file:
        return dict(json.loads(str(file["gridtrain_apply"])))


def model_predictions(run: Path) -> dict[tuple[int, ...], np.ndarray]:
    """The run's Keras model on every event of its shards (training and validation), as
    training feeds it (standardised by ``InputBuilder``), in the units apply writes: by event
    id."""
    import gridtrain.train  # noqa: F401  (the XRootD client before TensorFlow)
    from gridtrain.data.manifest import Manifest
    from gridtrain.data.shards import ShardReader
    from gridtrain.models import arrange_inputs, load_model, model_input_names
    from gridtrain.train.inputs import InputBuilder
    from gridtrain.train.settings import WorkerSpec
    from gridtrain.train.targets import unstandardise

    spec = WorkerSpec.read(run / "worker.json")
    manifest = Manifest.from_dict(spec.manifest)
    model = load_model(run / "model.keras", compile=False)
    builder = InputBuilder(manifest, spec.features, spec.groups, model_input_names(model))
    task = manifest.learning_task()
    found: dict[tuple[int, ...], np.ndarray] = {}
    for split in ("train", "validation"):
        for entry in manifest.shards.get(split, []):
            local = spec.locations[entry.path]
            data = builder.load(local)
            scores = np.asarray(model.predict_on_batch(arrange_inputs(model, data.inputs)))
            if not task.is_classifier:
                scores = unstandardise(task, scores)
            with ShardReader(local, ["event_id"]) as reader:
                ids = reader.read()["event_id"]
            for row, score in zip(ids, scores.reshape(len(ids), -1), strict=True):
                found[tuple(int(x) for x in row)] = score
    return found
