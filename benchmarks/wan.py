"""Training across a wide-area link: time to the target AUC with the workers behind a shaping relay.

On a grid the parameter server sits on a login host and the workers at sites across a continent:
tens of ms of round trip and a few hundred Mb/s per worker. This kernel cannot delay loopback
(no ``sch_netem``), so each worker's connection goes through ``tests/wan_relay.py``'s
``ShapingRelay`` (``--latency`` one way, ``--bandwidth`` per direction and connection; default
15 ms one way = 30 ms round trip, 200 Mb/s). For each model, in the same run, on the same toy
dataset, seed and settings (Downpour, DynSGD scaling, exchange every ``--every`` steps, early
stopping off):

  loopback        the baseline: ``gridtrain train`` with the workers on loopback, as today;
  wan-sync        through the relay, every exchange waited for (``train.overlap: false``);
  wan-overlap     through the relay, exchanges in the background (``train.overlap: true``);
  wan-bf16, wan-topk, wan-topk-bf16
                  overlapped, with each wire compression ``train.wire`` offers (its schema's
                  enum): bf16 both ways, top-k pushes, top-k pushes and bf16 centers.

Two models: the toy MLP ([32, 32], a few hundred parameters: latency dominates) and a wide MLP of
about 1M parameters ([1000, 1000]: 4 MB per push, bandwidth dominates). The target is the loopback
run's final validation AUC minus ``--margin``. Prints per run the time to target from launch, the
final AUC, the wall time, the bytes each worker pushed through the relay (MB) and the share of
worker time spent waiting on the network (``ps_wait_fraction``, else ``ps_time_fraction``). Last
line: (best WAN configuration's time to target) / (loopback time to target) for the 1M model
(goal <= 1.2).

    python benchmarks/wan.py                  # both models, 4 workers, 3 epochs: ~15 min here
    python benchmarks/wan.py --quick          # 20,000 events, 2 epochs, loopback and wan-sync
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench_helpers import TimedRun, fmt, run_gridtrain, toy_dataset, train_section

GOAL = 1.2
MODELS = {"toy": [32, 32], "1M": [1000, 1000]}  # 16 inputs: 16*1000 + 1000*1000 + ... ~1.02M


def compression_choices() -> list[str]:
    """The wire compressions ``train.wire`` offers (its schema's enum, float32 left out)."""
    from gridtrain.config import load_schema

    wire = load_schema()["properties"]["train"]["properties"]["wire"]
    return [choice for choice in wire["enum"] if choice != "float32"]


def configurations(compressions: list[str]) -> dict[str, dict[str, Any]]:
    """Extra ``train`` settings of each WAN configuration."""
    runs: dict[str, dict[str, Any]] = {
        "wan-sync": {"overlap": False},
        "wan-overlap": {"overlap": True},
    }
    for name in compressions:
        runs[f"wan-{name}"] = {"overlap": True, "wire": name}
    return runs


def run_through_relay(
    name: str,
    dataset: dict[str, Any],
    train: dict[str, Any],
    run_dir: Path,
    workers: int,
    link: dict[str, float],
) -> tuple[TimedRun, dict[str, Any]]:
    """``python -m tests.wan_relay train`` through ``run_gridtrain``, and the relay's counts."""
    link_args = ("--latency", str(link["latency"]), "--bandwidth", str(link["bandwidth"]))
    run = run_gridtrain(
        name, dataset, train, run_dir, workers, ("tests.wan_relay", "train"), link_args
    )
    return run, json.loads((run_dir.resolve() / "relay.json").read_text())


def wait_share(run: TimedRun) -> float | None:
    value = run.metrics.get("ps_wait_fraction", run.metrics.get("ps_time_fraction"))
    return float(value) if value is not None else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="toy,1M", help=f"comma-separated of {list(MODELS)}")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--shard-events", type=int, default=2_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--every", type=int, default=8, help="local steps between exchanges")
    parser.add_argument("--latency", type=float, default=0.015, help="one-way seconds")
    parser.add_argument("--bandwidth", type=float, default=200e6, help="bits/s per direction")
    parser.add_argument("--margin", type=float, default=0.005, help="target = loopback - margin")
    parser.add_argument("--configs", help="comma-separated WAN configurations (default: all)")
    parser.add_argument("--quick", action="store_true", help="20k events, 2 epochs, wan-sync")
    parser.add_argument("--workdir", default=".bench/wan")
    args = parser.parse_args()
    if args.quick:
        args.events, args.epochs = 20_000, 2
        args.configs = args.configs or "wan-sync"

    table = configurations(compression_choices())
    chosen = args.configs.split(",") if args.configs else list(table)
    unknown = [c for c in chosen if c not in table]
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; choose from {', '.join(table)}")
    link = {"latency": args.latency, "bandwidth": args.bandwidth}
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    dataset = toy_dataset(work, args.events, args.shard_events)
    print(
        f"{args.events:,} toy events in shards of {args.shard_events:,}; {args.workers} workers, "
        f"{args.epochs} epochs, batch {args.batch_size}, exchange every {args.every} steps; "
        f"link {2 * args.latency * 1e3:.0f} ms round trip, {args.bandwidth / 1e6:.0f} Mb/s",
        flush=True,
    )
    ratios: dict[str, float | None] = {}
    for model in args.models.split(","):
        hidden = MODELS[model]
        algorithm = {"algorithm": "downpour", "every": args.every}
        base = train_section(
            "mlp", {"hidden": hidden}, args.epochs, args.batch_size, args.learning_rate, algorithm
        )
        print(f"\nmodel {model}: mlp {hidden}", flush=True)
        loopback = run_gridtrain(
            f"{model}-loopback", dataset, base, work / f"{model}-loopback", args.workers
        )
        target = loopback.final_auc - args.margin
        rows: list[tuple[TimedRun, float | None]] = [(loopback, None)]
        for name in chosen:
            train = {**base, **table[name]}
            run, relay = run_through_relay(
                f"{model}-{name}", dataset, train, work / f"{model}-{name}", args.workers, link
            )
            rows.append((run, relay["bytes_up"] / args.workers / 1e6))
        print(f"target validation AUC {target:.4f} (loopback final {loopback.final_auc:.4f})")
        print(
            f"{'run':<18}{'to target s':>12}{'final AUC':>11}{'wall s':>8}{'MB pushed/worker':>18}"
            f"{'net wait':>10}"
        )
        for run, pushed in rows:
            share = wait_share(run)
            print(
                f"{run.name:<18}{fmt(run.time_to(target), '.1f', 'never'):>12}"
                f"{run.final_auc:>11.4f}{run.wall:>8.0f}{fmt(pushed, '.1f'):>18}"
                f"{fmt(share * 100 if share is not None else None, '.0f'):>9}%"
            )
        base_time = loopback.time_to(target)
        wan_times = [t for run, _ in rows[1:] if (t := run.time_to(target)) is not None]
        ratios[model] = min(wan_times) / base_time if wan_times and base_time else None
    print(f"\nbenchmark wall time: {time.perf_counter() - started:.0f} s")
    for model, ratio in ratios.items():
        print(f"{model}: best WAN time to target / loopback: {fmt(ratio, '.2f', 'n/a')}")
    key = "1M" if "1M" in ratios else next(iter(ratios))
    print(
        f"ratio best WAN configuration / loopback time to target ({key} model): "
        f"{fmt(ratios[key], '.2f', 'n/a (target never reached)')} (goal <= {GOAL})"
    )


if __name__ == "__main__":
    main()
