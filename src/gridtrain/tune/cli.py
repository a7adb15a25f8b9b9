"""``gridtrain tune`` (and ``tune status``, ``tune cancel``): thin commands over the tune package.

The study's own status and cancel are subcommands of ``tune`` (``gridtrain tune status RUN_DIR``),
the shape of ``gridtrain status`` / ``gridtrain cancel`` for one training, one level down: a study
folder is not a run directory, and each trial's run directory still answers to those two.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    tune = subparsers.add_parser(
        "tune",
        help="search hyper-parameters: many trainings, pruned early, best config written",
        description="Run the config's tune section: each trial is a gridtrain train of the "
        "train section with the trial's values (its own parameter server and workers), "
        "unpromising ones stopped after an epoch. Writes trials.csv, trials.json, best.yaml "
        "and plots to RUN_DIR. Ctrl-C stops the trainings; continue with --resume RUN_DIR. "
        "With --detach the tuner runs in the background: follow it with `gridtrain tune status "
        "RUN_DIR`, stop it with `gridtrain tune cancel RUN_DIR`.",
    )
    tune.add_argument("-c", "--config", default="config/config.yaml", help="YAML config")
    tune.add_argument("--run-dir", type=Path, help="the study's folder (default: tune.run_dir)")
    tune.add_argument("--trials", type=int, help="override tune.trials")
    tune.add_argument("--parallel", type=int, help="override tune.parallel")
    tune.add_argument(
        "--resume", type=Path, metavar="RUN_DIR", help="continue a stopped or killed study"
    )
    tune.add_argument(
        "--detach",
        action="store_true",
        help="check and create the study here, then tune in the background (survives a closed "
        "terminal; output in RUN_DIR/tuner.log)",
    )
    tune.set_defaults(func=_tune)
    commands = tune.add_subparsers(dest="tune_command", metavar="{status,cancel}")

    status = commands.add_parser(
        "status",
        help="where a study stands: tuner, trials by state, best so far, running trials' epochs",
        description="Read a study folder (its journal, tuner.json and the trials' run "
        "directories) and print the tuner's state, the trials done, running, pruned and failed, "
        "the best so far and the epochs of each running trial. A tuner that was killed shows as "
        "stopped, to continue with gridtrain tune --resume RUN_DIR.",
    )
    status.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=_status)

    cancel = commands.add_parser(
        "cancel",
        help="stop a study: the tuner and every running trial's training (and its pool jobs)",
        description="Send the study's tuner SIGTERM (it stops each running training, whose "
        "driver removes its worker jobs, and marks those trials to be trained again), then "
        "stop any training a killed tuner left. Continue later with gridtrain tune --resume "
        "RUN_DIR.",
    )
    cancel.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    cancel.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait for the tuner (300)"
    )
    cancel.set_defaults(func=_cancel)


def _tune(args: argparse.Namespace) -> int:
    from gridtrain.config import load_config
    from gridtrain.tune.tuner import prepare, resume, tune

    if args.resume is not None:
        if args.detach:
            return _detached(args.resume)
        return resume(args.resume)
    config = load_config(args.config)
    for key in ("trials", "parallel"):
        if getattr(args, key) is not None:
            config["tune"][key] = getattr(args, key)
    if args.detach:
        files, _settings = prepare(config, args.run_dir)
        return _detached(files.path)
    return tune(config, args.run_dir)


def _detached(run_dir: Path) -> int:
    from gridtrain.tune.control import TUNER_LOG, detach

    pid = detach(run_dir)
    print(
        f"gridtrain tune: tuning in the background (tuner pid {pid}, output in "
        f"{run_dir}/{TUNER_LOG}); follow it with `gridtrain tune status {run_dir}`, stop it "
        f"with `gridtrain tune cancel {run_dir}`"
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    from gridtrain.tune.control import format_status, study_status

    status = study_status(args.run_dir)
    if args.json:
        print(json.dumps(status, indent=1, sort_keys=True))
    else:
        print(format_status(status))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from gridtrain.tune.control import cancel

    print(cancel(args.run_dir, timeout=args.timeout))
    return 0
