"""Conversion throughput against uproot's read-only throughput with the same threads, in one run.

Generates (or reuses) a >= 1M-event toy dataset, as TTrees and the same events as RNTuples, then
measures, each in a fresh process so that
peak RSS belongs to the measurement alone, imports done before the clock starts, after one
untimed warm-up read (page cache warm), best of ``--repeats`` for every row:

  read, N threads  ``gridtrain convert`` reads with N = min(4, cores) threads (the
                   default of ``convert(threads=...)``, passed explicitly here to both sides),
                   which decompress and interpret the branches in parallel, plus a read-ahead
                   thread and a writer thread. Read-only uproot is given the same N threads, three
                   ways:
                   ``uproot.open`` with ``decompression_executor`` and ``interpretation_executor``
                   one ``concurrent.futures.ThreadPoolExecutor(N)`` per file (uproot shuts a
                   file's executors down when it closes), then ``iterate``; and
                   the loop gridtrain itself uses: every branch's ``.array()`` of a basket-aligned
                   entry range submitted to a pool of N threads (flat branches as numpy, jagged
                   ones as awkward, as ``gridtrain.data.rootio`` reads them), once with uproot's
                   default source and once with ``pread`` (``MultithreadedFileSource``, what
                   gridtrain opens local files with). All read exactly the branches conversion
                   reads: features, the jagged group, event id, weight;
  read, serial     plain ``uproot`` ``iterate`` with default settings (one thread, uproot's serial
                   executors): what a user writes. On a loaded or small machine threads can cost
                   more than they bring, so this one competes too: the limit is the fastest read,
                   serial or parallel;
  convert          ``gridtrain convert`` (``convert(cfg, threads=N)``), default codec Blosc-LZ4:
                   read, pad, shuffle, compress, checksum, statistics, manifest;
  readback         the shards read back in 1024-event batches, decoded bytes/s;
  RNTuple          the same events as RNTuples: uproot's read-only speed (its RNTuple reader has
                   no executors, so N threads means every field's ``.array()`` of a
                   cluster-aligned range on a pool of N, with ``pread``, as gridtrain reads it;
                   and serial ``iterate``: the faster of the two is the limit) against
                   ``gridtrain convert``.

Conversion does all of this reading and more (its read-ahead and writer threads only overlap
the rest with the reading), so a ratio near 1 is the best it can reach. The last line is the
ratio conversion / the fastest TTree read-only, serial or parallel, events/s (goal >= 0.8); the
ratios against the serial reader and for the RNTuple input are printed on the lines before it.
Every row also shows the CPU seconds it spent per million events (all threads): run on a loaded
machine, every row slows down, the conversion (which needs more CPU than reading) most, while the
CPU seconds change little.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

THREADS = min(4, os.cpu_count() or 1)  # gridtrain.data.convert.convert's default


def vm_hwm_mib() -> float:
    status = Path("/proc/self/status").read_text().split("VmHWM:")[1]
    return int(status.split()[0]) / 1024


def read_serial(cfg: Any, flat: list[str], jagged: list[str]) -> int:
    """What a user writes: uproot's defaults, one thread."""
    import uproot

    events = 0
    for sample in cfg.samples:
        for path in sample.files:
            with uproot.open(path) as f:
                tree = f[sample.tree]
                if isinstance(tree, uproot.TTree):
                    steps = tree.iterate([*flat, *jagged], step_size=cfg.step_events)
                else:
                    steps = tree.iterate(filter_name=[*flat, *jagged], step_size=cfg.step_events)
                for arrays in steps:
                    events += len(arrays)
    return events


def read_iterate(cfg: Any, flat: list[str], jagged: list[str], threads: int) -> int:
    """uproot ``iterate`` decompressing and interpreting on ``threads`` threads."""
    import uproot

    events = 0
    for sample in cfg.samples:
        for path in sample.files:
            pool = ThreadPoolExecutor(threads)  # the file shuts its executors down on close
            with uproot.open(path, decompression_executor=pool, interpretation_executor=pool) as f:
                for arrays in f[sample.tree].iterate([*flat, *jagged], step_size=cfg.step_events):
                    events += len(arrays)
    return events


