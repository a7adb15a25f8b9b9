"""Push and pull between local folders: the same code path as root://, no server needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from stage_helpers import fake_dataset, flip_byte, identity

from gridtrain.config import StageConfig, load_schema
from gridtrain.data.manifest import load_manifest, verify_local
from gridtrain.errors import ChecksumMismatchError, ConfigError, StageError
from gridtrain.stage.check import check
from gridtrain.stage.dataset import pull, push
from gridtrain.stage.stagein import StageIn
from gridtrain.stage.transfer import TransferOptions

FAST = TransferOptions(parallel=2, timeout=2, retries=1, backoff=0.01)


def test_push_to_a_file_url_and_pull_back(tmp_path):
    manifest = fake_dataset(tmp_path / "ds", [200_000, 100_000, 50_000])
    summary = push(tmp_path / "ds", f"file://{tmp_path}/store/ds", FAST)
    assert (summary.copied, summary.kept) == (3, 0)
    assert summary.destination == f"{tmp_path}/store/ds/manifest.json"
    store = tmp_path / "store" / "ds"
    assert verify_local(load_manifest(store), store) == []
    assert sorted(p.name for p in store.iterdir()) == sorted(
        [*(e.path for v in manifest.shards.values() for e in v), "manifest.json"]
    )
    pulled = pull(str(store), tmp_path / "back", FAST)
    assert pulled.copied == 3
    assert (tmp_path / "back" / "manifest.json").read_bytes() == (
        store / "manifest.json"
    ).read_bytes()


def test_a_grouped_dataset_keeps_its_subfolders_through_push_and_pull(tmp_path):
    paths = [f"groups/g000{k}/train-00000.h5" for k in range(3)]  # one file name, three groups
    fake_dataset(tmp_path / "ds", [30_000, 20_000, 10_000], paths=paths)
    push(tmp_path / "ds", str(tmp_path / "store"), FAST)
    pull(str(tmp_path / "store"), tmp_path / "back", FAST)
    for folder in (tmp_path / "store", tmp_path / "back"):
        manifest = load_manifest(folder)
        assert [e.path for v in manifest.shards.values() for e in v] == paths
        assert verify_local(manifest, folder) == []
        assert not list(folder.rglob(".*.part"))
    # A manifest naming its shards by full path or URL: those below its folder keep their place.
    push(tmp_path / "ds", str(tmp_path / "by-url"), FAST, url_paths=True)
    pull(str(tmp_path / "by-url"), tmp_path / "back-by-url", FAST)
    manifest = load_manifest(tmp_path / "back-by-url")
    assert [e.path for v in manifest.shards.values() for e in v] == paths


def test_rerun_keeps_complete_shards_and_replaces_a_corrupt_one(tmp_path):
    fake_dataset(tmp_path / "ds", [100_000] * 4)
    store = tmp_path / "store"
    push(tmp_path / "ds", str(store), FAST)
    before = {p.name: identity(p) for p in store.glob("*.h5")}
    flip_byte(store / "train-00002.h5")
    summary = push(tmp_path / "ds", str(store), FAST)
    assert (summary.copied, summary.kept) == (1, 3)
    for name, ident in before.items():
        if name != "train-00002.h5":
            assert identity(store / name) == ident
    assert verify_local(load_manifest(store), store) == []


def test_a_corrupt_local_shard_is_not_pushed_and_the_error_says_convert_again(tmp_path):
    manifest = fake_dataset(tmp_path / "ds", [100_000] * 2)
    flip_byte(tmp_path / "ds" / "train-00000.h5")
    with pytest.raises(ChecksumMismatchError, match="convert again") as info:
        push(tmp_path / "ds", str(tmp_path / "store"), FAST)
    assert info.value.expected == manifest.shards["train"][0].adler32
    assert not (tmp_path / "store" / "train-00000.h5").exists()
    assert not (tmp_path / "store" / "manifest.json").exists()


def test_a_truncated_local_shard_is_refused_before_copying(tmp_path):
    fake_dataset(tmp_path / "ds", [100_000] * 2)
    with open(tmp_path / "ds" / "train-00000.h5", "r+b") as f:
        f.truncate(10)
    with pytest.raises(StageError, match=r"10 bytes, the manifest says 100000"):
        push(tmp_path / "ds", str(tmp_path / "store"), FAST)


def test_a_manifest_for_other_data_is_retracted_before_its_shards_are_replaced(tmp_path):
    fake_dataset(tmp_path / "old", [100_000] * 3, seed=1)
    fake_dataset(tmp_path / "new", [100_000] * 3, seed=2)
    store = tmp_path / "store"
    push(tmp_path / "old", str(store), FAST)
    (tmp_path / "new" / "train-00001.h5").unlink()  # the new push will fail halfway
    with pytest.raises(StageError, match="no such file"):
        push(tmp_path / "new", str(store), TransferOptions(parallel=1, retries=0))
    assert not (store / "manifest.json").exists()  # the old one no longer vouches for the shards


def test_pull_of_a_folder_without_manifest_says_what_to_do(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(StageError, match=r"no manifest there.*gridtrain stage push"):
        pull(str(tmp_path / "empty"), tmp_path / "dest", FAST)


def test_pull_refuses_a_file_that_is_not_a_manifest(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "manifest.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(StageError, match=r"src/manifest\.json: not a gridtrain manifest"):
        pull(str(tmp_path / "src"), tmp_path / "dest", FAST)


def test_local_check_reports_space_and_path(tmp_path):
    report = check(str(tmp_path), 2)
    assert not report.remote
    assert report.free_bytes is not None
    assert report.free_bytes > 0
    assert report.path_state == "a folder"
    assert "adler32 computed locally" in "\n".join(report.lines())
    assert check(str(tmp_path / "new" / "sub"), 2).path_state.startswith("missing")


def test_defaults_in_code_are_the_packaged_schema_defaults():
    schema = load_schema()["properties"]["stage"]["properties"]
    stage = StageConfig.from_dict({})
    assert stage.url is None
    options = TransferOptions.from_config(stage)
    assert options == TransferOptions()  # the dataclass defaults restate the schema's
    assert options.parallel == schema["parallel"]["default"]
    stagein = StageIn.__init__.__kwdefaults__
    assert stagein["timeout"] == schema["timeout"]["default"]
    assert stagein["retries"] == schema["retries"]["default"]


def test_a_bad_stage_section_names_the_key():
    with pytest.raises(ConfigError, match=r"stage\.parallel: 0 is less than the minimum"):
        StageConfig.from_dict({"parallel": 0})
    with pytest.raises(ConfigError, match="'paralel' was unexpected"):
        StageConfig.from_dict({"paralel": 2})


def test_shard_names_must_be_unique_at_the_destination(tmp_path):
    manifest = fake_dataset(tmp_path / "ds", [1000, 1000])
    raw = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    other = tmp_path / "elsewhere"  # a shard outside the dataset folder is copied by its name
    other.mkdir()
    (other / "train-00000.h5").write_bytes((tmp_path / "ds" / "train-00000.h5").read_bytes())
    raw["shards"]["validation"][0]["path"] = str(other / "train-00000.h5")
    raw["shards"]["validation"][0]["adler32"] = manifest.shards["train"][0].adler32
    (tmp_path / "ds" / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(StageError, match="must be unique"):
        push(tmp_path / "ds", str(tmp_path / "store"), FAST)
    assert not Path(tmp_path / "store" / "manifest.json").exists()
