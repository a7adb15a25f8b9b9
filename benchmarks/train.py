"""Training overhead: gridtrain with 1 and 2 workers against plain single-process Keras ``fit``.

In one run, on the same toy dataset (by default 200,000 events, the repository's config, shards of
32,768), with the same model builder (default: deepsets over the constituents), learning rate,
batch size and epochs, each in a fresh process and timed from that process's launch (TensorFlow
import, data loading and model building included):

  plain-keras   the baseline, what a user writes: load every training shard into memory, call
                ``model.fit(x, y, sample_weight=w, batch_size=B, epochs=E, shuffle=True)`` with a
                callback computing the weighted validation ROC AUC at each epoch end, then
                ``model.save``; seeded with ``keras.utils.set_random_seed``, as gridtrain seeds its
                runs, so repeats differ in timing only. The shards are read and standardised
                with gridtrain's own ``InputBuilder`` (h5py; the manifest's means and stds,
                padding zeroed), so both sides see bit-identical inputs and differ only in how
                they train.
  gridtrain-1   ``gridtrain train --workers 1``: the parameter server in the driver, one worker
                process; Downpour with optimizer ``add``, exchanging every 8 steps (the defaults a
                user keeps with one worker); early stopping off.
  gridtrain-2   the same with 2 workers (the 2 cores split between them).

plain-keras and gridtrain-1 run ``--repeat`` times (default 2), interleaved, and the best of each
counts: the machine may be shared, and a busy spell should not decide the ratio.

For each: the wall time from launch to a target validation AUC (the lowest final AUC of the plain
runs minus ``--margin``, 0.005), the final (last epoch's) validation AUC, the time from launch to
the last epoch's validation, the total wall time (gridtrain's includes its final evaluation, model
and report plots), the start-up time (launch to the first training step), training events/s
(events over the seconds spent in training steps, summed over workers) and, for gridtrain, the
share of worker time spent exchanging with the PS. The last line is the ratio of time to target,
gridtrain with 1 worker over plain Keras (goal <= 1.15); the line before it, the same ratio for
the time to complete all epochs, which does not depend on where the target falls.

    python benchmarks/train.py                        # deepsets, 15 epochs: 5-6 min here
    python benchmarks/train.py --model mlp --epochs 20 --events 100000 --repeat 1

``--mode steps`` measures the worker's training steps alone, in this process, on the same toy
shards and model: today's loop (``train_on_batch`` per batch) against compiled windows (the
``every`` steps between two exchanges in one ``tf.function`` call, ``gridtrain.train.steps``),
both with ``--threads`` TensorFlow threads, warmed up (traced) before timing, interleaved
``--repeat`` times, best of each; no exchange on either side. It checks that both end with the same
weights (bit for bit on the CPU) and prints events/s per worker; last line the ratio compiled /
per-batch.

    python benchmarks/train.py --mode steps --events 100000 --threads 1

``--mode overlap`` trains with ``--workers`` workers (default 2) with ``train.overlap`` off and on,
interleaved ``--repeat`` times, and prints the validation AUC by epoch, the time to the last
epoch, and the share of worker time spent waiting on the network and overlapped; last line the
final validation AUC with overlap minus without (mean over the repeats).

    python benchmarks/train.py --mode overlap --model mlp --epochs 4 --events 50000 --repeat 2

``--mode latency`` times the worker's loop (compiled windows, an exchange every ``--every`` steps,
a flush at the end of each shard) in this process against an in-process Downpour parameter server
whose every exchange takes ``--rtt-ms`` (default 30, a continental round trip; bandwidth is not
shaped): synchronous exchanges against overlapped ones, warmed up, interleaved ``--repeat``
times, best of each; last line the ratio of events/s, overlapped / synchronous.

    python benchmarks/train.py --mode latency --model mlp --events 50000 --rtt-ms 30
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_helpers import QUIET_TF, TimedRun, fmt, run_gridtrain, toy_dataset, train_section

GOAL = 1.15
PREDICT_BATCH = 8192  # what the workers use for validation


def plain_child(dataset: dict[str, Any], train: dict[str, Any]) -> None:
    """The baseline, in its own process; prints its epochs as JSON (absolute times)."""
    # gridtrain.train first: it loads the XRootD client, which crashes if loaded after TensorFlow
    import gridtrain.train  # noqa: F401

    # isort: split
    import keras
    import numpy as np

    from gridtrain.data.manifest import load_manifest
    from gridtrain.evaluation import weighted_auc
    from gridtrain.models import InputSpec, arrange_inputs, build_model, model_input_names
    from gridtrain.train.inputs import InputBuilder
    from gridtrain.train.settings import select_inputs

    keras.utils.set_random_seed(train["seed"])  # seeded like gridtrain: repeats differ in time only
    manifest_path = str(Path(dataset["outdir"]) / "manifest.json")
    manifest = load_manifest(manifest_path)
    features, groups = select_inputs(manifest, None, manifest_path)
    model = build_model(
        train["model"]["name"],
        train["model"]["params"],
        InputSpec(features, groups),
        learning_rate=train["learning_rate"],
        seed=train["seed"],
    )
    builder = InputBuilder(manifest, features, groups, model_input_names(model))

    def load(split: str) -> tuple[Any, Any, Any]:
        parts = [builder.load(Path(dataset["outdir"]) / e.path) for e in manifest.shards[split]]
        inputs = {k: np.concatenate([p.inputs[k] for p in parts]) for k in parts[0].inputs}
        labels = np.concatenate([p.labels for p in parts])
        weights = np.concatenate([p.weights for p in parts])
        return arrange_inputs(model, inputs), labels, weights

    x, y, w = load("train")
    x_val, y_val, w_val = load("validation")

    class ValidationAUC(keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.epochs: list[dict[str, float]] = []
            self.train_seconds = 0.0
            self.first_step: float | None = None
            self._began = 0.0

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self._began = time.perf_counter()
            if self.first_step is None:
                self.first_step = time.time()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.train_seconds += time.perf_counter() - self._began
            scores = self.model.predict(x_val, batch_size=PREDICT_BATCH, verbose=0)
            auc = weighted_auc(y_val, scores.reshape(-1), w_val)
            self.epochs.append({"unix_time": time.time(), "auc": auc})

    callback = ValidationAUC()
    model.fit(
        x,
        y,
        sample_weight=w,
        batch_size=train["batch_size"],
        epochs=train["epochs"],
        shuffle=True,
        verbose=0,
        callbacks=[callback],
    )
    model.save(Path(dataset["outdir"]).parent / "plain-keras.keras")
    result = {
        "epochs": callback.epochs,
        "first_step": callback.first_step,
        "events": int(y.size) * train["epochs"],
        "train_seconds": callback.train_seconds,
    }
    print(json.dumps(result))


def run_plain(dataset: dict[str, Any], train: dict[str, Any], work: Path, name: str) -> TimedRun:
    spec = work / "plain-keras.json"
    spec.write_text(json.dumps({"dataset": dataset, "train": train}))
    launch = time.time()
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(spec)],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, **QUIET_TF},
    )
    wall = time.time() - launch
    if out.returncode != 0:
        raise RuntimeError(f"plain Keras run failed ({out.returncode}):\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return TimedRun(
        name=name,
        wall=wall,
        curve=[(e["unix_time"] - launch, e["auc"]) for e in result["epochs"]],
        first_step=result["first_step"] - launch,
        events_per_s=result["events"] / result["train_seconds"],
    )


def steps_benchmark(args: argparse.Namespace, dataset: dict[str, Any]) -> None:
    """Per-batch ``train_on_batch`` against compiled windows, in this process."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(args.threads, 2))
    import gridtrain.train  # noqa: F401  # XRootD before TensorFlow's libraries

    # isort: split
    import keras
    import numpy as np

    from gridtrain.data.manifest import load_manifest
    from gridtrain.models import InputSpec, arrange_inputs, build_model, model_input_names
    from gridtrain.train.inputs import InputBuilder
    from gridtrain.train.settings import select_inputs
    from gridtrain.train.steps import WindowSteps, windows

    manifest_path = Path(dataset["outdir"]) / "manifest.json"
    manifest = load_manifest(manifest_path)
    features, groups = select_inputs(manifest, None, str(manifest_path))

    def model() -> Any:
        keras.utils.set_random_seed(1)
        return build_model(
            args.model,
            json.loads(args.params),
            InputSpec(features, groups),
            learning_rate=args.learning_rate,
            seed=1,
        )

    models = {"per-batch": model(), "compiled": model()}
    builder = InputBuilder(manifest, features, groups, model_input_names(models["compiled"]))
    shards = [builder.load(Path(dataset["outdir"]) / e.path) for e in manifest.shards["train"]]
    events = sum(shard.events for shard in shards)
    batch, every = args.batch_size, args.every

    def per_batch(model: Any) -> None:  # the worker's loop before compiled windows
        losses = []
        for shard in shards:
            for inputs, labels, weights in shard.batches(batch):
                result = model.train_on_batch(
                    arrange_inputs(model, inputs), labels, sample_weight=weights
                )
                losses.append(float(result[0] if isinstance(result, list) else result))

    steppers = {"compiled": WindowSteps(models["compiled"])}

    def compiled(model: Any) -> None:
        del model
        losses = []
        for shard in shards:
            sizes = iter(lambda: every, None)
            for _, inputs, labels, weights in windows(
                shard.inputs, shard.labels, shard.weights, batch, sizes
            ):
                losses.extend(float(x) for x in steppers["compiled"].train(inputs, labels, weights))

    loops = {"per-batch": per_batch, "compiled": compiled}
    for name, loop in loops.items():  # warm up: trace every function, same steps on both sides
        loop(models[name])
    same = all(
        np.array_equal(a, b)
        for a, b in zip(
            models["per-batch"].get_weights(), models["compiled"].get_weights(), strict=True
        )
    )
    print(
        f"{len(shards)} shards, {events:,} events per pass, batch {batch}, windows of {every} "
        f"steps, {args.threads} TensorFlow thread(s); after the warm-up pass both models' "
        f"weights are {'bit for bit identical' if same else 'DIFFERENT'}",
        flush=True,
    )
    best: dict[str, float] = {}
    for repeat in range(args.repeat):
        for name, loop in loops.items():
            began = time.perf_counter()
            loop(models[name])
            rate = events / (time.perf_counter() - began)
            best[name] = max(best.get(name, 0.0), rate)
            print(f"  pass {repeat + 1} {name:<10} {rate:>10,.0f} events/s", flush=True)
    for name, rate in best.items():
        print(f"{name:<10} best {rate:>10,.0f} events/s per worker")
    ratio = best["compiled"] / best["per-batch"]
    print(f"ratio compiled-windows/per-batch events/s per worker: {ratio:.2f}")


