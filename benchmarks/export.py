"""Inference throughput of an export: ONNX Runtime against the fastest way TensorFlow runs it.

For each built-in model (the MLP on the flat features, Deep Sets over the constituents), trained
briefly on the toy dataset and exported with ``gridtrain export``, in one process, on the same
validation events and the same threads (``--threads``, default 1: what one reconstruction module
gets; every side is given it, intra- and inter-op):

  keras           the trained Keras model on standardised inputs, three ways, warmed up:
                  ``predict_on_batch`` (its compiled predict function, not ``predict`` with its
                  per-call set-up); a ``tf.function`` of the model's call with a fixed input
                  signature (what a skilled user writes, and what TensorFlow's C++ API runs: one
                  concrete graph, no Keras dispatch), fed tensors made before the clock starts;
                  the same ``tf.function`` with ``jit_compile=True`` (XLA), where it compiles.
                  The fastest of them at each batch size is the baseline (the limit of the
                  Keras/TensorFlow side). It is fed the standardised inputs, so it does less work
                  than the export, which standardises inside its graph;
  onnxruntime     the exported ``model.onnx`` on the raw inputs (standardisation inside the graph),
                  ``InferenceSession.run`` with ONNX Runtime's default graph optimisation
                  (``ORT_ENABLE_ALL``), as CMSSW's ``cms::Ort::ONNXRuntime`` does.

Events/s at batch 1 (what a reconstruction module sees, one jet at a time) and batch 1024 (an
analysis): each the best of ``--repeats`` timed loops of at least ``--seconds`` after a warm-up,
every candidate's loops interleaved (the order rotating), so that a busy spell of other processes
hits every side. Each row also gives the ratio in events per CPU-second of this process (all its
threads), which the machine's other load changes least. The last line is the ratio ONNX Runtime /
the fastest Keras-TensorFlow path at batch 1 for the Deep Sets model.

    python benchmarks/export.py                 # about 5 minutes here (+ two short trainings)
    python benchmarks/export.py --seconds 0.3 --repeats 1    # a check that it runs
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_helpers import QUIET_TF, toy_dataset  # noqa: E402

MODELS = {
    "mlp": {"hidden": [64, 64]},
    "deepsets": {"phi": [64, 64, 64], "rho": [64, 64], "group": "constituents"},
}
BATCHES = (1, 1024)
KERAS_WAYS = ("predict_on_batch", "tf.function", "tf.function+xla")


def trained_and_exported(work: Path, model: str, dataset: dict[str, Any]) -> Path:
    run_dir = work / f"run-{model}"
    if not (run_dir / "export" / "export.json").exists():
        config = {
            "dataset": dataset,
            "train": {
                "epochs": 2,
                "workers": 1,
                "batch_size": 256,
                "model": {"name": model, "params": MODELS[model]},
                "early_stopping": {"patience": None},
            },
        }
        (work / f"{model}.yaml").write_text(yaml.safe_dump(config))
        env = {**os.environ, **QUIET_TF}
        for args in (
            ["train", "-c", str(work / f"{model}.yaml"), "--run-dir", str(run_dir)],
            ["export", str(run_dir), "--format", "onnx"],
        ):
            subprocess.run([sys.executable, "-m", "gridtrain", *args], check=True, env=env)
    return run_dir


def best_rates(
    calls: dict[str, Callable[[], Any]], events: int, seconds: float, repeats: int
) -> dict[str, tuple[float, float]]:
    """Per call (``events`` per call): the best events/s of ``repeats`` loops of ``seconds``
    and the best events per CPU-second of this process; the loops interleaved, order rotating."""
    for call in calls.values():
        for _ in range(3):
            call()  # warm-up: functions traced and compiled, sessions' arenas allocated
    names = list(calls)
    best = dict.fromkeys(names, (0.0, 0.0))
    for repeat in range(repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            call, count = calls[name], 0
            cpu, started = time.process_time(), time.perf_counter()
            while (elapsed := time.perf_counter() - started) < seconds:
                call()
                count += 1
            cpu_rate = count * events / max(time.process_time() - cpu, 1e-9)
            wall, per_cpu = best[name]
            best[name] = (max(wall, count * events / elapsed), max(per_cpu, cpu_rate))
    return best


def keras_calls(model: Any, inputs: Any) -> tuple[dict[str, Callable[[], Any]], list[str]]:
    """The ways TensorFlow runs ``model`` on ``inputs``; notes for the ways that failed."""
    import tensorflow as tf

    def spec(array: np.ndarray) -> Any:
        return tf.TensorSpec((None, *array.shape[1:]), tf.as_dtype(array.dtype))

    signature = [tf.nest.map_structure(spec, inputs)]
    tensors = tf.nest.map_structure(tf.constant, inputs)
    calls: dict[str, Callable[[], Any]] = {
        "predict_on_batch": lambda: model.predict_on_batch(inputs)
    }
    notes = []
    for name, jit in (("tf.function", False), ("tf.function+xla", True)):
        function = tf.function(
            lambda x: model(x, training=False), input_signature=signature, jit_compile=jit
        )
        try:
            scores = function(tensors).numpy()
        except Exception as error:  # XLA may not compile every op on every device
            notes.append(f"{name}: {type(error).__name__}: {str(error).splitlines()[0][:120]}")
            continue
        difference = float(np.abs(scores - np.asarray(model.predict_on_batch(inputs))).max())
        if difference > 1e-4:
            notes.append(f"{name}: scores differ from predict_on_batch's by {difference:.1e}")
            continue
        calls[name] = lambda f=function: f(tensors).numpy()
    return calls, notes


def measure(run_dir: Path, threads: int, seconds: float, repeats: int) -> dict[int, dict]:
    import onnxruntime

    from gridtrain.export.run import _validation
    from gridtrain.models import arrange_inputs, load_model, model_input_names
    from gridtrain.train.settings import WorkerSpec

    spec = WorkerSpec.read(run_dir / "worker.json")
    model = load_model(run_dir / "model.keras", compile=False)
    wanted = model_input_names(model)
    raw, standardised, _, _ = next(_validation(spec, wanted, run_dir / ".bench-scratch"))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(run_dir / "export" / "model.onnx"), options)
    results = {}
    for batch in BATCHES:
        keras_in = arrange_inputs(model, {k: v[:batch] for k, v in standardised.items()})
        onnx_in = {k: v[:batch] for k, v in raw.items()}
        calls, notes = keras_calls(model, keras_in)
        reference = np.asarray(model.predict_on_batch(keras_in))
        check = float(np.abs(session.run(["score"], onnx_in)[0] - reference).max())
        calls["onnxruntime"] = lambda x=onnx_in: session.run(["score"], x)
        results[batch] = {
            "rates": best_rates(calls, batch, seconds, repeats),
            "check": check,
            "notes": notes,
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=REPO / ".bench" / "export")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.update(QUIET_TF)
    import gridtrain.stage  # noqa: F401, I001  (XRootD client before TensorFlow)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    dataset = toy_dataset(args.work, args.events, shard_events=4096)
    print(
        f"threads {args.threads} (TensorFlow and ONNX Runtime, intra- and inter-op); events/s, "
        f"best of {args.repeats} x {args.seconds:g} s, interleaved"
    )
    header = "".join(f"{way:>18}" for way in (*KERAS_WAYS, "onnxruntime"))
    print(f"{'model':<10}{'batch':>6}{header}{'ratio':>7}{'per CPU-s':>10}{'max |d|':>9}")
    ratios = {}
    notes = []
    for model in MODELS:
        run_dir = trained_and_exported(args.work, model, dataset)
        for batch, result in measure(run_dir, args.threads, args.seconds, args.repeats).items():
            rates = result["rates"]
            fastest = max((w for w in KERAS_WAYS if w in rates), key=lambda w: rates[w][0])
            onnx_rate, onnx_cpu = rates["onnxruntime"]
            ratios[model, batch] = onnx_rate / rates[fastest][0]
            cells = "".join(
                f"{rates[w][0]:>17,.0f}{'*' if w == fastest else ' '}"
                if w in rates
                else f"{'-':>18}"
                for w in KERAS_WAYS
            )
            cpu_ratio = onnx_cpu / max(rates[w][1] for w in KERAS_WAYS if w in rates)
            print(
                f"{model:<10}{batch:>6}{cells}{onnx_rate:>18,.0f}{ratios[model, batch]:>7.2f}"
                f"{cpu_ratio:>10.2f}{result['check']:>9.1e}"
            )
            notes += [f"{model}@{batch} {note}" for note in result["notes"]]
    print("*: the fastest Keras/TensorFlow way, the baseline of the ratio (ONNX Runtime / it)")
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    for note in notes:
        print(f"not measured: {note}")
    summary = {f"{m}@{b}": round(r, 2) for (m, b), r in ratios.items()}
    print(f"ratios onnxruntime/fastest keras-tf: {json.dumps(summary)}")
    print(f"onnxruntime/fastest keras-tf events/s, deepsets, batch 1: {ratios['deepsets', 1]:.2f}")


if __name__ == "__main__":
    main()
