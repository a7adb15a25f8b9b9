"""``gridtrain train`` and ``gridtrain worker``: thin commands over the train package."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    train = subparsers.add_parser(
        "train",
        help="train the configured model on the converted dataset",
        description="Start the parameter server and the workers, train, and write the run "
        "directory (model.keras, metrics.json, plots). Ctrl-C leaves a checkpoint; continue "
        "with --resume RUN_DIR.",
    )
    train.add_argument("-c", "--config", default="config/config.yaml", help="YAML config")
    train.add_argument("--run-dir", type=Path, help="output folder (default: train.run_dir)")
    train.add_argument("--workers", type=int, help="number of workers (default: train.workers)")
    train.add_argument(
        "--executor", choices=("local",), help="where workers run (default: train.executor)"
    )
    train.add_argument("--epochs", type=int, help="override train.epochs")
    train.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a stopped run")
    train.set_defaults(func=_train)

    worker = subparsers.add_parser(
        "worker",
        help="one training worker (started by the executor)",
        description="Train a model replica on leased shards, exchanging with the parameter "
        "server. Executors start this; run it by hand only to add a worker to a running "
        "training (elastic).",
    )
    worker.add_argument("--spec", type=Path, required=True, help="worker.json of the run")
    worker.add_argument("--address", required=True, help="parameter server HOST:PORT")
    worker.add_argument("--secret-file", type=Path, required=True)
    worker.add_argument("--name", default=f"worker-{os.getpid()}", help="unique worker name")
    worker.add_argument("--threads", type=int, help="CPU threads for TensorFlow")
    worker.set_defaults(func=_worker)


def _train(args: argparse.Namespace) -> int:
    from gridtrain.config import load_config
    from gridtrain.train.driver import resume, train

    if args.resume is not None:
        return resume(args.resume)
    config = load_config(args.config)
    if args.epochs is not None:
        config["train"]["epochs"] = args.epochs
    return train(config, args.run_dir, args.workers, args.executor)


def _worker(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from gridtrain.train.worker import main

    return main(args.spec, args.address, args.secret_file, args.name, args.threads)