def read_branches(
    cfg: Any, flat: list[str], jagged: list[str], threads: int, pread: bool = False
) -> int:
    """Every branch of a basket-aligned range read on its own thread, as gridtrain reads."""
    import uproot

    options: dict[str, Any] = {"array_cache": None}
    if pread:
        options["handler"] = uproot.source.file.MultithreadedFileSource
    events = 0
    with ThreadPoolExecutor(threads) as pool:
        for sample in cfg.samples:
            for path in sample.files:
                with uproot.open(path, **options) as f:
                    tree = f[sample.tree]
                    if isinstance(tree, uproot.TTree):
                        offsets = tree.common_entry_offsets(filter_name=flat + jagged)
                    else:  # an RNTuple: every field shares the clusters
                        clusters = tree.ntuple.cluster_summaries
                        offsets = [c.num_first_entry for c in clusters] + [tree.num_entries]
                    offsets = [int(x) for x in offsets]
                    cuts = [0]
                    for offset in offsets[1:]:
                        if offset - cuts[-1] >= cfg.step_events or offset == offsets[-1]:
                            cuts.append(offset)
                    for start, stop in itertools.pairwise(cuts):
                        futures = [
                            pool.submit(
                                tree[name].array,
                                entry_start=start,
                                entry_stop=stop,
                                library="ak" if name in jagged else "np",
                            )
                            for name in flat + jagged
                        ]
                        for future in futures:
                            future.result()
                        events += stop - start
    return events


def child(mode: str, config_path: str) -> None:
    import awkward  # noqa: F401  (imports before the clock, for every mode)
    import uproot  # noqa: F401

    from gridtrain.config import DatasetConfig, load_config
    from gridtrain.data.convert import convert
    from gridtrain.data.manifest import load_manifest
    from gridtrain.data.shards import ShardReader

    cfg = DatasetConfig.from_dict(load_config(config_path)["dataset"])
    jagged = [b for g in cfg.jagged for b in g.branches]
    flat = [*cfg.features, *cfg.event_id, *([cfg.weight] if cfg.weight else [])]
    start, cpu = time.perf_counter(), time.process_time()
    result: dict[str, float]
    if mode == "read-serial":
        result = {"events": read_serial(cfg, flat, jagged)}
    elif mode == "read-iterate":
        result = {"events": read_iterate(cfg, flat, jagged, THREADS)}
    elif mode == "read-branches":
        result = {"events": read_branches(cfg, flat, jagged, THREADS)}
    elif mode == "read-branches-pread":
        result = {"events": read_branches(cfg, flat, jagged, THREADS, pread=True)}
    elif mode == "convert":
        manifest = convert(cfg, threads=THREADS)
        result = {"events": manifest.events("train") + manifest.events("validation")}
    else:
        manifest = load_manifest(cfg.outdir)
        decoded = events = 0
        for entry in manifest.shards["train"] + manifest.shards["validation"]:
            with ShardReader(Path(cfg.outdir) / entry.path) as reader:
                for batch in reader.batches(1024):
                    decoded += sum(a.nbytes for a in batch.values())
                    events += len(batch["label"])
        result = {"events": events, "bytes": decoded}
    result["seconds"] = time.perf_counter() - start
    result["cpu_seconds"] = time.process_time() - cpu  # every thread of the process
    result["rss_mib"] = vm_hwm_mib()
    print(json.dumps(result))


