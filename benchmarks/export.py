"""Inference throughput of an export: ONNX Runtime against the Keras model's own compiled predict.

For each built-in model (the MLP on the flat features, Deep Sets over the constituents), trained
briefly on the toy dataset and exported with ``gridtrain export``, in one process, on the same
validation events and the same threads (``--threads``, default 1: what one reconstruction module
gets; both sides are given it, intra- and inter-op):

  keras        the baseline: the trained Keras model's ``predict_on_batch`` on standardised inputs
               (its compiled function, warmed up: not ``predict`` with its per-call set-up), what
               a skilled user of Keras runs;
  onnxruntime  the exported ``model.onnx`` on the raw inputs (standardisation inside the graph),
               ``InferenceSession.run``, as CMSSW's ``cms::Ort::ONNXRuntime`` does.

Events/s at batch 1 (what a reconstruction module sees, one jet at a time) and batch 1024 (an
analysis), each the best of ``--repeats`` timed loops of at least ``--seconds`` after a warm-up.
The last line is the ratio ONNX Runtime / Keras at batch 1 for the Deep Sets model.

    python benchmarks/export.py                 # about 3 minutes here (two short trainings)
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


def best_rate(call: Callable[[], Any], events: int, seconds: float, repeats: int) -> float:
    """Events/s of ``call`` (``events`` per call): best of ``repeats`` loops of ``seconds``."""
    for _ in range(3):
        call()  # warm-up: compiled functions traced, sessions' arenas allocated
    best = 0.0
    for _ in range(repeats):
        calls, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            call()
            calls += 1
        best = max(best, calls * events / elapsed)
    return best


def measure(run_dir: Path, threads: int, seconds: float, repeats: int) -> dict[int, tuple]:
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
    session = onnxruntime.InferenceSession(str(run_dir / "export" / "model.onnx"), options)
    results = {}
    for batch in (1, 1024):
        keras_in = arrange_inputs(model, {k: v[:batch] for k, v in standardised.items()})
        onnx_in = {k: v[:batch] for k, v in raw.items()}
        check = np.abs(
            session.run(["score"], onnx_in)[0] - np.asarray(model.predict_on_batch(keras_in))
        ).max()
        keras_rate = best_rate(
            lambda x=keras_in: model.predict_on_batch(x), batch, seconds, repeats
        )
        onnx_rate = best_rate(lambda x=onnx_in: session.run(["score"], x), batch, seconds, repeats)
        results[batch] = (keras_rate, onnx_rate, float(check))
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
    print(f"threads {args.threads}; events/s, best of {args.repeats} x {args.seconds:g} s")
    print(f"{'model':<10}{'batch':>6}{'keras':>14}{'onnxruntime':>14}{'ratio':>8}{'max |d|':>10}")
    ratios = {}
    for model in MODELS:
        run_dir = trained_and_exported(args.work, model, dataset)
        for batch, (keras_rate, onnx_rate, check) in measure(
            run_dir, args.threads, args.seconds, args.repeats
        ).items():
            ratios[model, batch] = onnx_rate / keras_rate
            print(
                f"{model:<10}{batch:>6}{keras_rate:>14,.0f}{onnx_rate:>14,.0f}"
                f"{onnx_rate / keras_rate:>8.1f}{check:>10.1e}"
            )
    summary = {f"{m}@{b}": round(r, 2) for (m, b), r in ratios.items()}
    print(f"ratios onnxruntime/keras: {json.dumps(summary)}")
    print(f"onnxruntime/keras events/s, deepsets, batch 1: {ratios['deepsets', 1]:.1f}")


if __name__ == "__main__":
    main()
