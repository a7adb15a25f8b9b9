"""``gridtrain stage push|pull|check``: thin commands over the staging library.

Layer: CLI edge of staging. Parses options (an explicit flag beats the config's ``stage``
section, which beats the packaged defaults), shows progress on a terminal and prints one summary
line; library errors pass through unchanged to ``gridtrain.cli``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import threading
import time
from typing import Any

from gridtrain.stage.transfer import Transfer, TransferOptions


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "stage",
        help="copy datasets to and from XRootD storage, verified",
        description="Verified, resumable, parallel copies between local folders and root:// "
        "storage. Shards are checked against the manifest's adler32; the manifest goes last.",
    )
    commands = parser.add_subparsers(dest="stage_command", required=True, metavar="STAGE_COMMAND")

    push = commands.add_parser(
        "push",
        help="copy a converted dataset to storage",
        description="Copy DATASET_DIR (shards and manifest.json, manifest last) to URL, a "
        "folder such as root://eos.example.org//store/user/me/ds; complete shards are kept.",
    )
    push.add_argument("dataset", metavar="DATASET_DIR", help="a converted dataset folder")
    push.add_argument("url", metavar="URL", help="destination folder: root://host[:port]//path")
    push.add_argument(
        "--url-paths",
        action="store_true",
        help="the pushed manifest names each shard by its full URL (grid jobs read from there)",
    )
    _transfer_options(push)
    push.set_defaults(func=_push)

    pull = commands.add_parser(
        "pull",
        help="copy a dataset from storage to a local folder",
        description="Copy the dataset at URL (its folder or manifest.json) into DIR, verified, "
        "manifest last; complete shards already in DIR are kept.",
    )
    pull.add_argument("url", metavar="URL", help="a dataset folder or its manifest.json")
    pull.add_argument("dest", metavar="DIR", help="local folder to copy into")
    pull.add_argument(
        "--manifest-only",
        action="store_true",
        help="copy no shard: write DIR/manifest.json naming each shard by its URL, so that "
        "training stages shards from storage into each worker's scratch",
    )
    _transfer_options(pull)
    pull.set_defaults(func=_pull)

    check = commands.add_parser(
        "check",
        help="is the storage reachable, how fast, how full, with checksums?",
        description="Reachability, round-trip latency, free space (if the server reports it), "
        "whether the server computes adler32, and whether URL exists.",
    )
    check.add_argument("url", metavar="URL")
    check.add_argument("-c", "--config", help="YAML config whose 'stage' section gives defaults")
    check.add_argument("--timeout", type=float, help="seconds to wait for the server")
    check.set_defaults(func=_check)


def _transfer_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--config", help="YAML config whose 'stage' section gives defaults")
    parser.add_argument("--parallel", type=int, help="files copied at once")
    parser.add_argument("--parallel-chunks", type=int, help="chunks in flight per file")
    parser.add_argument("--timeout", type=float, help="seconds to connect or get an answer")
    parser.add_argument("--retries", type=int, help="extra attempts per file")
    parser.add_argument("--backoff", type=float, help="seconds before the first retry (doubles)")


def options_from(args: argparse.Namespace) -> TransferOptions:
    """Transfer options: flags, else the config's ``stage`` section, else the schema defaults."""
    from gridtrain.config import StageConfig, load_config

    section = load_config(args.config).get("stage", {}) if args.config else {}
    options = TransferOptions.from_config(StageConfig.from_dict(section))
    overrides = {
        key: getattr(args, key)
        for key in ("parallel", "parallel_chunks", "timeout", "retries", "backoff")
        if getattr(args, key, None) is not None
    }
    return dataclasses.replace(options, **overrides)


class _ProgressLine:
    """One self-overwriting line on a terminal: files done, bytes and rate; silent otherwise."""

    def __init__(self, verb: str) -> None:
        self.verb = verb
        self.enabled = sys.stderr.isatty()
        self.done: dict[Transfer, int] = {}
        self.finished = 0
        self.lock = threading.Lock()
        self.start = time.perf_counter()
        self.shown = 0.0

    def __call__(self, transfer: Transfer, done: int) -> None:
        if not self.enabled:
            return
        with self.lock:
            self.done[transfer] = done
            self.finished += done == transfer.size
            now = time.perf_counter()
            if now - self.shown < 0.5:
                return
            self.shown = now
            total = sum(self.done.values())
            rate = total / max(now - self.start, 1e-9) / 1e6
            print(
                f"\r{self.verb}: {self.finished} files, {total / 1e6:,.0f} MB ({rate:,.0f} MB/s)",
                end="",
                file=sys.stderr,
            )

    def close(self) -> None:
        if self.enabled and self.shown:
            print(file=sys.stderr)


def _push(args: argparse.Namespace) -> int:
    from gridtrain.stage.dataset import push

    progress = _ProgressLine("push")
    try:
        summary = push(
            args.dataset, args.url, options_from(args), url_paths=args.url_paths, progress=progress
        )
    finally:
        progress.close()
    print(summary.line("pushed"))
    return 0


def _pull(args: argparse.Namespace) -> int:
    from gridtrain.stage.dataset import pull

    progress = _ProgressLine("pull")
    try:
        summary = pull(
            args.url,
            args.dest,
            options_from(args),
            manifest_only=args.manifest_only,
            progress=progress,
        )
    finally:
        progress.close()
    print(summary.line("pulled"))
    return 0


def _check(args: argparse.Namespace) -> int:
    from gridtrain.stage.check import check

    timeout = args.timeout
    if timeout is None:
        timeout = options_from(argparse.Namespace(config=args.config)).timeout
    for line in check(args.url, timeout).lines():
        print(line)
    return 0
