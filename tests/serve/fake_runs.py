"""Run directories that no driver trains, for the service's tests: the files it reads, written
by the test (a history.jsonl that grows when the test appends to it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_run(root: Path, name: str, shards: int = 4, epochs: int = 3) -> Path:
    """A run directory as ``gridtrain train`` prepares it, as far as the service reads it."""
    run = root / name
    run.mkdir(parents=True)
    spec = {
        "settings": {"epochs": epochs, "executor": "local", "workers": 1},
        "manifest": {"shards": {"train": [f"train-{i}.npz" for i in range(shards)]}},
    }
    (run / "worker.json").write_text(json.dumps(spec))
    (run / "history.jsonl").write_text("")
    return run


def append_history(run: Path, *records: dict[str, Any]) -> None:
    with open(run / "history.jsonl", "a") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")


def shard(step: int) -> dict[str, Any]:
    """A trained shard's record, as the driver appends it."""
    return {"type": "shard", "epoch": 0, "shard": step, "loss": 1.0 / (step + 1)}
