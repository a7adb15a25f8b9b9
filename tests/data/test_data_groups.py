"""Grid-parallel conversion: grouping of input files, group jobs, and the gathered manifest."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from gridtrain.cli import main
from gridtrain.config import DatasetConfig
from gridtrain.data.convert import convert
from gridtrain.data.gather import gather
from gridtrain.data.groups import group_count, group_dir, plan_group
from gridtrain.data.manifest import load_manifest, verify_local
from gridtrain.data.shards import ShardReader
from gridtrain.errors import ConfigError, ShardError
from tests.conftest import split_toy, toy_section


def planned(signal: int, background: int, files_per_job: int) -> DatasetConfig:
    section = toy_section(Path("in"), Path("out"), files_per_job=files_per_job)
    section["samples"][0]["files"] = [f"s{i}.root" for i in range(signal)]
    section["samples"][1]["files"] = [f"b{i}.root" for i in range(background)]
    return DatasetConfig.from_dict(section)


@pytest.mark.parametrize(("signal", "background", "per_job"), [(7, 3, 2), (3, 7, 1), (5, 5, 2)])
def test_every_group_takes_a_slice_of_every_sample_and_every_entry_is_read_once(
    signal, background, per_job
):
    cfg = planned(signal, background, per_job)
    count = group_count(cfg)
    assert count == -(-max(signal, background) // per_job)
    groups = [plan_group(cfg, k) for k in range(count)]
    for s, sample in enumerate(cfg.samples):
        parts: dict[str, list[tuple[int, int]]] = {}
        for group in groups:
            slices = group.samples[s]
            assert slices, f"group {group.index} has no {sample.name} file"
            assert sum(sl.parts == 1 for sl in slices) <= per_job
            for sl in slices:
                parts.setdefault(sl.path, []).append((sl.part, sl.parts))
        assert sorted(parts) == sorted(sample.files)  # every file, each read in whole
        for pieces in parts.values():
            n = pieces[0][1]
            assert sorted(pieces) == [(i, n) for i in range(n)]
    # Proportional: a sample with enough files gives each group every n-th of them.
    big = max(range(2), key=lambda s: len(cfg.samples[s].files))
    files = cfg.samples[big].files
    assert [[sl.path for sl in g.samples[big]] for g in groups] == [
        list(files[k::count]) for k in range(count)
    ]


def test_grouping_and_seeds_are_deterministic():
    cfg = planned(7, 3, 2)
    assert [plan_group(cfg, k) for k in range(4)] == [
        plan_group(planned(7, 3, 2), k) for k in range(4)
    ]
    assert [plan_group(cfg, k).shuffle_seed for k in range(4)] == [(42, k) for k in range(4)]
    assert plan_group(cfg, 2).paths == ["s2.root", "s6.root", "b1.root"]
    with pytest.raises(ConfigError, match="groups 0 to 3"):
        plan_group(cfg, 4)


def test_files_per_job_needs_event_id_branches():
    section = toy_section(Path("in"), Path("out"), files_per_job=1, event_id=[])
    with pytest.raises(ConfigError, match=r"files_per_job needs dataset\.event_id"):
        DatasetConfig.from_dict(section)


@pytest.fixture(scope="module")
def split_files(toy_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    return split_toy(toy_dir, tmp_path_factory.mktemp("split"), 3)


def grouped_config(toy_dir: Path, out: Path, files: dict[str, list[str]], **kw) -> DatasetConfig:
    section = toy_section(toy_dir, out, files_per_job=1, **kw)
    for sample in section["samples"]:
        sample["files"] = files[sample["name"]]
    return DatasetConfig.from_dict(section)


@pytest.fixture(scope="module")
def one_job(toy_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("one-job")
    return out, convert(DatasetConfig.from_dict(toy_section(toy_dir, out)))


@pytest.fixture(scope="module")
def grouped(toy_dir, split_files, tmp_path_factory) -> tuple[Path, DatasetConfig]:
    """The toy in 3 files per sample, converted as 3 group jobs and gathered."""
    out = tmp_path_factory.mktemp("grouped")
    cfg = grouped_config(toy_dir, out, split_files)
    for k in range(group_count(cfg)):
        convert(cfg, file_group=plan_group(cfg, k))
    gather(cfg)
    return out, cfg


def event_ids(folder: Path, manifest, split: str) -> Counter[tuple[int, ...]]:
    ids: Counter[tuple[int, ...]] = Counter()
    for entry in manifest.shards[split]:
        with ShardReader(folder / entry.path) as reader:
            data = reader.read()
        ids.update(zip(data["label"].tolist(), *data["event_id"].T.tolist(), strict=True))
    return ids


def test_gathered_groups_hold_the_events_of_a_one_job_conversion(one_job, grouped):
    (one_dir, one), (out, cfg) = one_job, grouped
    manifest = load_manifest(out)
    assert group_count(cfg) == 3
    for split in ("train", "validation"):
        assert manifest.events(split) == one.events(split)
        assert event_ids(out, manifest, split) == event_ids(one_dir, one, split)
    assert verify_local(manifest, out) == []
    # The same values merged in other blocks: float32 deviations squared and summed in float64
    # agree to far better than float32's own 1e-7.
    for name, stats in one.stats.items():
        for key in ("count", "mean", "std", "min", "max"):
            np.testing.assert_allclose(manifest.stats[name][key], stats[key], rtol=1e-7)
    assert {e.path.rsplit("/", 1)[0] for e in manifest.shards["train"]} == {
        f"groups/g000{k}" for k in range(3)
    }
    assert len(manifest.sources) == 6
    assert manifest.config_hash == cfg.content_hash()


def test_each_group_is_class_mixed(grouped):
    out, _ = grouped
    for k in range(3):
        group = load_manifest(group_dir(out, k))
        labels = Counter(label for label, *_ in event_ids(group_dir(out, k), group, "train"))
        assert set(labels) == {0, 1}
        assert min(labels.values()) > 0.4 * sum(labels.values())


def test_a_file_shared_by_groups_is_read_in_slices(toy_dir, split_files, tmp_path, one_job):
    # Signal in 3 files, background in its one: the background file is read a third per group.
    files = {"signal": split_files["signal"], "background": [str(toy_dir / "background.root")]}
    cfg = grouped_config(toy_dir, tmp_path, files)
    groups = [plan_group(cfg, k) for k in range(3)]
    assert [g.samples[1][0].part for g in groups] == [0, 1, 2]
    for group in groups:
        convert(cfg, file_group=group)
    manifest = gather(cfg)
    one_dir, one = one_job
    for split in ("train", "validation"):
        assert event_ids(tmp_path, manifest, split) == event_ids(one_dir, one, split)
    ranges = [(s.entry_start, s.entry_stop) for s in manifest.sources if s.sample == "background"]
    assert ranges == [(0, 2000), (2000, 4000), (4000, 6000)]


def copy_groups(source: Path, target: Path) -> Path:
    shutil.copytree(source / "groups", target / "groups")
    return target


def test_gather_names_a_missing_group_and_how_to_convert_it(grouped, tmp_path):
    out, cfg = grouped
    folder = copy_groups(out, tmp_path)
    (group_dir(folder, 1) / "manifest.json").unlink()
    with pytest.raises(
        ShardError, match=r"g0001/manifest\.json: group 1 of 3 has no manifest; .*--group 1"
    ):
        gather(cfg, folder)
    assert not (folder / "manifest.json").exists()


def test_gather_refuses_groups_of_another_layout_or_config(grouped, tmp_path):
    out, cfg = grouped
    folder = copy_groups(out, tmp_path)
    path = group_dir(folder, 2) / "manifest.json"
    raw = json.loads(path.read_text())
    raw["features"] = raw["features"][:-1]
    path.write_text(json.dumps(raw))
    with pytest.raises(
        ShardError,
        match=r"g0002/manifest\.json: field 'features' differs from .*g0000/manifest\.json's",
    ):
        gather(cfg, folder)
    raw["config_hash"] = "0" * 64
    path.write_text(json.dumps(raw))
    with pytest.raises(ShardError, match="group 2 was converted from another dataset config"):
        gather(cfg, folder)


def test_cli_converts_every_group_then_gathers(toy_dir, split_files, tmp_path, capsys):
    section = toy_section(toy_dir, tmp_path / "ds", files_per_job=1)
    for sample in section["samples"]:
        sample["files"] = split_files[sample["name"]]
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"dataset": section}))
    assert main(["convert", "-c", str(config), "--group", "1"]) == 0
    assert "groups/g0001/manifest.json" in capsys.readouterr().out
    assert main(["gather", "-c", str(config)]) == 2
    assert "group 0 of 3 has no manifest" in capsys.readouterr().err
    assert main(["convert", "-c", str(config)]) == 0
    assert verify_local(load_manifest(tmp_path / "ds"), tmp_path / "ds") == []
    assert main(["gather", "-c", str(config)]) == 0
    assert f"{tmp_path}/ds/manifest.json" in capsys.readouterr().out
