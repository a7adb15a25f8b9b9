"""``gridtrain train`` and ``gridtrain worker``: thin commands over the train package."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from gridtrain.errors import ConfigError


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
        "--executor",
        choices=("local", "condor"),
        help="where workers run: local processes or HTCondor jobs (default: train.executor)",
    )
    train.add_argument(
        "--profile",
        help="condor profile, profiles/NAME/condor.yaml (default: train.condor.profile)",
    )
    train.add_argument("--epochs", type=int, help="override train.epochs")
    train.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue a stopped run")
    train.add_argument(
        "--detach",
        action="store_true",
        help="check and prepare here, then train in the background (survives a closed "
        "terminal); follow with `gridtrain status RUN_DIR`, stop with `gridtrain cancel RUN_DIR`",
    )
    train.set_defaults(func=_train)

    status = subparsers.add_parser(
        "status",
        help="where a run stands: driver, progress, worker jobs (re-attaches from RUN_DIR)",
        description="Read a run directory (and the job event log, or the schedd when the log "
        "is gone) and print the driver, the training progress and every worker's job.",
    )
    status.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=_status)

    cancel = subparsers.add_parser(
        "cancel",
        help="stop a run: its driver checkpoints and stops the PS, its worker jobs are removed",
        description="Send the run's driver SIGTERM (it removes the worker jobs, checkpoints and "
        "stops the parameter server) and remove any job of the run still queued. Continue "
        "later with gridtrain train --resume RUN_DIR.",
    )
    cancel.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    cancel.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for the driver (120)"
    )
    cancel.set_defaults(func=_cancel)

    worker = subparsers.add_parser(
        "worker",
        help="one training worker (started by the executor)",
        description="Train a model replica on leased shards, exchanging with the parameter "
        "server. Executors start this; run it by hand only to add a worker to a running "
        "training (elastic).",
    )
    worker.add_argument("--spec", type=Path, help="worker.json of the run (required)")
    worker.add_argument("--address", help="parameter server HOST:PORT (required)")
    worker.add_argument("--secret-file", type=Path, help="the run's ps.secret (required)")
    worker.add_argument("--name", default=f"worker-{os.getpid()}", help="unique worker name")
    worker.add_argument("--threads", type=int, help="CPU threads for TensorFlow")
    worker.add_argument(
        "--await-launch",
        action="store_true",
        help="the local executor's prewarmed worker: set up its Keras backend (KERAS_BACKEND) "
        "first, then read the "
        "run's spec, address, secret file, name and log file as one JSON line on stdin",
    )
    worker.add_argument(
        "--answer-driver",
        action="store_true",
        help="with --await-launch: also build the initial weights and write the run's outputs "
        "when the driver asks on stdin, answering on stdout (train/helper.py)",
    )
    worker.set_defaults(func=_worker)


def _train(args: argparse.Namespace) -> int:
    from gridtrain.config import load_config
    from gridtrain.train.driver import detach, prepare, resume, train
    from gridtrain.train.kfold import execute_folds, is_kfold, prepare_folds, train_folds

    if args.resume is not None:
        if args.detach:
            return _detached(args.resume, detach(args.resume))
        if is_kfold(args.resume):
            return execute_folds(args.resume)
        return resume(args.resume)
    config = load_config(args.config)
    if args.epochs is not None:
        config["train"]["epochs"] = args.epochs
    if args.profile is not None:
        config["train"]["condor"]["profile"] = args.profile
    run_dir = args.run_dir or Path(config["train"]["run_dir"])
    if config["train"].get("folds"):  # k-fold: one run per fold below run_dir
        if args.executor is not None:
            config["train"]["executor"] = args.executor
        if args.detach:
            files = prepare_folds(config, run_dir, args.workers)
            return _detached(files.path, detach(files.path))
        return train_folds(config, run_dir, args.workers)
    if args.detach:
        if args.executor is not None:
            config["train"]["executor"] = args.executor
        files = prepare(config, run_dir, args.workers)
        return _detached(files.path, detach(files.path))
    return train(config, args.run_dir, args.workers, args.executor)


def _detached(run_dir: Path, pid: int) -> int:
    print(
        f"gridtrain train: training in the background (driver pid {pid}, output in "
        f"{run_dir}/driver.log); follow it with `gridtrain status {run_dir}`, stop it with "
        f"`gridtrain cancel {run_dir}`"
    )
    return 0


def _status(args: argparse.Namespace) -> int:
    from gridtrain.train.status import format_status, run_status

    status = run_status(args.run_dir)
    if args.json:
        print(json.dumps(status, indent=1, sort_keys=True))
    else:
        print(format_status(status))
    return 0


def _cancel(args: argparse.Namespace) -> int:
    from gridtrain.train.status import cancel

    print(cancel(args.run_dir, timeout=args.timeout))
    return 0


def _worker(args: argparse.Namespace) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from gridtrain.backend import use_backend
    from gridtrain.train.settings import WorkerSpec
    from gridtrain.train.worker import await_launch, configure_devices, main

    channel = None
    if args.await_launch:
        devices = configure_devices(args.threads)  # the seconds a prewarmed worker saves
        if args.answer_driver:
            from gridtrain.train.helper import DriverChannel

            channel = DriverChannel(sys.stdin)
        launch = await_launch(sys.stdin, channel)
        if launch is None:  # the driver gave up before the run started
            return 0
        args.spec, args.address, args.secret_file, args.name = launch
    else:
        missing = [
            option
            for option, value in (
                ("--spec", args.spec),
                ("--address", args.address),
                ("--secret-file", args.secret_file),
            )
            if value is None
        ]
        if missing:
            raise ConfigError(
                f"gridtrain worker needs {', '.join(missing)}: the run's worker.json, the "
                "parameter server's HOST:PORT (the run's ps.address) and its ps.secret"
            )
        use_backend(WorkerSpec.read(args.spec).settings.backend)  # before Keras is imported
        devices = configure_devices(args.threads)
    code = main(args.spec, args.address, args.secret_file, args.name, devices, channel)
    # The worker's results are with the parameter server and in its log: leave without
    # TensorFlow's interpreter teardown (seconds that the driver would wait for).
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
