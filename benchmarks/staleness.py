"""Stale gradients: validation AUC after a fixed number of epochs for 1, 2, 4 and 8 workers.

Reproduces the result the project's founding talks show: with asynchronous workers, the updates
a worker pushes were computed on a center that others have moved since (staleness about the
number of other workers), so after the same number of epochs the model is worse the more workers
train it; tuning the algorithm mitigates it. Each cell is one ``gridtrain train`` run in a fresh
process on the same small toy dataset (50,000 events in shards of 2,000, so 8 workers all get
work), with the same small MLP ([32, 32] on the 16 jet features), seed, batch size (32: many
pushes, so real staleness), learning rate and epochs (2), early stopping off:

  downpour   Downpour, workers push the delta of ``every`` local Adam steps, the PS adds it
             (optimizer ``add``, staleness_scaling ``none``);
  dynsgd     the same, the PS scaling an update s versions stale by 1/(s+1) (DynSGD);
  easgd      EASGD, moving rate ``alpha``, exchanging every ``tau`` local steps;
  adag       ADAG, the delta of ``every`` local steps divided by the window on the PS;
  gem        GEM (Gradient Energy Matching, NNLO's default) as NNLO places it (``gem_on:
             server``): the PS rescales each pushed delta, element by element, so the center
             moves ``kappa`` times as much as a sequential momentum-SGD proxy fed the same
             deltas (no DynSGD scaling on top);
  gem-worker GEM as the paper places it (``gem_on: worker``): each worker rescales its own delta,
             matching its own proxy against the center's move between its last two pulls.

``--wires`` adds the wire encodings (``train.wire``): each method is run once per encoding, its
rows labelled ``method/bf16``, ``method/topk`` or ``method/topk-bf16`` (top-k share ``--topk``),
so the metric cost of fewer bytes on the wire shows against the same method in float32 at the
same worker counts (EASGD pushes its variable, not an update, so it has no top-k rows).
``--repeats N`` runs every cell N times with seeds 1..N and reports the mean (plain Downpour at
8 workers scatters by several hundredths from run to run).

The baseline is one worker: Downpour with one worker is plain sequential training (nothing is
ever stale). The learning rate is Adam's 0.01, not the default 0.001: at 0.001 this MLP has
converged within the first epoch and 8 Downpour workers lose nothing after 4 epochs (measured:
AUC 0.9190 against 0.9183 for one worker), so that setting shows no staleness effect at all; at
0.01 the step is large enough for stale updates to matter. Asynchronous runs are not
deterministic: plain Downpour at 8 workers scatters from run to run (0.86 to 0.91 measured).

The figure is the validation AUC of the center after the last epoch, as the workers measured it
(``history.jsonl``). Prints a table (methods by workers, and each method's AUC loss at the most
workers against its own single-worker run) and the measured staleness percentiles, writes a plot
of AUC against workers, one line per method (``--plot``, default ``.bench/staleness.png``), and
last the AUC loss at 8 workers of the best method there against the best single-worker AUC of
all methods run (goal <= 0.01).

    python benchmarks/staleness.py                     # 24 runs, about 8 min on 2 cores
    python benchmarks/staleness.py --workers 1,8       # 12 runs: the AUC loss of every method
    python benchmarks/staleness.py --workers 1,8 --methods downpour,easgd --epochs 3
    python benchmarks/staleness.py --workers 1,4,8 --methods dynsgd --wires float32,bf16,topk
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_helpers import TimedRun, run_gridtrain, toy_dataset, train_section

GOAL = 0.01
WIRES = ("float32", "bf16", "topk", "topk-bf16")


def methods(every: int, alpha: float, tau: int, kappa: float) -> dict[str, dict[str, Any]]:
    """The ``train.algorithm`` section of each method."""
    downpour = {"algorithm": "downpour", "optimizer": "add", "every": every}
    gem = {"algorithm": "gem", "every": every, "kappa": kappa, "staleness_scaling": "none"}
    return {
        "downpour": {**downpour, "staleness_scaling": "none"},
        "dynsgd": {**downpour, "staleness_scaling": "dynsgd"},
        "easgd": {"algorithm": "easgd", "alpha": alpha, "every": tau},
        "adag": {"algorithm": "adag", "every": every, "staleness_scaling": "none"},
        "gem": {**gem, "gem_on": "server"},
        "gem-worker": {**gem, "gem_on": "worker"},
    }


@dataclass
class Cell:
    """The runs of one method at one worker count (one per seed); figures are their mean."""

    runs: list[TimedRun]

    @property
    def final_auc(self) -> float:
        return sum(run.final_auc for run in self.runs) / len(self.runs)

    @property
    def metrics(self) -> dict[str, Any]:
        return self.runs[0].metrics


def plot(results: dict[str, dict[int, Cell]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for method, runs in results.items():
        counts = sorted(runs)
        axes.plot(counts, [runs[n].final_auc for n in counts], marker="o", label=method)
    axes.set_xscale("log", base=2)
    all_counts = sorted({n for runs in results.values() for n in runs})
    axes.set_xticks(all_counts, [str(n) for n in all_counts])
    axes.set_xlabel("asynchronous workers")
    axes.set_ylabel("validation ROC AUC")
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4,8", help="comma-separated worker counts")
    parser.add_argument(
        "--methods", default="downpour,dynsgd,easgd,adag,gem,gem-worker", help="comma-separated"
    )
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--shard-events", type=int, default=2_000)
    parser.add_argument("--hidden", default="32,32", help="MLP hidden layer sizes")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--every", type=int, default=4, help="Downpour: steps between pushes")
    parser.add_argument("--alpha", type=float, default=0.2, help="EASGD moving rate")
    parser.add_argument("--tau", type=int, default=4, help="EASGD: steps between exchanges")
    parser.add_argument("--kappa", type=float, default=0.2, help="GEM proxy amplification")
    parser.add_argument(
        "--wires", default="float32", help="comma-separated train.wire encodings per method"
    )
    parser.add_argument("--topk", type=float, default=0.01, help="share a top-k push carries")
    parser.add_argument("--repeats", type=int, default=1, help="runs per cell (seeds 1..N)")
    parser.add_argument("--workdir", default=".bench/staleness")
    parser.add_argument("--plot", default=".bench/staleness.png")
    args = parser.parse_args()

    counts = [int(n) for n in args.workers.split(",")]
    table = methods(args.every, args.alpha, args.tau, args.kappa)
    chosen = args.methods.split(",")
    unknown = [m for m in chosen if m not in table]
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; choose from {', '.join(table)}")
    wires = args.wires.split(",")
    bad_wires = [w for w in wires if w not in WIRES]
    if bad_wires:
        parser.error(f"unknown wire(s) {', '.join(bad_wires)}; choose from {', '.join(WIRES)}")
    hidden = [int(n) for n in args.hidden.split(",")]
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    dataset = toy_dataset(work, args.events, args.shard_events)
    print(
        f"{args.events:,} toy events in shards of {args.shard_events:,}; mlp {hidden}, "
        f"{args.epochs} epochs, batch {args.batch_size}, learning rate {args.learning_rate:g}; "
        f"Downpour/ADAG/GEM every {args.every}, EASGD alpha {args.alpha} tau {args.tau}, "
        f"GEM kappa {args.kappa}; wire {', '.join(wires)} (top-k share {args.topk:g})",
        flush=True,
    )
    results: dict[str, dict[int, Cell]] = {}
    for method in chosen:
        for wire in wires:
            if wire.startswith("topk") and method == "easgd":
                print(f"  easgd/{wire}: not run (EASGD pushes its variable, top-k an update)")
                continue
            label = method if wire == "float32" else f"{method}/{wire}"
            results[label] = {}
            for workers in counts:
                cell = Cell([])
                for seed in range(1, args.repeats + 1):
                    train = train_section(
                        "mlp",
                        {"hidden": hidden},
                        args.epochs,
                        args.batch_size,
                        args.learning_rate,
                        table[method],
                        seed=seed,
                    )
                    train["wire"] = wire
                    if wire.startswith("topk"):
                        train["topk"] = args.topk
                    name = f"{label.replace('/', '-')}-{workers}-s{seed}"
                    run = run_gridtrain(name, dataset, train, work / name, workers)
                    cell.runs.append(run)
                    print(f"  {name:<22} AUC {run.final_auc:.4f}  {run.wall:.0f} s", flush=True)
                results[label][workers] = cell

    print(f"\nvalidation AUC after {args.epochs} epochs (mean of {args.repeats} seeds)")
    most = max(counts)
    header = f"{'method':<20}" + "".join(f"{n:>9}" for n in counts) + f"{'loss@' + str(most):>10}"
    print(header)
    for method, runs in results.items():
        cells = "".join(f"{runs[n].final_auc:>9.4f}" for n in counts)
        loss = runs[min(counts)].final_auc - runs[most].final_auc
        print(f"{method:<20}{cells}{loss:>10.4f}")
    compressed = [label for label in results if "/" in label and label.split("/")[0] in results]
    if compressed:
        print("\nAUC cost of the wire: the float32 AUC minus its own, same method and workers")
        print(f"{'method':<20}" + "".join(f"{n:>9}" for n in counts))
        for label in compressed:
            plain = results[label.split("/")[0]]
            cells = "".join(
                f"{plain[n].final_auc - results[label][n].final_auc:>9.4f}" for n in counts
            )
            print(f"{label:<20}{cells}")
    print("\nmeasured staleness of the pushes, p50/p99 (versions)")
    print(f"{'method':<20}" + "".join(f"{n:>9}" for n in counts))
    for method, runs in results.items():
        stale = [runs[n].metrics.get("staleness", {}) for n in counts]
        marks = [f"{s.get('p50', '-')}/{s.get('p99', '-')}" for s in stale]
        print(f"{method:<20}" + "".join(f"{mark:>9}" for mark in marks))
    plot(
        results,
        Path(args.plot),
        f"{args.events:,} toy events, mlp {hidden}, {args.epochs} epochs, batch "
        f"{args.batch_size}, learning rate {args.learning_rate:g}",
    )
    print(f"plot: {args.plot}")
    print(
        json.dumps(
            {m: {n: round(r.final_auc, 4) for n, r in runs.items()} for m, runs in results.items()}
        )
    )
    print(f"benchmark wall time: {time.perf_counter() - started:.0f} s")
    if 1 not in counts or 8 not in counts:
        print("AUC loss at 8 workers of the best method vs 1 worker: n/a (run --workers with 1,8)")
        return
    reference = max(runs[1].final_auc for runs in results.values())
    best = max(results, key=lambda m: results[m][8].final_auc)
    loss = reference - results[best][8].final_auc
    print(f"best at 8 workers: {best}; best 1-worker AUC {reference:.4f}")
    print(f"AUC loss at 8 workers of the best method vs 1 worker: {loss:.4f} (goal <= {GOAL})")


if __name__ == "__main__":
    main()
