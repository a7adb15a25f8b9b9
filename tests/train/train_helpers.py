"""Helpers for the training tests: configs over the toy dataset, running gridtrain, lease logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import toy_section


def dataset_section(toy_dir: Path, out: Path) -> dict[str, Any]:
    return toy_section(toy_dir, out, shard_events=1000, step_events=3000)


def write_config(path: Path, toy_dir: Path, dataset: Path, **train: Any) -> Path:
    """A config file over the converted toy dataset with ``train`` settings."""
    section: dict[str, Any] = {"epochs": 4, "workers": 1, "batch_size": 128, "seed": 3}
    section.update(train)
    config = {"dataset": dataset_section(toy_dir, dataset), "train": section}
    path.write_text(yaml.safe_dump(config))
    return path


def gridtrain(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gridtrain", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


def start_gridtrain(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gridtrain", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def completions(run_dir: Path) -> dict[int, Counter[str]]:
    """Training shards completed per epoch, from the lease log."""
    done: dict[int, Counter[str]] = {}
    for record in read_jsonl(run_dir / "leases.jsonl"):
        if record["event"] == "completed" and record["kind"] == "train":
            done.setdefault(record["epoch"], Counter())[record["shard"]] += 1
    return done


def train_shards(dataset: Path) -> Counter[str]:
    manifest = json.loads((dataset / "manifest.json").read_text())
    return Counter(entry["path"] for entry in manifest["shards"]["train"])


def lost_lease_updates(run_dir: Path) -> int:
    """Check the documented guarantee against the workers' own record; the updates kept from
    leases that were lost.

    Every shard completes exactly once per epoch (``completions``); the updates a worker pushed
    under a lease it then lost stay in the center. So: each completed lease's update count on the
    server side equals what its worker reported for that shard (history.jsonl), and every update
    the center took (its version at the last epoch) is counted under exactly one lease,
    completed or lost.
    """
    leases = read_jsonl(run_dir / "leases.jsonl")
    history = read_jsonl(run_dir / "history.jsonl")
    ended = [r for r in leases if r["kind"] == "train" and r["event"] != "granted"]
    assert all(isinstance(r.get("updates"), int) for r in ended if r["event"] != "refused")
    completed = {(r["epoch"], r["shard"]): r for r in ended if r["event"] == "completed"}
    reported = {(r["epoch"], r["shard"]): r for r in history if r["type"] == "shard"}
    assert completed.keys() == reported.keys()
    for key, record in completed.items():
        assert record["worker"] == reported[key]["worker"], key
        assert record["updates"] == reported[key]["updates"], f"{key}: server and worker differ"
    lost = sum(r["updates"] for r in ended if r["event"] in ("released", "expired"))
    final_version = max(r["version"] for r in history if r["type"] == "epoch")
    assert sum(r["updates"] for r in completed.values()) + lost == final_version
    return lost


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs: a zombie (exited, not yet reaped by its parent) does not."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
