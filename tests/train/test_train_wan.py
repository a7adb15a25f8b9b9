"""Training across a (simulated) wide-area link: the workers reach the PS through a shaping relay.

Also the synchronous exchange path (``train.overlap: false``) end to end, and bf16 on the wire.

``python -m tests.wan_relay train`` runs the driver with a local executor that puts a
``ShapingRelay`` (20 ms one way, 200 Mb/s, jitter) in front of the parameter server and hands the
workers the relay's address instead of the server's, as a grid job dials a login host across a
continent. The lease guarantees must be those of loopback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from train_helpers import (
    completions,
    lost_lease_updates,
    read_jsonl,
    train_shards,
    write_config,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_training_through_a_wan_relay_keeps_the_lease_guarantees(
    tmp_path: Path, toy_dir: Path, toy_dataset: Path
) -> None:
    config = write_config(
        tmp_path / "wan.yaml",
        toy_dir,
        toy_dataset,
        epochs=1,
        workers=2,
        algorithm={"algorithm": "downpour", "every": 2},
        early_stopping={"patience": None},
        wire="bf16",  # what a narrow link is for
        overlap=False,  # overlap on, the default, trains in test_train_runs.py
    )
    run_dir = tmp_path / "wan"
    command = [sys.executable, "-m", "tests.wan_relay", "train", "-c", str(config)]
    command += ["--run-dir", str(run_dir), "--latency", "0.02", "--bandwidth", "200e6"]
    command += ["--jitter", "0.002"]
    result = subprocess.run(
        command,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-3000:]

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 1
    # synchronous exchanges: the workers waited out every round trip and overlapped nothing
    for record in (r for r in read_jsonl(run_dir / "history.jsonl") if r["type"] == "shard"):
        assert 0 < record["exchange_seconds"] < record["seconds"]
        assert record["overlapped_seconds"] == 0
    assert 0 < metrics["ps_wait_fraction"] < 1
    assert metrics["ps_overlap_fraction"] == 0
    assert metrics["ps_time_fraction"] == metrics["ps_wait_fraction"]
    assert completions(run_dir) == {0: train_shards(toy_dataset)}  # every shard exactly once
    assert lost_lease_updates(run_dir) == 0  # each update under exactly one completed lease

    relay = json.loads((run_dir / "relay.json").read_text())
    assert relay["connections"] >= 2  # both workers went through the link...
    with np.load(run_dir / "initial.npz") as initial:
        model_bytes = sum(initial[name].nbytes for name in initial.files)
    updates = max(r["version"] for r in read_jsonl(run_dir / "history.jsonl") if "version" in r)
    assert updates > 0
    # ...and so did every push and pull, at about half the float32 model's bytes each (bf16)
    for direction in ("bytes_up", "bytes_down"):
        assert updates * model_bytes * 0.45 <= relay[direction] <= updates * model_bytes * 0.75
