"""The taggers on the substructure toy through the parameter server, exported; fine-tuning from a
finished run with frozen layers and a faster head."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from train_helpers import gridtrain

from gridtrain.errors import ConfigError

PARTICLES = ["part_deta", "part_dphi", "part_logpt", "part_logptrel", "part_charge", "part_pt",
             "part_energy"]  # fmt: skip
SVS = ["sv_deta", "sv_dphi", "sv_pt", "sv_mass", "sv_sip3d"]
TINY = {
    "particlenet": {"edge_convs": [[4, [8, 8]], [4, [8]]], "fc": [8]},
    "part": {"embed_dims": [8], "pair_embed_dims": [4], "num_heads": 2, "num_layers": 1},
}


def config(work: Path, dataset: Path, **train: Any) -> Path:
    section = {
        "epochs": 1,
        "workers": 2,
        "batch_size": 64,
        "learning_rate": 0.003,
        "early_stopping": {"patience": None},
        "run_dir": str(work / "run"),
        **train,
    }
    text = {
        "task": {"kind": "multiclass", "classes": ["qcd", "wz", "top"]},
        "dataset": {
            "name": "jets",
            "tree": "events",
            "samples": [
                {
                    "name": kind,
                    "files": [str(dataset.parent / "toy" / f"{kind}.root")],
                    "class": kind,
                }
                for kind in ("qcd", "wz", "top")
            ],
            "features": ["jet_pt", "jet_mass"],
            "jagged": {
                "particles": {"branches": PARTICLES, "length": 16},
                "svs": {"branches": SVS, "length": 2},
            },
            "weight": "weight",
            "event_id": ["run", "luminosityBlock", "event"],
            "validation_fraction": 0.25,
            "shard_events": 300,
            "outdir": str(dataset),
        },
        "train": section,
    }
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(text))
    return path


@pytest.fixture(scope="module")
def jets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The substructure toy (1800 jets) converted: particles and secondary vertices."""
    work = tmp_path_factory.mktemp("taggers")
    made = gridtrain("toy", "--task=substructure", "--events=1800", f"--out={work / 'toy'}")
    assert made.returncode == 0, made.stderr[-2000:]
    path = config(work, work / "dataset")
    done = gridtrain("convert", "-c", str(path))
    assert done.returncode == 0, done.stderr[-2000:]
    return work / "dataset"


