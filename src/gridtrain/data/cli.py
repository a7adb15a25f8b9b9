"""Subcommands of the data layer: ``toy``, ``convert`` and ``verify``; thin wrappers only."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    toy = subparsers.add_parser("toy", help="write the toy signal/background ROOT files")
    toy.add_argument("--events", type=int, default=200_000, help="events in all (half each)")
    toy.add_argument("--seed", type=int, default=1)
    toy.add_argument("--out", default="data/toy", help="output folder (default: data/toy)")
    toy.set_defaults(func=_toy)

    convert = subparsers.add_parser("convert", help="convert ROOT TTrees into HDF5 shards")
    convert.add_argument("-c", "--config", default="config/config.yaml", help="YAML config")
    convert.add_argument("-o", "--out", help="output folder (default: dataset.outdir)")
    convert.add_argument("--threads", type=int, help="decompression threads (default: cores)")
    convert.set_defaults(func=_convert)

    verify = subparsers.add_parser("verify", help="check shard sizes and adler32 checksums")
    verify.add_argument("dataset", help="a dataset folder or its manifest.json")
    verify.set_defaults(func=_verify)


def _toy(args: argparse.Namespace) -> int:
    from gridtrain.data.toy import write_toy_dataset

    start = time.perf_counter()
    files = write_toy_dataset(args.out, args.events, args.seed)
    took = time.perf_counter() - start
    print(f"wrote {args.events} toy events to {', '.join(map(str, files))} in {took:.1f} s")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from gridtrain.config import DatasetConfig, load_config
    from gridtrain.data.convert import convert

    config = load_config(args.config)
    dataset = DatasetConfig.from_dict(config["dataset"])
    start = time.perf_counter()
    shown = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if sys.stderr.isatty() and (now - shown[0] > 0.5 or done == total):
            shown[0] = now
            rate = done / max(now - start, 1e-9)
            print(f"\rconvert: {done}/{total} entries ({rate:,.0f}/s)", end="", file=sys.stderr)
            if done == total:
                print(file=sys.stderr)

    manifest = convert(dataset, args.out, progress=progress, threads=args.threads)
    took = time.perf_counter() - start
    out = args.out or dataset.outdir
    shards = sum(len(v) for v in manifest.shards.values())
    print(
        f"converted {manifest.events('train')} training and {manifest.events('validation')} "
        f"validation events into {shards} shards in {took:.1f} s: {out}/manifest.json"
    )
    return 0


def _verify(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gridtrain.data.manifest import load_manifest, verify_local

    manifest = load_manifest(args.dataset)
    folder = Path(args.dataset)
    folder = folder if folder.is_dir() else folder.parent
    problems = verify_local(manifest, folder)
    for line in problems:
        print(f"BAD {line}")
    count = sum(len(v) for v in manifest.shards.values())
    print(f"{count - len(problems)} of {count} shards match the manifest")
    return 1 if problems else 0
