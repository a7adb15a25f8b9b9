"""Training overhead: gridtrain with 1 and 2 workers against plain single-process Keras ``fit``.

In one run, on the same toy dataset (by default 200,000 events, the repository's config, shards of
32,768), with the same model builder (default: deepsets over the constituents), learning rate,
batch size and epochs, each in a fresh process and timed from that process's launch (TensorFlow
import, data loading and model building included):

  plain-keras   the baseline, what a skilled user writes: load every training shard into memory,
                compile with ``steps_per_execution`` = ``every``, call
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

The other modes compare with Keras at its fastest: ``fit`` with ``steps_per_execution``, on the
same events and threads, warmed up. In the in-process modes (steps, latency) that is every
combination of ``--steps-per-execution`` (default ``every`` and 64) and input (the numpy arrays,
and a ``tf.data`` dataset of whole batches made once), each a two-epoch ``fit`` timed on its
second epoch; the fastest is the limit (``KerasFit``).

``--mode steps`` measures the worker's training steps alone, in this process, on the same toy
shards and model: compiled windows (the ``every`` steps between two exchanges in one
``tf.function`` call, ``gridtrain.train.steps``) against the Keras ``fit`` limit, with
``--threads`` TensorFlow threads, warmed up, interleaved ``--repeat`` times, best of each; no
exchange. Prints events/s per worker; last line the ratio compiled windows / fastest ``fit``.

    python benchmarks/train.py --mode steps --model mlp --events 50000 --shard-events 8192

``--mode latency`` times the worker's loop (compiled windows, an exchange every ``--every`` steps,
a flush at the end of each shard) in this process against an in-process Downpour parameter server
whose every exchange takes ``--rtt-ms`` (default 30, a continental round trip; bandwidth is not
shaped), synchronous and overlapped, against the Keras ``fit`` limit with no parameter server
(what the same events cost to train locally); warmed up, interleaved ``--repeat`` times, best of
each; last line the ratio of events/s, overlapped / fastest ``fit``.

    python benchmarks/train.py --mode latency --model mlp --events 50000 --rtt-ms 30

``--mode overlap`` trains with ``--workers`` workers (default 2) with ``train.overlap`` off and on,
and the same training in plain Keras ``fit`` (one process, ``steps_per_execution`` = ``every``,
the same seed), interleaved ``--repeat`` times (seeds 1..repeat); prints the validation AUC by
epoch, the time to the last epoch, and the share of worker time spent waiting on the network and
overlapped; the line before last is the final validation AUC with overlap minus without, the
last the final AUC with overlap minus Keras ``fit``'s (means over the repeats).

    python benchmarks/train.py --mode overlap --model mlp --epochs 4 --events 50000 --repeat 2

``--mode floor`` times a whole ``gridtrain train --workers 1`` of one epoch (default 20,000 toy
events, MLP [64, 64]) from its launch to its exit, against a plain Keras script in a fresh
process doing the same: import Keras, load the same standardised events (an uncompressed
``.npz`` written once from the shards, untimed), build the same MLP, ``fit`` one epoch
(``steps_per_execution`` = ``every``), score the validation events, save the model. Interleaved
``--repeat`` times, best of each; last line the ratio of wall times (goal <= 1.3): gridtrain's
fixed cost around a training.

    python benchmarks/train.py --mode floor               # under a minute here
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
FLOOR_GOAL = 1.3
PREDICT_BATCH = 8192  # what the workers use for validation


def plain_child(dataset: dict[str, Any], train: dict[str, Any], steps_per_execution: int) -> None:
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
    model.compile(  # as the builder compiles it, running steps_per_execution steps per call
        optimizer=keras.optimizers.Adam(train["learning_rate"]),
        loss=model.loss,
        weighted_metrics=[keras.metrics.BinaryAccuracy(name="accuracy")],
        steps_per_execution=steps_per_execution,
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


def run_plain(
    dataset: dict[str, Any], train: dict[str, Any], work: Path, name: str, steps_per_execution: int
) -> TimedRun:
    spec = work / "plain-keras.json"
    spec.write_text(
        json.dumps({"dataset": dataset, "train": train, "steps_per_execution": steps_per_execution})
    )
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


def set_threads(threads: int) -> None:
    """The backend's threads for the in-process modes (every side of them runs in this process),
    set up as a worker sets them up (``KERAS_BACKEND`` from ``--backend``)."""
    import gridtrain.train  # noqa: F401  # XRootD before TensorFlow's libraries
    from gridtrain.train.backends import configure_devices

    configure_devices(threads)


def in_process_setup(args: argparse.Namespace, dataset: dict[str, Any]) -> tuple[Any, Any, list]:
    """The model builder, the training shards (standardised, in memory) and their model."""
    import keras

    from gridtrain.data.manifest import load_manifest
    from gridtrain.models import InputSpec, build_model, model_input_names
    from gridtrain.train.inputs import InputBuilder
    from gridtrain.train.settings import select_inputs

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

    first = model()
    builder = InputBuilder(manifest, features, groups, model_input_names(first))
    shards = [builder.load(Path(dataset["outdir"]) / e.path) for e in manifest.shards["train"]]
    return model, first, shards


class KerasFit:
    """The baseline of the in-process modes: Keras ``fit`` with ``steps_per_execution``.

    The same training events (the shards concatenated in order, in memory), batch size and
    threads, two ways of feeding them: the numpy arrays (``shuffle=False``: the shards are
    shuffled at conversion, a shuffle would only cost) and a ``tf.data`` dataset whose every
    element is one whole batch, made once (full batches only: the cheapest input pipeline fit
    can have). One model per way and ``steps_per_execution`` candidate, each compiled like the
    builder compiles it (Adam, the task's loss, the weighted accuracy) plus
    ``steps_per_execution``. A pass is a ``fit`` of two epochs timed from the second epoch's start
    to its end (the first traces and builds the data pipeline): Keras at its fastest, warmed up.
    The fastest of all is the limit.
    """

    def __init__(
        self, build: Any, shards: list, batch_size: int, candidates: list[int], rate: float
    ) -> None:
        import keras
        import numpy as np

        from gridtrain.models import arrange_inputs

        # tf.data is TensorFlow's; PyTorch's fit runs one step per call (steps_per_execution 1)
        tensorflow = keras.backend.backend() == "tensorflow"
        if keras.backend.backend() == "torch":
            candidates = [1]
        self.models: dict[str, tuple[Any, str]] = {}
        for steps in candidates:
            for feed in ("arrays", "tf.data") if tensorflow else ("arrays",):
                model = build()
                model.compile(
                    optimizer=keras.optimizers.Adam(rate),
                    loss=model.loss,
                    weighted_metrics=[keras.metrics.BinaryAccuracy(name="accuracy")],
                    steps_per_execution=steps,
                )
                self.models[f"fit spe={steps} {feed}"] = (model, feed)
        inputs = {k: np.concatenate([s.inputs[k] for s in shards]) for k in shards[0].inputs}
        self.x = arrange_inputs(next(iter(self.models.values()))[0], inputs)
        self.y = np.concatenate([s.labels for s in shards])
        self.w = np.concatenate([s.weights for s in shards])
        self.batch_size = batch_size
        self.events = int(self.y.shape[0])
        self.full = self.events // batch_size * batch_size

        def batches(array: np.ndarray) -> np.ndarray:
            return array[: self.full].reshape((-1, batch_size, *array.shape[1:]))

        if tensorflow:
            import tensorflow as tf

            self.dataset = tf.data.Dataset.from_tensor_slices(
                (tf.nest.map_structure(batches, self.x), batches(self.y), batches(self.w))
            ).prefetch(tf.data.AUTOTUNE)

    def rate(self, name: str) -> float:
        """Events/s of the second epoch of one two-epoch ``fit``."""
        import keras

        class Timer(keras.callbacks.Callback):  # type: ignore[misc]
            def __init__(self) -> None:
                super().__init__()
                self.seconds: list[float] = []
                self.began = 0.0

            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                self.began = time.perf_counter()

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                self.seconds.append(time.perf_counter() - self.began)

        timer = Timer()
        model, feed = self.models[name]
        if feed == "tf.data":
            model.fit(self.dataset, epochs=2, shuffle=False, verbose=0, callbacks=[timer])
            return self.full / timer.seconds[-1]
        model.fit(
            self.x,
            self.y,
            sample_weight=self.w,
            batch_size=self.batch_size,
            epochs=2,
            shuffle=False,
            verbose=0,
            callbacks=[timer],
        )
        return self.events / timer.seconds[-1]


def spe_candidates(args: argparse.Namespace) -> list[int]:
    text = args.steps_per_execution or f"{args.every},64"
    return sorted({int(n) for n in text.split(",")})


def steps_benchmark(args: argparse.Namespace, dataset: dict[str, Any]) -> None:
    """Compiled windows (gridtrain's worker loop, no exchange) against Keras ``fit``."""
    set_threads(args.threads)
    from gridtrain.train.steps import WindowSteps, windows

    build, model, shards = in_process_setup(args, dataset)
    events = sum(shard.events for shard in shards)
    batch, every = args.batch_size, args.every
    fit = KerasFit(build, shards, batch, spe_candidates(args), args.learning_rate)
    steps = WindowSteps(model)

    def compiled() -> float:
        began = time.perf_counter()
        for shard in shards:
            sizes = iter(lambda: every, None)
            for _, inputs, labels, weights in windows(
                shard.inputs, shard.labels, shard.weights, batch, sizes
            ):
                steps.train(inputs, labels, weights)
        return events / (time.perf_counter() - began)

    compiled()  # warm-up: traces the window function
    import keras

    candidates = sorted({int(name.split("=")[1].split()[0]) for name in fit.models})
    print(
        f"Keras backend {keras.backend.backend()}: {len(shards)} shards, {events:,} events per "
        f"pass, batch {batch}, windows of {every} steps, {args.threads} thread(s); baseline Keras "
        f"fit (second epoch of each call) with steps_per_execution "
        f"{', '.join(str(n) for n in candidates)}",
        flush=True,
    )
    passes: dict[str, Any] = {name: (lambda n=name: fit.rate(n)) for name in fit.models}
    passes["compiled windows"] = compiled
    best: dict[str, float] = {}
    for repeat in range(args.repeat):  # interleaved: a busy spell hits every side
        for name, one_pass in passes.items():
            rate = one_pass()
            best[name] = max(best.get(name, 0.0), rate)
            print(f"  pass {repeat + 1} {name:<22} {rate:>10,.0f} events/s", flush=True)
    limit = max(fit.models, key=lambda name: best[name])
    for name, rate in best.items():
        mark = "  <- limit" if name == limit else ""
        print(f"{name:<22} best {rate:>10,.0f} events/s per worker{mark}")
    ratio = best["compiled windows"] / best[limit]
    print(f"ratio gridtrain compiled windows/Keras fit ({limit}) events/s per worker: {ratio:.2f}")


def latency_benchmark(args: argparse.Namespace, dataset: dict[str, Any]) -> None:
    """The worker's loop against a parameter server a round trip away, against Keras ``fit``."""
    set_threads(args.threads)
    import numpy as np

    from gridtrain.ps.client import Reply
    from gridtrain.ps.exchange import Exchange
    from gridtrain.ps.rules import AlgorithmConfig
    from gridtrain.train.overlap import OverlappedExchange
    from gridtrain.train.steps import WindowSteps, windows

    build, model, shards = in_process_setup(args, dataset)
    events = sum(shard.events for shard in shards)
    rtt = args.rtt_ms / 1000
    fit = KerasFit(build, shards, args.batch_size, spe_candidates(args), args.learning_rate)

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
        "thread(s); baseline Keras fit (second epoch of each call, no parameter server) with "
        f"steps_per_execution {', '.join(str(n) for n in spe_candidates(args))}",
        flush=True,
    )
    one_pass(False)  # warm-up: traces the window function
    passes: dict[str, Any] = {name: (lambda n=name: fit.rate(n)) for name in fit.models}
    passes["synchronous"] = lambda: one_pass(False)
    passes["overlapped"] = lambda: one_pass(True)
    best: dict[str, float] = {}
    for repeat in range(args.repeat):  # interleaved: a busy spell hits every side
        for name, run in passes.items():
            rate = run()
            best[name] = max(best.get(name, 0.0), rate)
            print(f"  pass {repeat + 1} {name:<22} {rate:>10,.0f} events/s", flush=True)
    limit = max(fit.models, key=lambda name: best[name])
    for name, rate in best.items():
        mark = "  <- limit" if name == limit else ""
        print(f"{name:<22} best {rate:>10,.0f} events/s per worker{mark}")
    print(
        f"ratio overlapped/synchronous at {args.rtt_ms:g} ms: "
        f"{best['overlapped'] / best['synchronous']:.2f}"
    )
    print(f"ratio synchronous/Keras fit: {best['synchronous'] / best[limit]:.2f}")
    print(
        f"ratio gridtrain overlapped at {args.rtt_ms:g} ms round trip/Keras fit ({limit}, no "
        f"network) events/s: {best['overlapped'] / best[limit]:.2f}"
    )


def overlap_benchmark(args: argparse.Namespace, dataset: dict[str, Any], work: Path) -> None:
    """Keras ``fit`` against the same training with ``train.overlap`` off and on: the AUC."""
    import statistics

    algorithm = {"algorithm": "downpour", "optimizer": "add", "every": args.every}
    runs: dict[str, list[TimedRun]] = {"keras-fit": [], "overlap-off": [], "overlap-on": []}
    for repeat in range(1, args.repeat + 1):  # interleaved, seeds 1..repeat
        train = train_section(
            args.model,
            json.loads(args.params),
            args.epochs,
            args.batch_size,
            args.learning_rate,
            algorithm,
            seed=repeat,
        )
        name = f"keras-fit#{repeat}"
        runs["keras-fit"].append(run_plain(dataset, train, work, name, args.every))
        print(f"  {name} done in {runs['keras-fit'][-1].wall:.0f} s", flush=True)
        for overlap in (False, True):
            kind = f"overlap-{'on' if overlap else 'off'}"
            name = f"{kind}#{repeat}"
            run = run_gridtrain(
                name,
                dataset,
                {**train, "overlap": overlap},
                work / name.replace("#", "-"),
                args.workers,
            )
            runs[kind].append(run)
            print(f"  {name} done in {run.wall:.0f} s", flush=True)
    every_run = [run for kind in runs.values() for run in kind]
    print(
        f"\n{'run':<15}{'final AUC':>10}{'all epochs s':>14}{'train ev/s':>12}{'waiting':>9}"
        f"{'overlapped':>12}"
    )
    for run in every_run:
        waiting = run.metrics.get("ps_wait_fraction")
        overlapped = run.metrics.get("ps_overlap_fraction")
        print(
            f"{run.name:<15}{run.final_auc:>10.4f}{run.curve[-1][0]:>14.1f}"
            f"{run.events_per_s:>12,.0f}{fmt(waiting, '.1%'):>9}{fmt(overlapped, '.1%'):>12}"
        )
    print("\nvalidation AUC by epoch:")
    for run in every_run:
        print(f"  {run.name:<15}" + " ".join(f"{auc:.4f}" for _, auc in run.curve))
    fit, off, on = (statistics.mean(r.final_auc for r in runs[k]) for k in runs)
    print(
        f"final validation AUC with overlap minus without, {args.workers} workers, mean of "
        f"{args.repeat}: {on - off:+.4f} ({on:.4f} vs {off:.4f})"
    )
    print(
        f"final validation AUC, gridtrain {args.workers} workers with overlap minus Keras fit "
        f"(1 process, steps_per_execution {args.every}), mean of {args.repeat}: "
        f"{on - fit:+.4f} ({on:.4f} vs {fit:.4f})"
    )


PLAIN_FLOOR = """\
# The floor's baseline, what a user writes without gridtrain: read the events, build a small
# MLP, fit one epoch, score the validation events, save. Written and run by benchmarks/train.py.
import json
import sys
import time

spec = json.loads(open(sys.argv[1]).read())
import keras  # noqa: E402
import numpy as np  # noqa: E402

keras.utils.set_random_seed(spec["seed"])
data = np.load(spec["data"])
x, y, w = data["x"], data["y"], data["w"]
inputs = keras.Input(shape=(x.shape[1],), name="features")
hidden = inputs
for units in spec["hidden"]:
    hidden = keras.layers.Dense(units, activation="relu")(hidden)
model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(hidden))
model.compile(
    optimizer=keras.optimizers.Adam(spec["learning_rate"]),
    loss="binary_crossentropy",
    weighted_metrics=[keras.metrics.BinaryAccuracy(name="accuracy")],
    steps_per_execution=spec["steps_per_execution"],
)
first_step = time.time()
model.fit(x, y, sample_weight=w, batch_size=spec["batch_size"], epochs=1, verbose=0)
scores = model.predict(data["x_val"], batch_size=8192, verbose=0).reshape(-1)
order = np.argsort(scores)
labels, weights = data["y_val"][order], data["w_val"][order]
background_below = np.cumsum(weights * (labels == 0))
auc = np.sum(weights * (labels == 1) * background_below) / (
    np.sum(weights * (labels == 1)) * background_below[-1]
)
model.save(spec["model"])
print(json.dumps({"auc": float(auc), "first_step": first_step}))
"""


def floor_data(dataset: dict[str, Any], work: Path) -> Path:
    """The shards' standardised events as one uncompressed ``.npz`` (written once, untimed)."""
    import numpy as np

    from gridtrain.data.manifest import load_manifest
    from gridtrain.models.spec import FEATURES
    from gridtrain.train.inputs import InputBuilder
    from gridtrain.train.settings import select_inputs

    path = work / f"floor-{Path(dataset['outdir']).name}.npz"
    if path.exists():
        return path
    manifest_path = Path(dataset["outdir"]) / "manifest.json"
    manifest = load_manifest(manifest_path)
    features, groups = select_inputs(manifest, None, str(manifest_path))
    builder = InputBuilder(manifest, features, groups, [FEATURES])

    def load(split: str) -> list[Any]:
        parts = [builder.load(Path(dataset["outdir"]) / e.path) for e in manifest.shards[split]]
        return [
            np.concatenate([p.inputs[FEATURES] for p in parts]),
            np.concatenate([p.labels for p in parts]),
            np.concatenate([p.weights for p in parts]),
            np.concatenate([p.event_weights for p in parts]),
        ]

    x, y, w, _ = load("train")
    x_val, y_val, _, w_val = load("validation")
    np.savez(path, x=x, y=y, w=w, x_val=x_val, y_val=y_val, w_val=w_val)
    return path


def floor_benchmark(args: argparse.Namespace, dataset: dict[str, Any], work: Path) -> None:
    """``gridtrain train``, 1 worker, 1 epoch, end to end, against a plain Keras script."""
    import statistics

    if args.model != "mlp":
        raise SystemExit("--mode floor trains the MLP (the plain script builds an MLP)")
    hidden = json.loads(args.params).get("hidden", [64, 64])
    train = train_section(
        "mlp",
        {"hidden": hidden, "flatten": 0},  # the plain script reads the flat features only
        1,
        args.batch_size,
        args.learning_rate,
        {"algorithm": "downpour", "optimizer": "add", "every": args.every},
    )
    script = work / "plain_floor.py"
    script.write_text(PLAIN_FLOOR)
    spec = work / "plain-floor.json"
    spec.write_text(
        json.dumps(
            {
                "data": str(floor_data(dataset, work).resolve()),
                "hidden": hidden,
                "learning_rate": args.learning_rate,
                "batch_size": args.batch_size,
                "steps_per_execution": args.every,
                "seed": 1,
                "model": str((work / "plain-floor.keras").resolve()),
            }
        )
    )
    print(
        f"{args.events:,} toy events, MLP {hidden}, 1 epoch, batch {args.batch_size}; "
        f"gridtrain train --workers 1 against a plain Keras script (fit with steps_per_execution "
        f"{args.every}), each a fresh process timed from launch to exit, interleaved",
        flush=True,
    )
    warm_up()
    walls: dict[str, list[float]] = {"plain-keras": [], "gridtrain": []}
    for repeat in range(1, args.repeat + 1):
        launch = time.time()
        out = subprocess.run(
            [sys.executable, str(script), str(spec)],
            check=False,
            capture_output=True,
            text=True,
            env={**os.environ, **QUIET_TF},
        )
        walls["plain-keras"].append(time.time() - launch)
        if out.returncode != 0:
            raise RuntimeError(
                f"plain Keras script failed ({out.returncode}):\n{out.stderr[-3000:]}"
            )
        auc = json.loads(out.stdout.strip().splitlines()[-1])["auc"]
        print(
            f"  pass {repeat} plain-keras {walls['plain-keras'][-1]:6.1f} s  AUC {auc:.4f}",
            flush=True,
        )
        run = run_gridtrain(f"floor-{repeat}", dataset, train, work / f"floor-{repeat}", 1)
        walls["gridtrain"].append(run.wall)
        print(f"  pass {repeat} gridtrain   {run.wall:6.1f} s  AUC {run.final_auc:.4f}", flush=True)
    for name, seconds in walls.items():
        print(
            f"{name:<12} best {min(seconds):6.1f} s, mean {statistics.mean(seconds):6.1f} s "
            f"(launch to exit, {len(seconds)} runs)"
        )
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    ratio = min(walls["gridtrain"]) / min(walls["plain-keras"])
    print(
        f"ratio gridtrain train/plain Keras script wall time, 1 worker, 1 epoch (best of "
        f"{args.repeat}): {ratio:.2f} (goal <= {FLOOR_GOAL})"
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
    parser.add_argument(
        "--events", type=int, help="toy events, both classes (default 200,000; floor 20,000)"
    )
    parser.add_argument("--shard-events", type=int, default=32_768)
    parser.add_argument("--model", help="mlp or deepsets (default deepsets; floor mlp)")
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
        choices=("keras", "steps", "overlap", "latency", "floor"),
        default="keras",
        help="keras: against plain Keras fit (default); steps: compiled windows against Keras "
        "fit; overlap: train.overlap off and on against Keras fit, the AUC; latency: sync and "
        "overlapped exchanges a round trip away against Keras fit; floor: a 1-epoch gridtrain "
        "train end to end against a plain Keras script",
    )
    parser.add_argument(
        "--steps-per-execution",
        help="Keras fit's candidates, comma-separated (steps, latency; default EVERY,64: the "
        "fastest is the limit)",
    )
    parser.add_argument("--threads", type=int, default=1, help="the backend's threads (steps)")
    parser.add_argument(
        "--backend",
        choices=("tensorflow", "jax", "torch"),
        default="tensorflow",
        help="the Keras backend of every side (steps, latency: in this process; the others: "
        "train.backend and the plain run's KERAS_BACKEND)",
    )
    parser.add_argument("--workers", type=int, default=2, help="workers (overlap)")
    parser.add_argument("--rtt-ms", type=float, default=30.0, help="round trip (latency)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    from gridtrain.backend import use_backend

    use_backend(args.backend)  # before Keras is imported; children inherit KERAS_BACKEND
    if args.child:
        spec = json.loads(Path(args.child).read_text())
        plain_child(spec["dataset"], spec["train"], spec["steps_per_execution"])
        return

    floor = args.mode == "floor"
    args.events = args.events or (20_000 if floor else 200_000)
    args.model = args.model or ("mlp" if floor else "deepsets")
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    dataset = toy_dataset(work, args.events, args.shard_events)
    if floor:
        floor_benchmark(args, dataset, work)
        return
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
        plains.append(run_plain(dataset, train, work, f"plain-keras{suffix}", args.every))
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
