"""Subcommands of the data layer: ``toy``, ``convert``, ``gather`` and ``verify``; thin wrappers."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    toy = subparsers.add_parser("toy", help="write the toy ROOT files of a task")
    toy.add_argument(
        "--events", type=int, default=200_000, help="events in all (shared equally by the files)"
    )
    toy.add_argument("--seed", type=int, default=1)
    toy.add_argument("--out", default="data/toy", help="output folder (default: data/toy)")
    toy.add_argument(
        "--format",
        choices=("ttree", "rntuple"),
        default="ttree",
        help="write TTrees (default) or RNTuples (ROOT 6.34+); the same branch names either way",
    )
    toy.add_argument(
        "--image-size",
        type=int,
        metavar="N",
        help="also write two N x N jet images per jet (jet_image_charged, jet_image_neutral)",
    )
    toy.add_argument(
        "--task",
        choices=("binary", "multiclass", "regression", "substructure", "substructure-matched"),
        default="binary",
        help="binary: signal (W) and background (QCD) jets; multiclass: qcd, w and top jets; "
        "regression: measured jets with their generator-level jet_pt_true etc.; substructure: "
        "particle-level qcd, wz and top jets from a parton shower, for the taggers "
        "(substructure-matched: QCD with masses spread over the W/Z and top masses)",
    )
    toy.add_argument(
        "--negative-weight-fraction",
        type=float,
        default=0.0,
        metavar="F",
        help="also write genWeight: the weight, negative in this share of the events (0 .. 0.5)",
    )
    toy.set_defaults(func=_toy)

    convert = subparsers.add_parser(
        "convert", help="convert ROOT TTrees or RNTuples into HDF5 shards"
    )
    convert.add_argument("-c", "--config", default="config/config.yaml", help="YAML config")
    convert.add_argument("-o", "--out", help="output folder (default: dataset.outdir)")
    convert.add_argument("--threads", type=int, help="decompression threads (default: cores)")
    convert.add_argument(
        "--group",
        type=int,
        help="with dataset.files_per_job: convert only this group of input files, into its "
        "folder (default: every group, one after another, then gather)",
    )
    convert.set_defaults(func=_convert)

    gather = subparsers.add_parser(
        "gather", help="write the manifest of a dataset converted in groups (files_per_job)"
    )
    gather.add_argument("-c", "--config", default="config/config.yaml", help="YAML config")
    gather.add_argument("-o", "--out", help="dataset folder (default: dataset.outdir)")
    gather.set_defaults(func=_gather)

    verify = subparsers.add_parser("verify", help="check shard sizes and adler32 checksums")
    verify.add_argument("dataset", help="a dataset folder or its manifest.json")
    verify.set_defaults(func=_verify)


def _toy(args: argparse.Namespace) -> int:
    from gridtrain.data.toy import write_toy_dataset

    start = time.perf_counter()
    files = write_toy_dataset(
        args.out,
        args.events,
        args.seed,
        args.format,
        args.image_size,
        args.task,
        args.negative_weight_fraction,
    )
    took = time.perf_counter() - start
    print(f"wrote {args.events} toy events to {', '.join(map(str, files))} in {took:.1f} s")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from gridtrain.config import DatasetConfig, load_config
    from gridtrain.data.convert import convert
    from gridtrain.data.gather import gather
    from gridtrain.data.groups import group_count, group_dir, plan_group
    from gridtrain.errors import ConfigError

    config = load_config(args.config)
    dataset = DatasetConfig.from_config(config)
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

    out = args.out or dataset.outdir
    if dataset.files_per_job is None and args.group is not None:
        raise ConfigError(f"{args.config}: --group needs dataset.files_per_job (it is null)")
    if dataset.files_per_job is None:
        manifest = convert(dataset, out, progress=progress, threads=args.threads)
    else:
        groups = range(group_count(dataset)) if args.group is None else [args.group]
        for k in groups:
            group = plan_group(dataset, k)
            manifest = convert(dataset, group_dir(out, k), progress, args.threads, group)
        if args.group is None:
            manifest = gather(dataset, out)
        else:
            out = str(group_dir(out, args.group))
    took = time.perf_counter() - start
    shards = sum(len(v) for v in manifest.shards.values())
    print(
        f"converted {manifest.events('train')} training and {manifest.events('validation')} "
        f"validation events into {shards} shards in {took:.1f} s: {out}/manifest.json"
    )
    _print_yields(manifest.weights)
    return 0


def _print_yields(weights: dict[str, Any]) -> None:
    """The yield table of a dataset normalised to a luminosity (``dataset.lumi``)."""
    from gridtrain.data.yields import yield_lines

    if "normalisation" in weights:
        print("\n".join(yield_lines(weights["normalisation"])))


def _gather(args: argparse.Namespace) -> int:
    from gridtrain.config import DatasetConfig, load_config
    from gridtrain.data.gather import gather

    dataset = DatasetConfig.from_config(load_config(args.config))
    out = args.out or dataset.outdir
    manifest = gather(dataset, out)
    shards = sum(len(v) for v in manifest.shards.values())
    print(
        f"gathered {manifest.events('train')} training and {manifest.events('validation')} "
        f"validation events in {shards} shards of {len(manifest.sources)} sources: "
        f"{out}/manifest.json"
    )
    _print_yields(manifest.weights)
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
