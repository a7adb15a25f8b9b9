"""Shared pieces of the training benchmarks: a private toy dataset and timed ``gridtrain train``.

Layer: benchmarks, helpers. Builds (once, then reuses) a toy dataset converted with the repository's
``dataset`` section but its own sizes, under the benchmark's work folder, so a concurrent
``make demo`` never changes the data under a measurement. Runs ``gridtrain train`` as a fresh
process and times it from the launch: validation AUC per epoch against seconds since launch, from
``history.jsonl``'s absolute ``unix_time``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
QUIET_TF = {"TF_CPP_MIN_LOG_LEVEL": "2"}  # the same for every child: both sides log alike


def toy_dataset(work: Path, events: int, shard_events: int) -> dict[str, Any]:
    """The ``dataset`` section of ``events`` toy events in shards of ``shard_events``.

    The toy ROOT files and the shards are written on first use and reused while the manifest's
    config hash matches (delete ``work`` to start over).
    """
    from gridtrain.config import DatasetConfig
    from gridtrain.data.convert import convert
    from gridtrain.data.manifest import load_manifest
    from gridtrain.data.toy import write_toy_dataset

    toy = work / f"toy-{events}"
    if not (toy / "background.root").exists():
        write_toy_dataset(toy, events, seed=1)
    section = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["dataset"]
    section["samples"][0]["files"] = [str((toy / "signal.root").resolve())]
    section["samples"][1]["files"] = [str((toy / "background.root").resolve())]
    section["shard_events"] = shard_events
    section["chunk_events"] = min(section["chunk_events"], shard_events)
    section["outdir"] = str((work / f"dataset-{events}-{shard_events}").resolve())
    cfg = DatasetConfig.from_dict(section)
    manifest_path = Path(cfg.outdir) / "manifest.json"
    if not manifest_path.exists() or load_manifest(manifest_path).config_hash != cfg.content_hash():
        convert(cfg)
    return section


def train_section(
    model: str,
    params: dict[str, Any],
    epochs: int,
    batch_size: int,
    learning_rate: float,
    algorithm: dict[str, Any],
    seed: int = 1,
) -> dict[str, Any]:
    """A ``train`` section with early stopping off: every run trains exactly ``epochs``."""
    return {
        "model": {"name": model, "params": params},
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "seed": seed,
        "algorithm": algorithm,
        "early_stopping": {"patience": None},
    }


@dataclass
class TimedRun:
    """One timed training run: times are seconds since its process was launched."""

    name: str
    wall: float
    curve: list[tuple[float, float]]  # (seconds since launch, validation AUC) per epoch
    first_step: float | None = None  # when training began
    events_per_s: float = 0.0
    ps_share: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def final_auc(self) -> float:
        return self.curve[-1][1] if self.curve else float("nan")

    def time_to(self, target: float) -> float | None:
        """Seconds from launch to the first validation AUC >= ``target`` (None: never)."""
        return next((seconds for seconds, auc in self.curve if auc >= target), None)


def run_gridtrain(
    name: str,
    dataset: dict[str, Any],
    train: dict[str, Any],
    run_dir: Path,
    workers: int,
    launcher: tuple[str, ...] = ("gridtrain", "train"),
    extra: tuple[str, ...] = (),
    program: list[str] | None = None,
) -> TimedRun:
    """``gridtrain train`` in a fresh process; the curve comes from its history.jsonl.

    ``launcher`` is the module and subcommand run with ``python -m`` (``tests.wan_relay train``
    trains through a shaping relay), ``program`` a whole command line to run instead (a
    benchmark's own launcher), ``extra`` the arguments after the common ones.
    """
    run_dir = run_dir.resolve()
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    config = run_dir.parent / f"{run_dir.name}.yaml"
    config.write_text(yaml.safe_dump({"dataset": dataset, "train": train}, sort_keys=False))
    command = [*(program or [sys.executable, "-m", *launcher]), "-c", str(config)]
    command += ["--run-dir", str(run_dir), "--workers", str(workers), *extra]
    log_path = run_dir.parent / f"{run_dir.name}.log"
    with open(log_path, "wb") as log:
        launch = time.time()
        code = subprocess.run(
            command,
            check=False,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            env={**os.environ, **QUIET_TF},
        ).returncode
        wall = time.time() - launch
    if code != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(
            f"{name}: gridtrain train exited with {code}; see {log_path}:\n" + "\n".join(tail)
        )
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    shards = [r for r in history if r["type"] == "shard"]
    curve = [(r["unix_time"] - launch, r["val_auc"]) for r in history if r["type"] == "epoch"]
    return TimedRun(
        name=name,
        wall=wall,
        curve=curve,
        first_step=min(r["unix_time"] - r["seconds"] for r in shards) - launch if shards else None,
        events_per_s=sum(w["events_per_s"] for w in metrics["workers"]),
        ps_share=metrics["ps_time_fraction"],
        metrics=metrics,
    )


def fmt(value: float | None, spec: str = ".1f", missing: str = "-") -> str:
    return missing if value is None else format(value, spec)
