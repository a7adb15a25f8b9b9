"""Tuning: the same trials serially and P at a time; TPE against random search at equal budget.

In one run, on a small toy dataset (12,000 events, shards of 1000; a tiny MLP, 2 epochs, one local
worker per trial), each study a real ``gridtrain tune`` in a fresh process:

  serial      N trials, ``tune.parallel: 1``
  parallel    the same N trials (the grid sampler, so both runs train the same parameter sets),
              ``tune.parallel: P``; the speed-up is serial's wall time over this one's
  table       every point of a small grid (learning rate x hidden layers) trained once; TPE and
              random search then run ask-and-tell over that table (the objective looked up, not
              trained again) for ``--seeds`` seeds at a budget of ``--budget`` trials, and the mean
              best validation loss of each is printed, beside the grid's true best.

Trial wall time is dominated by start-up (TensorFlow imported by the driver and the worker), so
the speed-up says how well the machine's cores take P trainings at once. The last line is the
parallel speed-up.

    python benchmarks/tune.py                 # N=4, P=2: 8-15 min on 2 (shared) cores
    python benchmarks/tune.py --quick         # N=2, P=2, no table and search: the speed-up only
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

LEARNING_RATES = [1e-4, 1e-3, 1e-2, 1e-1]
HIDDEN = [[8], [32, 32]]


def dataset(work: Path) -> dict[str, Any]:
    from gridtrain.config import DatasetConfig
    from gridtrain.data.convert import convert
    from gridtrain.data.toy import JET_FEATURES, write_toy_dataset

    toy, out = work / "toy", work / "dataset"
    section = {
        "name": "bench-tune",
        "tree": "events",
        "samples": [
            {"name": "signal", "files": [str(toy / "signal.root")], "label": 1},
            {"name": "background", "files": [str(toy / "background.root")], "label": 0},
        ],
        "features": list(JET_FEATURES),
        "weight": "weight",
        "validation_fraction": 0.25,
        "shard_events": 1000,
        "outdir": str(out),
    }
    if not (out / "manifest.json").exists():
        write_toy_dataset(toy, 12_000, seed=7)
        convert(DatasetConfig.from_dict(section), out)
    return section


def study(work: Path, name: str, data: dict[str, Any], **tune: Any) -> tuple[float, Path]:
    """Run one ``gridtrain tune``; its wall time and folder."""
    run_dir = work / name
    shutil.rmtree(run_dir, ignore_errors=True)
    config = {
        "dataset": data,
        "train": {
            "epochs": 2,
            "batch_size": 256,
            "seed": 3,
            "model": {"name": "mlp", "params": {"hidden": [8]}},
            "early_stopping": {"patience": None},
        },
        "tune": {
            "space": {
                "learning_rate": {"type": "categorical", "choices": LEARNING_RATES},
                "model.params.hidden": {"type": "categorical", "choices": HIDDEN},
            },
            "workers": 1,
            "pruner": "none",
            "sampler": "grid",
            "seed": 1,
            **tune,
        },
    }
    path = work / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    started = time.monotonic()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gridtrain",
            "-q",
            "tune",
            "-c",
            str(path),
            "--run-dir",
            str(run_dir),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return time.monotonic() - started, run_dir


def table(run_dir: Path) -> dict[tuple[float, str], float]:
    summary = json.loads((run_dir / "trials.json").read_text())
    return {
        (row["params"]["learning_rate"], json.dumps(row["params"]["model.params.hidden"])): row[
            "value"
        ]
        for row in summary["attempts"]
        if row["state"] == "complete"
    }


def search(values: dict[tuple[float, str], float], sampler: Any, budget: int) -> float:
    """Ask-and-tell over the table: the best objective found within ``budget`` trials."""
    import optuna

    study = optuna.create_study(direction="minimize", sampler=sampler)
    hidden = [json.dumps(h) for h in HIDDEN]
    for _ in range(budget):
        trial = study.ask()
        key = (
            trial.suggest_categorical("learning_rate", LEARNING_RATES),
            trial.suggest_categorical("hidden", hidden),
        )
        study.tell(trial, values[key])
    return float(study.best_value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=4, help="N, trials in each timed study")
    parser.add_argument("--parallel", type=int, default=2, help="P, trials at once")
    parser.add_argument("--budget", type=int, default=4, help="trials for TPE and random")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--workdir", default=".bench/tune")
    parser.add_argument(
        "--quick", action="store_true", help="2 trials each way; skip the table and the search"
    )
    args = parser.parse_args()
    if args.quick:
        args.trials = 2
    work = Path(args.workdir).absolute()
    work.mkdir(parents=True, exist_ok=True)
    data = dataset(work)

    serial, _ = study(work, "serial", data, trials=args.trials, parallel=1)
    parallel, _ = study(work, "parallel", data, trials=args.trials, parallel=args.parallel)
    print(f"serial    {args.trials} trials, 1 at a time: {serial:7.1f} s")
    print(f"parallel  {args.trials} trials, {args.parallel} at a time: {parallel:7.1f} s")
    if args.quick:
        print("table and search skipped (--quick)")
        print(f"parallel speed-up ({args.parallel} at a time): {serial / parallel:.2f}x")
        return

    points = len(LEARNING_RATES) * len(HIDDEN)
    _, grid_dir = study(work, "table", data, trials=points, parallel=args.parallel)
    values = table(grid_dir)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    tpe = [
        search(values, optuna.samplers.TPESampler(seed=s, n_startup_trials=2), args.budget)
        for s in range(args.seeds)
    ]
    rand = [
        search(values, optuna.samplers.RandomSampler(seed=s), args.budget)
        for s in range(args.seeds)
    ]
    best = min(values.values())
    print(f"table     {len(values)} grid points trained; the best validation loss {best:.4f}")
    print(
        f"search    {args.budget} of {points} points, mean over {args.seeds} seeds: "
        f"TPE {statistics.mean(tpe):.4f}, random {statistics.mean(rand):.4f} (validation loss)"
    )
    print(f"parallel speed-up ({args.parallel} at a time): {serial / parallel:.2f}x")


if __name__ == "__main__":
    main()
