"""Conversion throughput against uproot's own read-only throughput, in one run.

Generates (or reuses) a >= 1M-event toy dataset, then measures, each in a fresh process so that
peak RSS belongs to the measurement alone:
  read     plain ``uproot`` iteration over the configured branches, default settings: what a user
           writes, and the raw limit conversion is judged against (best of two, page cache warm);
  convert  ``gridtrain convert`` with the default codec (Blosc-LZ4);
  readback the shards read back in 1024-event batches, decoded bytes/s.
The last line is the ratio conversion/read-only events/s (goal >= 0.8).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

CHANNELS = ["part_pt", "part_deta", "part_dphi", "part_charge", "part_pid"]


def vm_hwm_mib() -> float:
    status = Path("/proc/self/status").read_text().split("VmHWM:")[1]
    return int(status.split()[0]) / 1024


def child(mode: str, config_path: str) -> None:
    from gridtrain.config import DatasetConfig, load_config

    cfg = DatasetConfig.from_dict(load_config(config_path)["dataset"])
    start = time.perf_counter()
    if mode == "read":
        import uproot

        events = 0
        branches = [*cfg.features, *(b for g in cfg.jagged for b in g.branches)]
        branches += [*cfg.event_id, cfg.weight] if cfg.weight else [*cfg.event_id]
        for sample in cfg.samples:
            for path in sample.files:
                with uproot.open(path) as f:
                    for arrays in f[sample.tree].iterate(branches, step_size=cfg.step_events):
                        events += len(arrays)
        result = {"events": events}
    elif mode == "convert":
        from gridtrain.data.convert import convert

        manifest = convert(cfg)
        events = manifest.events("train") + manifest.events("validation")
        result = {"events": events}
    else:
        from gridtrain.data.manifest import load_manifest
        from gridtrain.data.shards import ShardReader

        manifest = load_manifest(cfg.outdir)
        decoded = events = 0
        for entry in manifest.shards["train"] + manifest.shards["validation"]:
            with ShardReader(Path(cfg.outdir) / entry.path) as reader:
                for batch in reader.batches(1024):
                    decoded += sum(a.nbytes for a in batch.values())
                    events += len(batch["label"])
        result = {"events": events, "bytes": decoded}
    result["seconds"] = time.perf_counter() - start
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--workdir", default=".bench/convert")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    work = Path(args.workdir)
    toy = work / f"toy-{args.events}"
    if not (toy / "background.root").exists():
        from gridtrain.data.toy import write_toy_dataset

        write_toy_dataset(toy, args.events, seed=1)
    repo_config = yaml.safe_load((Path(__file__).parents[1] / "config" / "config.yaml").read_text())
    section = repo_config["dataset"]
    section["samples"][0]["files"] = [str(toy / "signal.root")]
    section["samples"][1]["files"] = [str(toy / "background.root")]
    section["outdir"] = str(work / "dataset")
    config = work / "config.yaml"
    config.write_text(yaml.safe_dump({"dataset": section}))

    reads = [measure("read", config) for _ in range(2)]
    read = min(reads, key=lambda r: r["seconds"])
    conv = measure("convert", config)
    back = measure("readback", config)
    read_rate = read["events"] / read["seconds"]
    conv_rate = conv["events"] / conv["seconds"]
    print(f"events                      {conv['events']:>12,}")
    for label, rate, run in (("uproot read-only", read_rate, read), ("convert", conv_rate, conv)):
        print(f"{label:<28}{rate:>12,.0f} events/s  peak RSS {run['rss_mib']:.0f} MiB")
    print(
        f"shard read-back (1024)      {back['events'] / back['seconds']:>12,.0f} events/s  "
        f"{back['bytes'] / back['seconds'] / 1e9:.2f} GB/s decoded"
    )
    print(f"ratio conversion/read-only  {conv_rate / read_rate:.2f}")


if __name__ == "__main__":
    main()
