"""Throughput of ``gridtrain apply --engine onnx`` against its limit, on the toy.

The model is the repository config's (``config/config.yaml``: the mlp over the jet features and
the constituents), trained for one epoch on a small toy dataset and exported to ONNX (cached in
the work folder). The scored files are a larger toy (``--events``, signal and background files).
In one process, on the same threads (``--threads``, default 1: ONNX Runtime's intra-op threads,
apply's readers, and the limit's uproot decompression and interpretation executor):

  apply   ``gridtrain.apply.run.apply_files`` as ``gridtrain apply --engine onnx --overwrite``
          runs it: every input opened and checked, the session made, the entries read block by
          block through conversion's readers, padded, scored, and the scores files written
          (event ids and score) under temporary names with their markers and checksums;
  limit   the least any scorer of these files must do: an uproot read of the same branches (the
          features and the constituents, ``tree.arrays``) plus ONNX Runtime on the model's inputs
          already padded in memory, in apply's blocks (``InferenceSession.run``); the two times
          added. No padding, no output.

Each side is timed ``--repeats`` times after a warm-up (files in the page cache, sessions made),
interleaved so that a busy spell of the machine's other processes hits both; the best of each
counts. Per side: seconds, events/s and events per CPU-second of this process (all its threads),
which others' load changes least. The last line is the ratio apply / limit in events/s; the goal
is 0.8 or more.

    python benchmarks/apply.py               # about 1.5 minutes here (most of it the setup, cached)
    python benchmarks/apply.py --events 20000 --repeats 1      # a check that it runs
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_helpers import QUIET_TF, toy_dataset  # noqa: E402

TRAIN_EVENTS = 4000  # the model's quality is not measured: a short training on a small toy


def trained_and_exported(work: Path, dataset: dict[str, Any]) -> Path:
    run_dir = work / "run"
    if not (run_dir / "export" / "export.json").exists():
        model = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["train"]["model"]
        config = {
            "dataset": dataset,
            "train": {
                "epochs": 1,
                "workers": 1,
                "batch_size": 256,
                "model": model,
                "early_stopping": {"patience": None},
            },
        }
        (work / "config.yaml").write_text(yaml.safe_dump(config))
        env = {**os.environ, **QUIET_TF}
        for args in (
            ["train", "-c", str(work / "config.yaml"), "--run-dir", str(run_dir)],
            ["export", str(run_dir), "--format", "onnx"],
        ):
            subprocess.run(
                [sys.executable, "-m", "gridtrain", "-q", *args],
                check=True,
                env=env,
                stdout=subprocess.DEVNULL,
            )
    return run_dir


def scored_files(work: Path, events: int) -> list[str]:
    from gridtrain.data.toy import write_toy_dataset

    toy = work / f"scored-{events}"
    if not (toy / "background.root").exists():
        write_toy_dataset(toy, events, seed=11)
    return [str(toy / "signal.root"), str(toy / "background.root")]


def timed(call: Any) -> tuple[float, float]:
    """Wall and CPU seconds (this process, all threads) of ``call()``."""
    cpu, wall = time.process_time(), time.perf_counter()
    call()
    return time.perf_counter() - wall, time.process_time() - cpu


class Limit:
    """An uproot read of the model's branches, and ONNX Runtime on its inputs in memory."""

    def __init__(self, run_dir: Path, files: list[str], threads: int) -> None:
        import json

        import onnxruntime

        from gridtrain.apply.scoring import BLOCK_EVENTS, run_dataset

        dataset = run_dataset(run_dir)
        self.files = files
        self.tree = dataset.samples[0].tree
        self.features = list(dataset.features)
        self.groups = {g.name: (g.branches, g.length, g.fill) for g in dataset.jagged}
        self.branches = self.features + [b for g in dataset.jagged for b in g.branches]
        self.threads = threads
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        export = run_dir / "export"
        self.session = onnxruntime.InferenceSession(
            str(export / "model.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.inputs = json.loads((export / "export.json").read_text())["inputs"]
        self.block = BLOCK_EVENTS
        self.feeds = [self._feed(arrays) for arrays in self.read()]  # in memory before timing

    def read(self) -> list[Any]:
        import uproot

        out = []
        for path in self.files:
            pool = ThreadPoolExecutor(self.threads)  # closing the file shuts its executors down
            with uproot.open(
                path, array_cache=None, decompression_executor=pool, interpretation_executor=pool
            ) as file:
                out.append(file[self.tree].arrays(self.branches))
        return out

    def _feed(self, arrays: Any) -> list[dict[str, np.ndarray]]:
        import awkward as ak

        whole: dict[str, np.ndarray] = {}
        for item in self.inputs:
            name = item["name"]
            if name == "features":
                columns = [np.asarray(arrays[c], dtype=np.float32) for c in item["columns"]]
                whole[name] = np.stack(columns, axis=1)
            elif "counts" in item:
                branch = self.groups[item["counts"]][0][0]
                counts = ak.to_numpy(ak.num(arrays[branch]))
                whole[name] = np.minimum(counts, self.groups[item["counts"]][1]).astype("f4")
            else:
                _, length, fill = self.groups[name]
                channels = [
                    ak.to_numpy(ak.fill_none(ak.pad_none(arrays[c], length, clip=True), fill))
                    for c in item["columns"]
                ]
                whole[name] = np.stack(channels, axis=-1).astype(np.float32)
        events = len(next(iter(whole.values())))
        return [
            {k: np.ascontiguousarray(v[s : s + self.block]) for k, v in whole.items()}
            for s in range(0, events, self.block)
        ]

    def infer(self) -> None:
        for blocks in self.feeds:
            for feed in blocks:
                self.session.run(["score"], feed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=REPO / ".bench" / "apply")
    parser.add_argument("--events", type=int, default=100_000, help="events in the scored files")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.update(QUIET_TF)
    from gridtrain.apply.engines import find_models
    from gridtrain.apply.run import apply_files
    from gridtrain.apply.scoring import ApplySettings

    args.work.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    dataset = toy_dataset(args.work, TRAIN_EVENTS, shard_events=1000)
    run_dir = trained_and_exported(args.work, dataset)
    files = scored_files(args.work, args.events)
    setup = time.perf_counter() - began
    settings = ApplySettings(
        model=find_models(run_dir, "onnx"),
        out=args.work / "scores",
        threads=args.threads,
        overwrite=True,
    )
    limit = Limit(run_dir, files, args.threads)
    events = sum(sum(len(f["features"]) for f in blocks) for blocks in limit.feeds)
    sides = {
        "apply": lambda: apply_files(settings, files),
        "read": limit.read,
        "infer": limit.infer,
    }
    for call in sides.values():
        call()  # warm-up: the page cache, the sessions' arenas
    best = {name: (float("inf"), float("inf")) for name in sides}
    for repeat in range(args.repeats):
        order = list(sides)[repeat % 3 :] + list(sides)[: repeat % 3]
        for name in order:
            wall, cpu = timed(sides[name])
            best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
    apply_wall, apply_cpu = best["apply"]
    limit_wall = best["read"][0] + best["infer"][0]
    limit_cpu = best["read"][1] + best["infer"][1]
    print(
        f"{events} toy events in {len(files)} files, threads {args.threads}, best of "
        f"{args.repeats} (setup {setup:.0f} s)"
    )
    print(f"{'':<22}{'seconds':>9}{'events/s':>12}{'per CPU-s':>12}")
    rows = [
        ("gridtrain apply", apply_wall, apply_cpu),
        ("limit: uproot read", *best["read"]),
        ("limit: onnxruntime", *best["infer"]),
        ("limit: read + infer", limit_wall, limit_cpu),
    ]
    for name, wall, cpu in rows:
        print(f"{name:<22}{wall:>9.3f}{events / wall:>12,.0f}{events / cpu:>12,.0f}")
    print(f"ratio per CPU-second (apply / limit): {limit_cpu / apply_cpu:.2f}")
    print(f"ratio events/s (apply / limit): {limit_wall / apply_wall:.2f}")


if __name__ == "__main__":
    main()