def latency_benchmark(args: argparse.Namespace, dataset: dict[str, Any]) -> None:
    """The worker's loop against a parameter server a round trip away: sync against overlap."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(min(args.threads, 2))
    import gridtrain.train  # noqa: F401  # XRootD before TensorFlow's libraries

    # isort: split
    import keras
    import numpy as np

    from gridtrain.data.manifest import load_manifest
    from gridtrain.models import InputSpec, build_model, model_input_names
    from gridtrain.ps.client import Reply
    from gridtrain.ps.exchange import Exchange
    from gridtrain.ps.rules import AlgorithmConfig
    from gridtrain.train.inputs import InputBuilder
    from gridtrain.train.overlap import OverlappedExchange
    from gridtrain.train.settings import select_inputs
    from gridtrain.train.steps import WindowSteps, windows

    manifest_path = Path(dataset["outdir"]) / "manifest.json"
    manifest = load_manifest(manifest_path)
    features, groups = select_inputs(manifest, None, str(manifest_path))
    keras.utils.set_random_seed(1)
    model = build_model(
        args.model,
        json.loads(args.params),
        InputSpec(features, groups),
        learning_rate=args.learning_rate,
        seed=1,
    )
    builder = InputBuilder(manifest, features, groups, model_input_names(model))
    shards = [builder.load(Path(dataset["outdir"]) / e.path) for e in manifest.shards["train"]]
    events = sum(shard.events for shard in shards)
    rtt = args.rtt_ms / 1000

    class DistantServer:
        """Downpour (add) in this process; every exchange takes the round trip ``rtt``."""

        algorithm = AlgorithmConfig(algorithm="downpour", optimizer="add")

        def __init__(self) -> None:
            self.center = [np.array(w) for w in model.get_weights()]
            self.version = 0

        def pull(self) -> tuple[int, list[np.ndarray]]:
            time.sleep(rtt)
            return self.version, [c.copy() for c in self.center]

        def push_pull(self, update: list[np.ndarray], base_version: int) -> Reply:
            del base_version
            time.sleep(rtt)
            for c, u in zip(self.center, update, strict=True):
                c += u
            self.version += 1
            return Reply(self.version, [c.copy() for c in self.center], False)

    steps = WindowSteps(model)
    every = args.every

    def one_pass(overlap: bool) -> float:
        server = DistantServer()
        exchange = Exchange(server, 1 if overlap else every)  # type: ignore[arg-type]
        stepper = OverlappedExchange(exchange, every) if overlap else exchange
        model.set_weights(exchange.start())
        began = time.perf_counter()
        try:
            for shard in shards:
                room = iter(lambda: every - stepper.steps % every, None)
                for count, inputs, labels, weights in windows(
                    shard.inputs, shard.labels, shard.weights, args.batch_size, room
                ):
                    steps.train(inputs, labels, weights)
                    if isinstance(stepper, OverlappedExchange):
                        new = stepper.after_steps(count, model.get_weights)
                    else:
                        for _ in range(count):
                            new = stepper.after_step(model.get_weights)
                    if new is not None:
                        model.set_weights(new)
                new = stepper.flush(model.get_weights)
                if new is not None:
                    model.set_weights(new)
        finally:
            if isinstance(stepper, OverlappedExchange):
                stepper.close()
        return events / (time.perf_counter() - began)

    print(
        f"{len(shards)} shards, {events:,} events per pass, batch {args.batch_size}, an exchange "
        f"every {every} steps, round trip {args.rtt_ms:g} ms, {args.threads} TensorFlow "
        "thread(s)",
        flush=True,
    )
    one_pass(False)  # warm-up: traces the window function
    best = {"synchronous": 0.0, "overlapped": 0.0}
    for repeat in range(args.repeat):
        for name, so_far in best.items():
            rate = one_pass(name == "overlapped")
            best[name] = max(so_far, rate)
            print(f"  pass {repeat + 1} {name:<12} {rate:>10,.0f} events/s", flush=True)
    for name, rate in best.items():
        print(f"{name:<12} best {rate:>10,.0f} events/s per worker")
    ratio = best["overlapped"] / best["synchronous"]
    print(f"ratio overlapped/synchronous events/s at {args.rtt_ms:g} ms round trip: {ratio:.2f}")


def overlap_benchmark(args: argparse.Namespace, dataset: dict[str, Any], work: Path) -> None:
    """The same training with ``train.overlap`` off and on: validation AUC and network wait."""
    import statistics

    algorithm = {"algorithm": "downpour", "optimizer": "add", "every": args.every}
    runs: dict[bool, list[TimedRun]] = {False: [], True: []}
    for repeat in range(1, args.repeat + 1):
        for overlap in (False, True):
            train = train_section(
                args.model,
                json.loads(args.params),
                args.epochs,
                args.batch_size,
                args.learning_rate,
                algorithm,
                seed=repeat,
            )
            train["overlap"] = overlap
            name = f"overlap-{'on' if overlap else 'off'}#{repeat}"
            run = run_gridtrain(name, dataset, train, work / name.replace("#", "-"), args.workers)
            runs[overlap].append(run)
            print(f"  {name} done in {run.wall:.0f} s", flush=True)
    print(
        f"\n{'run':<15}{'final AUC':>10}{'all epochs s':>14}{'train ev/s':>12}{'waiting':>9}"
        f"{'overlapped':>12}"
    )
    for run in [*runs[False], *runs[True]]:
        print(
            f"{run.name:<15}{run.final_auc:>10.4f}{run.curve[-1][0]:>14.1f}"
            f"{run.events_per_s:>12,.0f}{run.metrics['ps_wait_fraction']:>9.1%}"
            f"{run.metrics['ps_overlap_fraction']:>12.1%}"
        )
    print("\nvalidation AUC by epoch:")
    for run in [*runs[False], *runs[True]]:
        print(f"  {run.name:<15}" + " ".join(f"{auc:.4f}" for _, auc in run.curve))
    off = statistics.mean(run.final_auc for run in runs[False])
    on = statistics.mean(run.final_auc for run in runs[True])
    print(
        f"final validation AUC with overlap minus without, {args.workers} workers, mean of "
        f"{args.repeat}: {on - off:+.4f} ({on:.4f} vs {off:.4f})"
    )


def warm_up() -> None:
    """One TensorFlow import first, so no measured run pays for a cold page cache alone."""
    subprocess.run(
        [sys.executable, "-c", "import keras, tensorflow"],
        check=True,
        capture_output=True,
        env={**os.environ, **QUIET_TF},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="toy events (both classes)")
    parser.add_argument("--shard-events", type=int, default=32_768)
    parser.add_argument("--model", default="deepsets", help="mlp or deepsets")
    parser.add_argument("--params", default="{}", help="model parameters as JSON")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--every", type=int, default=8, help="local steps between exchanges")
    parser.add_argument("--margin", type=float, default=0.005, help="target = plain AUC - margin")
    parser.add_argument(
        "--repeat", type=int, default=2, help="runs of plain Keras and of gridtrain-1 (best counts)"
    )
    parser.add_argument("--workdir", default=".bench/train")
    parser.add_argument(
        "--mode",
        choices=("keras", "steps", "overlap", "latency"),
        default="keras",
        help="keras: against plain Keras fit (default); steps: compiled windows against "
        "train_on_batch; overlap: train.overlap off against on; latency: sync against overlapped "
        "exchanges a round trip away",
    )
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow threads (steps)")
    parser.add_argument("--workers", type=int, default=2, help="workers (overlap)")
    parser.add_argument("--rtt-ms", type=float, default=30.0, help="round trip (latency)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(Path(args.child).read_text())
        plain_child(spec["dataset"], spec["train"])
        return

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    dataset = toy_dataset(work, args.events, args.shard_events)
    if args.mode == "steps":
        steps_benchmark(args, dataset)
        return
    if args.mode == "overlap":
        overlap_benchmark(args, dataset, work)
        return
    if args.mode == "latency":
        latency_benchmark(args, dataset)
        return
    train = train_section(
        args.model,
        json.loads(args.params),
        args.epochs,
        args.batch_size,
        args.learning_rate,
        {"algorithm": "downpour", "optimizer": "add", "every": args.every},
    )
    print(
        f"{args.events:,} toy events, model {args.model} {args.params}, {args.epochs} epochs, "
        f"batch {args.batch_size}, learning rate {args.learning_rate:g}; gridtrain: Downpour "
        f"(add) every {args.every} steps",
        flush=True,
    )
    warm_up()
    plains: list[TimedRun] = []
    singles: list[TimedRun] = []
    for repeat in range(1, args.repeat + 1):  # interleaved, so a busy spell hits both sides
        suffix = f"#{repeat}" if args.repeat > 1 else ""
        plains.append(run_plain(dataset, train, work, f"plain-keras{suffix}"))
        print(f"  {plains[-1].name} done in {plains[-1].wall:.0f} s", flush=True)
        name = f"gridtrain-1{suffix}"
        singles.append(run_gridtrain(name, dataset, train, work / name.replace("#", "-"), 1))
        print(f"  {name} done in {singles[-1].wall:.0f} s", flush=True)
    double = run_gridtrain("gridtrain-2", dataset, train, work / "gridtrain-2", 2)
    print(f"  gridtrain-2 done in {double.wall:.0f} s", flush=True)
    runs = [*plains, *singles, double]

    plain_final = min(run.final_auc for run in plains)
    target = plain_final - args.margin
    print(
        f"\ntarget validation AUC: {target:.4f} (plain Keras final {plain_final:.4f} "
        f"- {args.margin})"
    )
    header = (
        f"{'run':<15}{'to target s':>12}{'final AUC':>11}{'all epochs s':>14}{'wall s':>9}"
        f"{'start-up s':>12}{'train ev/s':>12}{'PS share':>10}"
    )
    print(header)
    for run in runs:
        print(
            f"{run.name:<15}{fmt(run.time_to(target), '.1f', 'never'):>12}{run.final_auc:>11.4f}"
            f"{run.curve[-1][0]:>14.1f}{run.wall:>9.1f}{fmt(run.first_step):>12}"
            f"{run.events_per_s:>12,.0f}{fmt(run.ps_share, '.1%'):>10}"
        )
    print("\nvalidation AUC by epoch (seconds since launch):")
    for run in runs:
        print(f"  {run.name:<15}" + " ".join(f"{s:.0f}s:{auc:.4f}" for s, auc in run.curve))
    print(f"benchmark wall time: {time.perf_counter() - started:.0f} s")
    best = "best of each" if args.repeat > 1 else "one run each"
    epochs_ratio = min(r.curve[-1][0] for r in singles) / min(r.curve[-1][0] for r in plains)
    print(
        f"ratio gridtrain-1-worker/plain-keras time to all {args.epochs} epochs: "
        f"{epochs_ratio:.2f} ({best})"
    )
    plain = min((t for r in plains if (t := r.time_to(target)) is not None), default=None)
    single = min((t for r in singles if (t := r.time_to(target)) is not None), default=None)
    ratio = single / plain if single is not None and plain is not None else float("inf")
    print(f"ratio gridtrain-1-worker/plain-keras time-to-target: {ratio:.2f} (goal <= {GOAL})")


if __name__ == "__main__":
    main()
