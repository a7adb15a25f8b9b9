"""``gridtrain tune``: a thin command over ``gridtrain.tune.tuner``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    tune = subparsers.add_parser(
        "tune",
        help="search hyper-parameters: many trainings, pruned early, best config written",
        description="Run the config's tune section: each trial is a gridtrain train of the "
        "train section with the trial's values (its own parameter server and workers), "
        "unpromising ones stopped after an epoch. Writes trials.csv, trials.json, best.yaml "
        "and plots to RUN_DIR. Ctrl-C stops the trainings; continue with --resume RUN_DIR.",
    )
    tune.add_argument("-c", "--config", default="config/config.yaml", help="YAML config")
    tune.add_argument("--run-dir", type=Path, help="the study's folder (default: tune.run_dir)")
    tune.add_argument("--trials", type=int, help="override tune.trials")
    tune.add_argument("--parallel", type=int, help="override tune.parallel")
    tune.add_argument(
        "--resume", type=Path, metavar="RUN_DIR", help="continue a stopped or killed study"
    )
    tune.set_defaults(func=_tune)


def _tune(args: argparse.Namespace) -> int:
    from gridtrain.config import load_config
    from gridtrain.tune.tuner import resume, tune

    if args.resume is not None:
        return resume(args.resume)
    config = load_config(args.config)
    for key in ("trials", "parallel"):
        if getattr(args, key) is not None:
            config["tune"][key] = getattr(args, key)
    return tune(config, args.run_dir)