@pytest.fixture(scope="module")
def trained(jets: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A function: the run directory of a 2-worker training of a tagger (once per module)."""
    runs: dict[str, Path] = {}

    def run(name: str) -> Path:
        if name not in runs:
            work = tmp_path_factory.mktemp(name)
            path = config(work, jets, model={"name": name, "params": TINY[name]})
            done = gridtrain("train", "-c", str(path), timeout=600)
            assert done.returncode == 0, done.stderr[-3000:]
            runs[name] = work / "run"
        return runs[name]

    return run


def layer_weights(path: Path) -> dict[str, list[np.ndarray]]:
    from gridtrain.models import load_model

    model = load_model(path, compile=False)
    return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}


@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")
@pytest.mark.parametrize("name", ["particlenet", "part"])
def test_a_tagger_trains_through_the_parameter_server_and_exports(trained, name: str) -> None:  # type: ignore[no-untyped-def]
    import json

    run = trained(name)
    updates = {
        json.loads(line)["worker"]
        for line in (run / "history.jsonl").read_text().splitlines()
        if '"worker"' in line
    }
    assert len(updates) == 2  # both workers trained
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"]["kind"] == "multiclass"
    weights = layer_weights(run / "model.keras")
    assert ("edge_conv_0_0" if name == "particlenet" else "block_0") in weights
    # export scores the validation events with ONNX Runtime and refuses to write on disagreement
    done = gridtrain("export", str(run), "--format", "onnx", timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run / "export" / "model.onnx").is_file()


FROZEN = ["input_norm_*", "embed_*", "edge_conv_0_*"]


@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")
def test_fine_tuning_starts_from_a_run_and_keeps_frozen_layers(
    trained, jets: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    source = trained("particlenet")
    before = layer_weights(source / "model.keras")
    path = config(
        tmp_path,
        jets,
        epochs=1,
        learning_rate=0.003,
        model={"name": "particlenet", "params": TINY["particlenet"]},
        init_from=str(source),
        freeze=FROZEN,
        head_learning_rate=0.03,
    )
    done = gridtrain("train", "-c", str(path), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    after = layer_weights(tmp_path / "run" / "model.keras")
    frozen = [name for name in after if any(Path(name).match(p) for p in FROZEN)]
    assert {"edge_conv_0_0", "edge_conv_0_0_norm", "input_norm_particles"} <= set(frozen)
    for name in frozen:  # through every push and the center: not a bit changed
        for mine, theirs in zip(after[name], before[name], strict=True):
            np.testing.assert_array_equal(mine, theirs, err_msg=name)
    # the rest started from the source and trained on
    assert not np.array_equal(after["edge_conv_1_0"][0], before["edge_conv_1_0"][0])
    initial = np.load(tmp_path / "run" / "initial.npz")
    from gridtrain.models import load_model

    layout = load_model(tmp_path / "run" / "model.keras", compile=False)
    start = dict(zip([w.path for w in layout.weights], initial.values(), strict=True))
    np.testing.assert_array_equal(start["edge_conv_1_0/kernel"], before["edge_conv_1_0"][0])
    # the head was trained anew, not taken from the source
    assert not np.array_equal(start["probability/kernel"], before["probability"][0])


def test_a_mismatched_source_is_one_line_naming_the_layer(
    trained, jets: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    source = trained("particlenet")
    wider = {**TINY["particlenet"], "edge_convs": [[4, [8, 8]], [4, [16]]]}
    path = config(tmp_path, jets, model={"name": "particlenet", "params": wider},
                  init_from=str(source))  # fmt: skip
    done = gridtrain("train", "-c", str(path))
    assert done.returncode == 2
    line = done.stderr.strip().splitlines()[-1]
    assert "layer 'edge_conv_1_0' has weights of shapes [(16, 16)] here and [(16, 8)]" in line
    path = config(tmp_path, jets, model={"name": "particlenet", "params": TINY["particlenet"]},
                  init_from=str(source), freeze=["no_such_layer*"])  # fmt: skip
    done = gridtrain("train", "-c", str(path))
    assert done.returncode == 2
    assert "'no_such_layer*' matches no layer" in done.stderr.strip().splitlines()[-1]


@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")
def test_frozen_layers_do_not_move_and_the_head_steps_faster(tmp_path: Path) -> None:
    from gridtrain.models import InputSpec, build_model
    from gridtrain.task import Task
    from gridtrain.train.finetune import prepare_model

    spec = InputSpec(("a", "b", "c"), {}, task=Task())
    model = build_model("mlp", {"hidden": [4, 4]}, spec, learning_rate=0.001, seed=1)
    model = prepare_model(model, ["hidden_0"], ["probability"], 0.001, 0.01)
    start = {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers}
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 3)).astype(np.float32), (rng.random(64) > 0.5).astype(np.float32)
    model.train_on_batch({"features": x}, y)
    moved = {
        layer.name: max(float(np.abs(a - b).max()) for a, b in
                        zip(layer.get_weights(), start[layer.name], strict=True))
        for layer in model.layers if layer.weights
    }  # fmt: skip
    assert moved["hidden_0"] == 0.0
    # Adam's first step is about the learning rate for every weight: 0.01 for the head
    assert 0.005 < moved["probability"] <= 0.0101
    assert 0.0005 < moved["hidden_1"] <= 0.00101
    # saved with its optimizer (as finalize saves model.keras), it loads back compiled
    from gridtrain.models import load_model

    model.save(tmp_path / "m.keras")
    again = load_model(tmp_path / "m.keras")
    assert type(again.optimizer).__name__ == "HeadAdam"
    assert again.optimizer.head_layers == ["probability"]
    assert again.get_layer("hidden_0").trainable is False
    with pytest.raises(ConfigError, match="both name probability"):
        prepare_model(model, ["prob*"], ["probability"], 0.001, None)
