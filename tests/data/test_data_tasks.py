"""Conversion for each task: class labels, regression targets, bad inputs, negative weights."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uproot

from gridtrain.config import DatasetConfig, load_config
from gridtrain.data.convert import convert
from gridtrain.data.gather import gather
from gridtrain.data.groups import plan_group
from gridtrain.data.manifest import (
    Manifest,
    class_factors,
    load_manifest,
    merge_weights,
    weight_record,
)
from gridtrain.data.shards import ShardReader
from gridtrain.data.toy import write_toy_dataset
from gridtrain.errors import ConfigError, ConversionError
from gridtrain.task import Task

FEATURES = ["jet_pt", "jet_mass", "jet_nconst"]
CLASSES = ["qcd", "w", "top"]
MULTICLASS = {"kind": "multiclass", "classes": CLASSES, "balance": True}
REGRESSION = {
    "kind": "regression",
    "targets": [
        {"name": "pt", "expression": "jet_pt_true"},
        {"name": "response", "expression": "jet_pt_true / jet_pt"},
    ],
}


@pytest.fixture(scope="module")
def multiclass_toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("multiclass")
    write_toy_dataset(out, 1500, seed=3, task="multiclass", negative_weight_fraction=0.1)
    return out


@pytest.fixture(scope="module")
def regression_toy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("regression")
    write_toy_dataset(out, 1200, seed=4, file_format="rntuple", task="regression")
    return out


def section(samples: list[dict[str, Any]], out: Path, **overrides: Any) -> dict[str, Any]:
    return {
        "tree": "events",
        "samples": samples,
        "features": FEATURES,
        "event_id": ["run", "luminosityBlock", "event"],
        "shard_events": 400,
        "step_events": 500,
        "outdir": str(out),
        **overrides,
    }


def multiclass_samples(toy: Path) -> list[dict[str, Any]]:
    return [{"name": c, "files": [str(toy / f"{c}.root")], "class": c} for c in CLASSES]


def read_split(out: Path, manifest: Manifest, split: str) -> dict[str, np.ndarray]:
    parts = []
    for entry in manifest.shards[split]:
        with ShardReader(out / entry.path) as reader:
            parts.append(reader.read())
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def test_multiclass_labels_weights_and_class_factors(
    multiclass_toy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    dataset = DatasetConfig.from_dict(
        section(multiclass_samples(multiclass_toy), tmp_path, weight="genWeight"), MULTICLASS
    )
    with caplog.at_level(logging.WARNING, logger="gridtrain.data.convert"):
        manifest = convert(dataset)
    top = manifest.weights["samples"]["top"]
    assert (
        f"sample 'top': {top['negative_events']} of {top['events']} events have negative "
        f"weights, {100 * top['negative_share']:.1f}% of its sum of |weights|"
    ) in caplog.text
    train = read_split(tmp_path, manifest, "train")
    validation = read_split(tmp_path, manifest, "validation")
    both = {k: np.concatenate([v, validation[k]]) for k, v in train.items()}
    assert "target" not in both
    assert manifest.learning_task() == Task.from_dict(MULTICLASS)
    for index, name in enumerate(CLASSES):
        read = uproot.open(multiclass_toy / f"{name}.root")["events"].arrays(
            ["event", "genWeight"], library="np"
        )
        # Every event of the sample carries its class's label, and its own weight.
        mine = both["label"] == index
        assert sorted(both["event_id"][mine, 2]) == sorted(read["event"])
        weights = dict(zip(both["event_id"][mine, 2], both["weight"][mine], strict=True))
        assert all(weights[e] == w for e, w in zip(read["event"], read["genWeight"], strict=True))
        negative = read["genWeight"] < 0
        for record in (manifest.weights["samples"][name], manifest.weights["classes"][name]):
            assert record["events"] == len(negative)
            assert record["negative_events"] == int(negative.sum()) > 0
            assert record["negative_sum"] == pytest.approx(read["genWeight"][negative].sum())
            assert record["sum"] == pytest.approx(read["genWeight"].sum(dtype=np.float64))
            share = -read["genWeight"][negative].sum() / np.abs(read["genWeight"]).sum()
            assert record["negative_share"] == pytest.approx(share)
        assert manifest.weights["classes"][name]["train_events"] == int(
            (train["label"] == index).sum()
        )
    # Balanced: the class factors give every class the same training sum of weights.
    factors = np.asarray(manifest.class_factors)
    sums = [
        (train["weight"] * factors[train["label"]])[train["label"] == k].sum() for k in range(3)
    ]
    assert sums == pytest.approx([sums[0]] * 3, rel=1e-5)
    assert manifest.weights["branch"] == "genWeight"
    # The manifest as written reads back with the same records.
    again = load_manifest(tmp_path)
    assert again.factors() == manifest.class_factors
    assert again.weights == json.loads(json.dumps(manifest.weights))


def test_regression_targets_are_what_uproot_reads_and_the_expression_gives(
    regression_toy: Path, tmp_path: Path
):
    samples = [{"name": "jets", "files": [str(regression_toy / "jets.root")]}]
    manifest = convert(DatasetConfig.from_dict(section(samples, tmp_path), REGRESSION))
    assert manifest.sources[0].kind == "RNTuple"
    read = uproot.open(regression_toy / "jets.root")["events"].arrays(
        ["event", "jet_pt", "jet_pt_true"], library="np"
    )
    expected = np.stack([read["jet_pt_true"], read["jet_pt_true"] / read["jet_pt"]], axis=1)
    assert expected.dtype == np.float32
    train = read_split(tmp_path, manifest, "train")
    validation = read_split(tmp_path, manifest, "validation")
    for split in (train, validation):
        assert split["target"].dtype == np.float32
        assert split["target"].shape[1] == 2
        rows = np.searchsorted(read["event"], split["event_id"][:, 2])
        np.testing.assert_array_equal(split["target"], expected[rows])
        assert (split["label"] == 0).all()
    with h5py_file(tmp_path / manifest.shards["train"][0].path) as f:
        assert list(f["target"].attrs["columns"]) == ["pt", "response"]
    task = manifest.learning_task()
    values = train["target"].astype(np.float64)
    assert [t.mean for t in task.targets] == pytest.approx(values.mean(axis=0), rel=1e-9)
    assert [t.std for t in task.targets] == pytest.approx(values.std(axis=0), rel=1e-6)
    assert task.loss == "mse"
    assert manifest.class_factors == []
    assert manifest.weights["samples"]["jets"]["non_finite_targets"] == 0
    assert manifest.stats["target"]["count"] == len(values)


@pytest.mark.parametrize("kind", ["multiclass", "regression"])
def test_a_grouped_conversion_records_what_one_job_does(
    kind: str, multiclass_toy: Path, regression_toy: Path, tmp_path: Path
):
    """Every file twice, one group each: gather merges the weights, the targets' statistics and
    the class factors into what one job over all files writes."""
    if kind == "multiclass":
        samples, task = multiclass_samples(multiclass_toy), MULTICLASS
    else:
        samples, task = [{"name": "jets", "files": [str(regression_toy / "jets.root")]}], REGRESSION
    samples = [{**s, "files": s["files"] * 2} for s in samples]
    one = convert(
        DatasetConfig.from_dict(section(samples, tmp_path / "one", weight="genWeight"), task)
    )
    grouped = DatasetConfig.from_dict(
        section(samples, tmp_path / "grouped", weight="genWeight", files_per_job=1), task
    )
    for k in range(2):
        convert(grouped, file_group=plan_group(grouped, k))
    gathered = gather(grouped)
    assert gathered.weights == approx_record(one.weights)
    assert gathered.class_factors == pytest.approx(one.class_factors)
    assert gathered.task == approx_record(one.task)
    assert len(gathered.class_factors) == (3 if kind == "multiclass" else 0)


def approx_record(record: Any) -> Any:
    if isinstance(record, dict):
        return {k: approx_record(v) for k, v in record.items()}
    if isinstance(record, list):
        return [approx_record(v) for v in record]
    return pytest.approx(record) if isinstance(record, float) else record


def h5py_file(path: Path) -> Any:
    import h5py

    return h5py.File(path, "r")


def test_a_target_of_a_missing_branch_is_refused_before_reading(
    regression_toy: Path, tmp_path: Path
):
    samples = [{"name": "jets", "files": [str(regression_toy / "jets.root")]}]
    task = {"kind": "regression", "targets": [{"name": "pt", "expression": "genJet_pt / jet_pt"}]}
    with pytest.raises(ConversionError) as err:
        convert(DatasetConfig.from_dict(section(samples, tmp_path / "out"), task))
    message = str(err.value)
    assert "\n" not in message
    assert "'genJet_pt'" in message
    assert "target 'pt' = genJet_pt / jet_pt" in message
    assert "jet_pt_true" in message  # the fields there are listed
    assert not (tmp_path / "out").exists()


def test_non_finite_targets_are_refused_or_dropped_and_counted(
    regression_toy: Path, tmp_path: Path
):
    path = regression_toy / "jets.root"
    samples = [{"name": "jets", "files": [str(path)]}]
    task = {"kind": "regression", "targets": [{"name": "m", "expression": "sqrt(jet_mass - 60)"}]}
    mass = uproot.open(path)["events"]["jet_mass"].array(library="np")
    bad = int((mass < 60).sum())
    assert 0 < bad < len(mass)
    with pytest.raises(ConversionError) as err:
        convert(DatasetConfig.from_dict(section(samples, tmp_path / "refused"), task))
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message
    assert "sample 'jets'" in message
    assert "NaN or infinite target (m)" in message
    assert "task.on_bad_target: drop" in message
    assert not any((tmp_path / "refused").glob("*.h5*"))

    dropped = {**task, "on_bad_target": "drop"}
    manifest = convert(DatasetConfig.from_dict(section(samples, tmp_path / "dropped"), dropped))
    assert manifest.weights["samples"]["jets"]["non_finite_targets"] == bad
    assert manifest.events("train") + manifest.events("validation") == len(mass) - bad
    targets = read_split(tmp_path / "dropped", manifest, "train")["target"]
    assert np.isfinite(targets).all()


def labelled_file(path: Path, labels: list[int]) -> Path:
    """A small TTree with one feature x and an integer label branch cls."""
    with uproot.recreate(path) as f:
        f["t"] = {
            "x": np.arange(len(labels), dtype=np.float32),
            "cls": np.asarray(labels, dtype=np.int32),
        }
    return path


def branch_section(path: Path, out: Path) -> dict[str, Any]:
    return {
        "tree": "t",
        "samples": [{"name": "mixed", "files": [str(path)], "label": "cls"}],
        "features": ["x"],
        "event_id": [],
        "outdir": str(out),
    }


def test_a_class_without_events_is_refused(tmp_path: Path):
    path = labelled_file(tmp_path / "two.root", [0, 1] * 20)
    with pytest.raises(ConversionError) as err:
        convert(DatasetConfig.from_dict(branch_section(path, tmp_path / "out"), MULTICLASS))
    message = str(err.value)
    assert "\n" not in message
    assert "class 'top' (label 2) has no events" in message
    assert "label branches of 'mixed' never give 2" in message
    assert not any((tmp_path / "out").glob("*.h5*"))
    # Known from the config alone when every sample has a constant label.
    samples = multiclass_samples(tmp_path)[:2]
    with pytest.raises(ConfigError, match=r"^task.classes: no sample has class 'top' \(label 2\)"):
        DatasetConfig.from_dict(section(samples, tmp_path), MULTICLASS)


def test_a_label_outside_the_classes_is_refused(tmp_path: Path):
    path = labelled_file(tmp_path / "bad.root", [0, 1, 2, 3, 1])
    with pytest.raises(ConversionError) as err:
        convert(DatasetConfig.from_dict(branch_section(path, tmp_path / "out"), MULTICLASS))
    message = str(err.value)
    assert "\n" not in message
    assert f"{path}: label branch 'cls' of sample 'mixed' has value 3 in entry 3" in message
    assert "labels are 0 .. 2 (qcd, w, top)" in message


@pytest.mark.parametrize(
    ("task", "sample", "expected"),
    [
        (MULTICLASS, {"class": "higgs"}, "names class 'higgs', not one of task.classes"),
        (MULTICLASS, {"label": 3}, "has label 3, but the multiclass task has 3 classes"),
        (MULTICLASS, {}, "has neither label nor class"),
        (MULTICLASS, {"label": 0, "class": "qcd"}, "gives both label and class"),
        (REGRESSION, {"class": "qcd"}, "names class 'qcd' but task.kind is regression"),
        ({"kind": "regression"}, {}, "task.targets is empty"),
        ({"kind": "regression", "targets": [{"name": "a b"}]}, {}, "task.targets.0.name"),
        ({**REGRESSION, "balance": True}, {}, "task.balance is for classifiers"),
        ({"kind": "binary", "loss": "mse"}, {"label": 1}, "task.loss is for regression"),
    ],
)
def test_task_config_errors_are_one_line(task, sample, expected, tmp_path: Path):
    samples = [{"name": "s", "files": ["s.root"], **sample}]
    with pytest.raises(ConfigError) as err:
        DatasetConfig.from_dict(section(samples, tmp_path), task)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_a_target_expression_with_a_syntax_error_names_the_target(tmp_path: Path):
    samples = [{"name": "s", "files": [str(tmp_path / "s.root")]}]
    task = {"kind": "regression", "targets": [{"name": "r", "expression": "jet_pt_true //"}]}
    with pytest.raises(ConfigError, match=r"^task.targets 'r' expression 'jet_pt_true //'"):
        convert(DatasetConfig.from_dict(section(samples, tmp_path), task))


def test_old_configs_and_manifests_read_as_binary(tmp_path: Path):
    samples = [
        {"name": "signal", "files": ["s.root"], "label": 1},
        {"name": "background", "files": ["b.root"], "label": 0},
    ]
    old = DatasetConfig.from_dict(section(samples, tmp_path))
    assert old.task == Task()
    assert old.on_bad_target == "refuse"
    # The hash of a config without a task section is the one it had before tasks existed.
    explicit = DatasetConfig.from_dict(section(samples, tmp_path), {"kind": "binary"})
    assert explicit.content_hash() == old.content_hash()
    # (as computed by the config module of commit 8e11c0b, before tasks existed)
    assert old.content_hash() == (
        "d32e1bd940de4e5be4442aebac02907799a835820897d456f2235d783bf5c8fc"
    )
    balanced = DatasetConfig.from_dict(section(samples, tmp_path), {"balance": True})
    assert balanced.content_hash() != old.content_hash()
    # Binary with class names: the same labels by name.
    named = [{**s, "class": s["name"]} for s in samples]
    for s in named:
        del s["label"]
    assert [s.label for s in DatasetConfig.from_dict(section(named, tmp_path)).samples] == [1, 0]
    # The example configs of every task load.
    for name in ("config", "multiclass", "regression"):
        config = DatasetConfig.from_config(load_config(f"config/{name}.yaml"))
        assert config.task.kind == {"config": "binary"}.get(name, name)

    record = {
        "name": "old", "gridtrain_version": "0.1", "config_hash": "x", "codec": "none",
        "chunk_events": 1, "features": ["x"], "jagged": [], "event_id": ["event"],
        "weight": None, "split": {}, "stats": {}, "format": "gridtrain-manifest",
        "format_version": 1, "shards": {"train": [], "validation": []},
        "sources": [{"sample": "s", "path": "s.root", "tree": "t", "label": 1,
                     "entry_start": 0, "entry_stop": 1, "selected": 1}],
    }  # fmt: skip
    (tmp_path / "manifest.json").write_text(json.dumps(record))
    manifest = load_manifest(tmp_path)
    assert manifest.learning_task() == Task()
    assert manifest.factors() == [1.0, 1.0]
    assert manifest.weights == {}


def test_weight_records_merge_and_balance_under_each_negative_weight_choice():
    def part(events: int, total: float, negative: int, negative_sum: float) -> dict[str, Any]:
        values = {"events": events, "sum": total, "negative_events": negative,
                  "negative_sum": negative_sum, "train_events": events, "train_sum": total,
                  "train_negative_sum": negative_sum}  # fmt: skip
        return weight_record(values)

    one = {"branch": "w", "samples": {}, "classes": {"a": part(10, 8.0, 1, -1.0)}}
    two = {"branch": "w", "samples": {}, "classes": {"a": part(10, 8.0, 1, -1.0)}}
    two["classes"]["b"] = part(5, 2.0, 0, 0.0)
    merged = merge_weights([one, two])
    a = merged["classes"]["a"]
    assert (a["events"], a["negative_events"], a["sum"], a["negative_sum"]) == (20, 2, 16.0, -2.0)
    assert a["negative_share"] == pytest.approx(2.0 / 20.0)  # |w| sums to 16 + 2 * 2
    assert class_factors(merged, ("a", "b"), balance=False) == [1.0, 1.0]
    # keep: sums 16 and 2; abs: 20 and 2; zero: 18 and 2. Each balanced to their mean.
    assert class_factors(merged, ("a", "b"), True) == pytest.approx([9 / 16, 9 / 2])
    assert class_factors(merged, ("a", "b"), True, "abs") == pytest.approx([11 / 20, 11 / 2])
    assert class_factors(merged, ("a", "b"), True, "zero") == pytest.approx([10 / 18, 10 / 2])
    merged["classes"]["b"] = part(5, -1.0, 5, -1.0)
    with pytest.raises(ConversionError, match="class 'b' has a training sum of weights of -1"):
        class_factors(merged, ("a", "b"), True)