def measure(mode: str, config: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(config)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def best(mode: str, config: Path, repeats: int) -> dict[str, float]:
    """The fastest of ``repeats`` fresh-process runs (other load only slows a run down)."""
    return min((measure(mode, config) for _ in range(repeats)), key=lambda r: r["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3, help="keep the best of N runs")
    parser.add_argument("--workdir", default=".bench/convert")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    work = Path(args.workdir)
    config = make_config(work, args.events, "ttree")
    rntuple_config = make_config(work, args.events, "rntuple")
    measure("read-serial", config)  # warm-up: the ROOT files into the page cache
    measure("read-serial", rntuple_config)
    modes = ("read-serial", "read-iterate", "read-branches", "read-branches-pread", "convert")
    runs = {mode: best(mode, config, args.repeats) for mode in modes}
    back = best("readback", config, 1)
    rntuple_modes = ("read-serial", "read-branches-pread", "convert")
    rntuple = {mode: best(mode, rntuple_config, args.repeats) for mode in rntuple_modes}
    rates = {mode: run["events"] / run["seconds"] for mode, run in runs.items()}
    rntuple_rates = {mode: run["events"] / run["seconds"] for mode, run in rntuple.items()}
    reads = ("read-serial", "read-iterate", "read-branches", "read-branches-pread")
    limit = max(reads, key=lambda mode: rates[mode])  # the fastest read, serial or parallel
    print(f"events                                  {runs['convert']['events']:>12,}")
    print(f"threads (N, as gridtrain convert)       {THREADS:>12}")
    print(f"load average (1 min) at the end         {os.getloadavg()[0]:>12.2f}")
    for mode, label in (
        ("read-serial", "uproot read-only, serial (user)"),
        ("read-iterate", "uproot read-only, iterate, N threads"),
        ("read-branches", "uproot read-only, branch/thread, N"),
        ("read-branches-pread", "uproot read-only, branch/thread, pread"),
        ("convert", "gridtrain convert, N threads"),
    ):
        mark = "  <- limit" if mode == limit else ""
        print(
            f"{label:<40}{rates[mode]:>12,.0f} events/s  {cpu_per_million(runs[mode])} "
            f"peak RSS {runs[mode]['rss_mib']:.0f} MiB{mark}"
        )
    print(
        f"shard read-back (1024)                  {back['events'] / back['seconds']:>12,.0f} "
        f"events/s  {back['bytes'] / back['seconds'] / 1e9:.2f} GB/s decoded"
    )
    for mode, label in (
        ("read-serial", "RNTuple: uproot read-only, serial"),
        ("read-branches-pread", "RNTuple: uproot read-only, N threads"),
        ("convert", "RNTuple: gridtrain convert, N threads"),
    ):
        print(
            f"{label:<40}{rntuple_rates[mode]:>12,.0f} events/s  "
            f"{cpu_per_million(rntuple[mode])} peak RSS {rntuple[mode]['rss_mib']:.0f} MiB"
        )
    # uproot's RNTuple reader has no executors; where its serial iterate beats N threads, the
    # serial one is the limit.
    rntuple_limit = max(rntuple_rates["read-serial"], rntuple_rates["read-branches-pread"])
    print(f"ratio RNTuple conversion/read (limit)   {rntuple_rates['convert'] / rntuple_limit:.2f}")
    print(f"ratio conversion/serial read (user)     {rates['convert'] / rates['read-serial']:.2f}")
    print(f"ratio conversion/fastest read (limit)   {rates['convert'] / rates[limit]:.2f}")


def cpu_per_million(run: dict[str, float]) -> str:
    """CPU seconds per million events, all threads: what the load of other processes changes
    least, and what a machine with idle cores would spread over them."""
    return f"{run['cpu_seconds'] / run['events'] * 1e6:5.2f} CPU-s/M"


def make_config(work: Path, events: int, file_format: str) -> Path:
    """The repository's dataset config over the toy in ``file_format``, written once."""
    from gridtrain.data.toy import write_toy_dataset

    suffix = "" if file_format == "ttree" else f"-{file_format}"
    toy = work / f"toy-{events}{suffix}"
    if not (toy / "background.root").exists():
        write_toy_dataset(toy, events, seed=1, file_format=file_format)
    repo_config = yaml.safe_load((Path(__file__).parents[1] / "config" / "config.yaml").read_text())
    section = repo_config["dataset"]
    section["samples"][0]["files"] = [str(toy / "signal.root")]
    section["samples"][1]["files"] = [str(toy / "background.root")]
    section["outdir"] = str(work / f"dataset{suffix}")
    config = work / f"config{suffix}.yaml"
    config.write_text(yaml.safe_dump({"dataset": section}))
    return config


if __name__ == "__main__":
    main()
