"""Training overhead: gridtrain with 1 and 2 workers against plain single-process Keras ``fit``.

In one run, on the same toy dataset (by default 200,000 events, the repository's config, shards of
32,768), with the same model builder, learning rate, batch size and epochs, each in a fresh process
and timed from that process's launch (TensorFlow import, data loading and model building included):

  plain-keras   the baseline, what a user writes: load every training shard into memory, call
                ``model.fit(x, y, sample_weight=w, batch_size=B, epochs=E, shuffle=True)`` with a
                callback computing the weighted validation ROC AUC at each epoch end, then
                ``model.save``. The shards are read and standardised with gridtrain's own
                ``InputBuilder`` (h5py; the manifest's means and stds, padding zeroed), so both
                sides see bit-identical inputs and differ only in how they train.
  gridtrain-1   ``gridtrain train --workers 1``: the parameter server in the driver, one worker
                process; Downpour with optimizer ``add``, exchanging every 8 steps (the defaults a
                user keeps with one worker); early stopping off.
  gridtrain-2   the same with 2 workers (the 2 cores split between them).

For each: the wall time from launch to a target validation AUC (the plain run's final AUC minus
``--margin``, 0.005), the final (last epoch's) validation AUC, the total wall time (gridtrain's
includes its final evaluation, model and report plots), the start-up time (launch to the first
training step), training events/s (events over the seconds spent in training steps, summed over
workers) and, for gridtrain, the share of worker time spent exchanging with the PS. The last line
is the ratio of time to target, gridtrain with 1 worker over plain Keras (goal <= 1.15).

    python benchmarks/train.py                        # deepsets, 12 epochs: about 4-5 min here
    python benchmarks/train.py --model mlp --epochs 20 --events 100000
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
    from gridtrain.train.data import InputBuilder
    from gridtrain.train.settings import select_inputs

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


def run_plain(dataset: dict[str, Any], train: dict[str, Any], work: Path) -> TimedRun:
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
        name="plain-keras",
        wall=wall,
        curve=[(e["unix_time"] - launch, e["auc"]) for e in result["epochs"]],
        first_step=result["first_step"] - launch,
        events_per_s=result["events"] / result["train_seconds"],
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
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--every", type=int, default=8, help="local steps between exchanges")
    parser.add_argument("--margin", type=float, default=0.005, help="target = plain AUC - margin")
    parser.add_argument("--workdir", default=".bench/train")
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
    runs = [run_plain(dataset, train, work)]
    print(f"  plain-keras done in {runs[0].wall:.0f} s", flush=True)
    for workers in (1, 2):
        name = f"gridtrain-{workers}"
        runs.append(run_gridtrain(name, dataset, train, work / name, workers))
        print(f"  {name} done in {runs[-1].wall:.0f} s", flush=True)

    target = runs[0].final_auc - args.margin
    print(
        f"\ntarget validation AUC: {target:.4f} (plain Keras final {runs[0].final_auc:.4f} "
        f"- {args.margin})"
    )
    header = (
        f"{'run':<13}{'to target s':>12}{'final AUC':>11}{'wall s':>9}{'start-up s':>12}"
        f"{'train ev/s':>12}{'PS share':>10}"
    )
    print(header)
    for run in runs:
        print(
            f"{run.name:<13}{fmt(run.time_to(target), '.1f', 'never'):>12}{run.final_auc:>11.4f}"
            f"{run.wall:>9.1f}{fmt(run.first_step):>12}{run.events_per_s:>12,.0f}"
            f"{fmt(run.ps_share, '.1%'):>10}"
        )
    print("\nvalidation AUC by epoch (seconds since launch):")
    for run in runs:
        print(f"  {run.name:<13}" + " ".join(f"{s:.0f}s:{auc:.4f}" for s, auc in run.curve))
    print(f"benchmark wall time: {time.perf_counter() - started:.0f} s")
    plain, single = runs[0].time_to(target), runs[1].time_to(target)
    ratio = single / plain if single is not None and plain is not None else float("inf")
    print(f"ratio gridtrain-1-worker/plain-keras time-to-target: {ratio:.2f} (goal <= {GOAL})")


if __name__ == "__main__":
    main()
