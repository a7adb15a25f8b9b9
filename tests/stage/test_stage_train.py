"""A worker trains from root:// shards: the local manifest names them by URL, nothing is pulled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest
import yaml

from gridtrain.config import DatasetConfig
from gridtrain.data.convert import convert
from gridtrain.data.manifest import load_manifest
from gridtrain.stage.dataset import pull, push
from gridtrain.stage.transfer import TransferOptions
from tests.conftest import toy_section
from tests.train.train_helpers import lost_lease_updates

pytestmark = [pytest.mark.xrootd, pytest.mark.slow]

FAST = TransferOptions(parallel=3, timeout=3, retries=1, backoff=0.05)


def test_training_stages_every_shard_from_the_server(xrootd_server, area, toy_dir, tmp_path):
    local = tmp_path / "converted"
    section = toy_section(toy_dir, local, shard_events=2000, step_events=3000)
    convert(DatasetConfig.from_dict(section), local)
    push(local, xrootd_server.url(area), FAST)

    remote_only = tmp_path / "remote-only"  # a manifest and no shard
    pull(xrootd_server.url(area), remote_only, FAST, manifest_only=True)
    assert sorted(p.name for p in remote_only.iterdir()) == ["manifest.json"]
    manifest = load_manifest(remote_only)
    train_shards = [e.path for e in manifest.shards["train"]]
    assert all(path.startswith(xrootd_server.url(area)) for path in train_shards)

    config = {
        "dataset": {**section, "outdir": str(remote_only)},
        "train": {"epochs": 1, "workers": 1, "batch_size": 256, "seed": 3},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "gridtrain", "train", "-c", str(tmp_path / "config.yaml")]
    result = subprocess.run(
        [*command, "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    leases = [json.loads(line) for line in (run_dir / "leases.jsonl").read_text().splitlines()]
    done = Counter(r["shard"] for r in leases if r["event"] == "completed" and r["kind"] == "train")
    assert done == Counter(train_shards)  # every root:// shard trained on exactly once
    assert lost_lease_updates(run_dir) == 0  # and no lease was lost
    assert sorted(p.name for p in remote_only.iterdir()) == ["manifest.json"]
