"""GPU training on the JAX and PyTorch backends, on a GPU node as it is: no TensorFlow, no network.

Written for the GPU nodes this project can use: their ``python3`` (3.12) has torch, JAX with its
CUDA plugins, numpy, h5py, pyyaml, psutil and matplotlib, and nothing can be fetched there. What
gridtrain needs beyond that (Keras and its small dependencies, uproot and awkward for the
conversion, hdf5plugin, cryptography, jsonschema) is brought as wheels, 64 MiB at most:

    python benchmarks/gpu.py --prepare-wheels .whl      # here: download them (cp312, manylinux)
    python3 benchmarks/gpu.py --wheels .whl --out $OUT/gpu.json   # there: one run, < 8 min

``--wheels`` installs them with ``pip install --no-index --no-deps --target`` into a private
folder and runs the script again with that folder and the repository's ``src`` on PYTHONPATH
(gridtrain runs from its source; nothing is installed into the node's Python). Then, on each
backend of ``--backends`` (default jax torch), each training a fresh process as a user starts it:

1. plain Keras ``fit`` of the toy Deep Sets on the GPU (the baseline: every training shard in
   memory, ``steps_per_execution`` = ``every`` where the backend has it (PyTorch's ``fit`` runs
   one step per call), validation AUC at each epoch's end): events/s and time to the target;
2. ``gridtrain train`` with 1, 2 and 4 workers (``--workers``) sharing the GPU, and 1 worker with
   ``train.precision: mixed_bfloat16``;
3. a wide Deep Sets (``--wide``; phi 512-512-512, rho 512-512) with 1 worker, 1 worker in
   ``mixed_bfloat16`` and 4 workers: a model whose one worker leaves the GPU idle between steps;
4. the worker's data pipeline alone (shard read and decode, standardisation, batching into
   windows) in events/s, against the GPU's training rate: the loader must not be the limit.

Per run: events/s (training steps only, summed over workers), GPU utilisation mean and peak and
peak memory (``nvidia-smi`` every 0.5 s), the share of worker time spent exchanging with the
parameter server, the time from launch to the target AUC (the plain ``fit``'s final AUC minus
``--margin``) and the final AUC. The goal lines follow: 1 worker against ``fit`` (events/s,
goal <= 1.15), 4 workers' time to the target over 1 worker's (goal <= 0.4), the wide model's
``mixed_bfloat16`` events/s over float32 (goal >= 1.5, AUC within 0.005). ``--out`` writes every
figure as JSON.

``--cpu`` runs the same script on the CPU (no GPU wanted, none used; small sizes) as a check of
the script itself, in CI (tests/test_benchmarks_gpu.py runs ``--cpu --quick``):

    python benchmarks/gpu.py --cpu --quick --backends torch
    python benchmarks/gpu.py --cpu                      # every step on both backends, minutes

Without ``--cpu``, a machine whose ``nvidia-smi`` lists no GPU prints a line saying so and exits
0 (``make bench`` runs it everywhere).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

from bench_helpers import REPO, TimedRun, fmt, run_gridtrain, toy_dataset, train_section

DEEPSETS: dict[str, object] = {}  # the built-in defaults (phi 64-64-64, rho 64-64)
WIDE: dict[str, object] = {"phi": [512, 512, 512], "rho": [512, 512]}
# What gridtrain imports that a GPU node's Python lacks, by the name its wheel has in uv.lock:
# Keras and its small dependencies, the conversion's readers, the shards' compression, the
# parameter server's authentication, the config's schema. XRootD and HTCondor's bindings are not
# needed (local files, local workers) and gridtrain runs without them.
WHEELS = (
    "keras",
    "namex",
    "optree",
    "uproot",
    "awkward",
    "awkward-cpp",
    "cramjam",
    "hdf5plugin",
    "cryptography",
    "cffi",
    "pycparser",
    "jsonschema",
    "jsonschema-specifications",
    "referencing",
    "rpds-py",
)
NEEDED = ("keras", "uproot", "awkward", "hdf5plugin", "cryptography", "jsonschema")
WHEEL_BUDGET = 64 << 20  # what one device run may carry
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
SITE = Path("/tmp/gridtrain-gpu-site")
INSTALLED = "GRIDTRAIN_GPU_WHEELS_INSTALLED"  # set for the rerun: install once, never loop
GOALS = {"one_worker": 1.15, "four_workers": 0.4, "bf16_speed": 1.5, "bf16_auc": 0.005}


# -- wheels ------------------------------------------------------------------------------------


def locked_versions() -> dict[str, str]:
    """``{name: version}`` of every package in uv.lock."""
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    return {p["name"]: p["version"] for p in lock["package"] if "version" in p}  # not gridtrain


def prepare_wheels(folder: Path) -> int:
    """Download the wheels a GPU node lacks (Python 3.12, x86-64 Linux) at the lock's versions."""
    folder.mkdir(parents=True, exist_ok=True)
    versions = locked_versions()
    platforms = [option for platform in PLATFORMS for option in ("--platform", platform)]
    for name in WHEELS:
        command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
        command += ["--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp"]
        command += [*platforms, "--dest", str(folder), f"{name}=={versions[name]}"]
        subprocess.run(command, check=True)
    size = sum(path.stat().st_size for path in folder.glob("*.whl"))
    print(f"{len(list(folder.glob('*.whl')))} wheels in {folder}: {size / 2**20:.1f} MiB")
    if size > WHEEL_BUDGET:
        print(f"over the {WHEEL_BUDGET >> 20} MiB a device run may carry")
        return 1
    return 0


def missing_modules() -> list[str]:
    return [name for name in NEEDED if importlib.util.find_spec(name) is None]


def install_and_rerun(folder: Path) -> int:
    """Install the carried wheels into a private folder and run this script again over it."""
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps"]
    command += ["--no-compile", "--no-cache-dir", "--upgrade", "--target", str(SITE)]
    subprocess.run([*command, *map(str, sorted(folder.glob("*.whl")))], check=True)
    path = [str(SITE), str(REPO / "src"), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p), INSTALLED: "1"}
    rest = [arg for arg in sys.argv[1:] if arg != "--wheels" and arg != str(folder)]
    return subprocess.run([sys.executable, __file__, *rest], env=env, check=False).returncode


# -- measuring ---------------------------------------------------------------------------------


class GpuSampler:
    """``nvidia-smi`` utilisation (%) and memory (MiB) every ``period`` s while running."""

    def __init__(self, period: float = 0.5) -> None:
        self.period = period
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.available = shutil.which("nvidia-smi") is not None

    def _run(self) -> None:
        query = [
            "nvidia-smi",
            "--query-gpu=utilization.gpu,memory.used",
            "--format=csv,noheader,nounits",
        ]
        while not self._stop.wait(self.period):
            try:
                out = subprocess.run(
                    query, check=False, capture_output=True, text=True, timeout=5
                ).stdout
                util, memory = (float(v) for v in out.splitlines()[0].split(","))
            except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
                continue
            self.samples.append((util, memory))

    def __enter__(self) -> GpuSampler:
        if self.available:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.available:
            self._thread.join()

    def summary(self) -> dict[str, float | None]:
        """Mean and peak utilisation (%), peak memory (MiB); None without samples."""
        if not self.samples:
            return {"gpu_util_mean": None, "gpu_util_peak": None, "gpu_mib_peak": None}
        utils = [u for u, _ in self.samples]
        return {
            "gpu_util_mean": sum(utils) / len(utils),
            "gpu_util_peak": max(utils),
            "gpu_mib_peak": max(m for _, m in self.samples),
        }


def gpus_listed() -> tuple[list[str], str]:
    """The GPUs ``nvidia-smi -L`` lists, and why there are none when there are none."""
    if shutil.which("nvidia-smi") is None:
        return [], "no nvidia-smi on this machine"
    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"], check=False, capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return [], f"nvidia-smi -L failed: {error}"
    listed = [line for line in out.stdout.splitlines() if line.startswith("GPU ")]
    if not listed:
        why = (out.stderr or out.stdout).strip().splitlines()
        return [], f"nvidia-smi -L lists no GPU ({why[0] if why else f'exit {out.returncode}'})"
    return listed, ""


def child(mode: str, backend: str, spec: dict[str, Any], env: dict[str, str]) -> dict[str, Any]:
    """This script's ``--child MODE`` on ``backend`` in a fresh process; its JSON line."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--spec", json.dumps(spec)],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**env, "KERAS_BACKEND": backend},
    )
    if out.returncode != 0:
        raise RuntimeError(f"--child {mode} on {backend} failed:\n{out.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def load_split(dataset: dict[str, Any], split: str, names: list[str]) -> Any:
    """Every shard of ``split`` read, decoded and standardised by the worker's InputBuilder."""
    import numpy as np

    from gridtrain.data.manifest import load_manifest
    from gridtrain.train.inputs import InputBuilder
    from gridtrain.train.settings import select_inputs

    path = Path(dataset["outdir"]) / "manifest.json"
    manifest = load_manifest(path)
    features, groups = select_inputs(manifest, None, str(path))
    builder = InputBuilder(manifest, features, groups, names)
    parts = [builder.load(Path(dataset["outdir"]) / entry.path) for entry in manifest.shards[split]]
    inputs = {k: np.concatenate([p.inputs[k] for p in parts]) for k in parts[0].inputs}
    labels = np.concatenate([p.labels for p in parts])
    weights = np.concatenate([p.weights for p in parts])
    return features, groups, inputs, labels, weights, parts


def fit_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Plain Keras ``fit`` of the same model on the same events; epochs with absolute times."""
    import keras

    from gridtrain.evaluation import weighted_auc
    from gridtrain.models import InputSpec, arrange_inputs, build_model, model_input_names

    train, dataset = spec["train"], spec["dataset"]
    keras.utils.set_random_seed(train["seed"])
    keras.config.set_dtype_policy(train.get("precision", "float32"))
    features, groups, *_ = load_split(dataset, "validation", [])
    model = build_model(
        train["model"]["name"],
        train["model"]["params"],
        InputSpec(features, groups),
        learning_rate=train["learning_rate"],
        seed=train["seed"],
    )
    every = train["algorithm"]["every"] if keras.backend.backend() != "torch" else 1
    model.compile(
        optimizer=keras.optimizers.Adam(train["learning_rate"]),
        loss=model.loss,
        steps_per_execution=every,
    )
    names = model_input_names(model)
    _, _, x, y, w, _ = load_split(dataset, "train", names)
    _, _, x_val, y_val, w_val, _ = load_split(dataset, "validation", names)
    x, x_val = arrange_inputs(model, x), arrange_inputs(model, x_val)

    class ValidationAUC(keras.callbacks.Callback):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.epochs: list[dict[str, float]] = []
            self.seconds = 0.0
            self.began = 0.0

        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.began = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.seconds += time.perf_counter() - self.began
            scores = self.model.predict(x_val, batch_size=8192, verbose=0)
            auc = weighted_auc(y_val, scores.reshape(-1).astype("float32"), w_val)
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
    return {
        "epochs": callback.epochs,
        "events": int(y.size) * train["epochs"],
        "train_seconds": callback.seconds,
    }


def pipeline_child(spec: dict[str, Any]) -> dict[str, Any]:
    """The worker's data pipeline alone: read, decode and standardise every training shard (the
    worker's InputBuilder) and cut it into windows of batches (train.steps.windows)."""
    import keras

    from gridtrain.models import InputSpec, build_model, model_input_names
    from gridtrain.train.steps import windows

    train, dataset = spec["train"], spec["dataset"]
    features, groups, *_ = load_split(dataset, "validation", [])
    model = build_model(train["model"]["name"], {}, InputSpec(features, groups), learning_rate=1e-3)
    names = model_input_names(model)
    del keras
    best = 0.0
    for _ in range(spec["repeat"]):  # a cold page cache is the first pass's alone
        began = time.perf_counter()
        *_, parts = load_split(dataset, "train", names)
        events = 0
        for part in parts:
            sizes = iter(lambda: train["algorithm"]["every"], None)
            for _, _, labels, _ in windows(
                part.inputs, part.labels, part.weights, train["batch_size"], sizes
            ):
                events += labels.size
        best = max(best, events / (time.perf_counter() - began))
    return {"events_per_s": best, "events": events}


# -- the benchmark -----------------------------------------------------------------------------


def timed_fit(
    name: str, backend: str, dataset: dict[str, Any], train: dict[str, Any], env: dict[str, str]
) -> tuple[TimedRun, dict[str, Any]]:
    with GpuSampler() as sampler:
        launch = time.time()
        result = child("fit", backend, {"dataset": dataset, "train": train}, env)
        wall = time.time() - launch
    run = TimedRun(
        name=name,
        wall=wall,
        curve=[(e["unix_time"] - launch, e["auc"]) for e in result["epochs"]],
        events_per_s=result["events"] / result["train_seconds"],
    )
    return run, sampler.summary()


def timed_gridtrain(
    name: str, dataset: dict[str, Any], train: dict[str, Any], work: Path, workers: int
) -> tuple[TimedRun, dict[str, Any]]:
    with GpuSampler() as sampler:
        run = run_gridtrain(name, dataset, train, work / name, workers)
    return run, sampler.summary()


def record(run: TimedRun, gpu: dict[str, Any], target: float | None) -> dict[str, Any]:
    return {
        "events_per_s": run.events_per_s,
        **gpu,
        "ps_share": run.ps_share,
        "to_target_s": None if target is None else run.time_to(target),
        "final_auc": run.final_auc,
        "wall_s": run.wall,
        "curve": run.curve,
    }


def bench_backend(
    backend: str, args: argparse.Namespace, dataset: dict[str, Any], env: dict[str, str]
) -> dict[str, Any]:
    """Every run of one backend; prints its table and goal lines."""
    algorithm = {"algorithm": "downpour", "every": args.every}

    def section(params: dict[str, object], precision: str = "float32") -> dict[str, Any]:
        train = train_section(
            "deepsets", params, args.epochs, args.batch_size, args.learning_rate, algorithm
        )
        return {**train, "backend": backend, "precision": precision}

    print(f"\n== {backend}", flush=True)
    runs: dict[str, tuple[TimedRun, dict[str, Any]]] = {}
    runs["fit"] = timed_fit(f"{backend}-fit", backend, dataset, section(DEEPSETS), env)
    print(f"  plain fit done in {runs['fit'][0].wall:.0f} s", flush=True)
    plans = [(f"gridtrain-{n}", DEEPSETS, "float32", n) for n in args.workers]
    if not args.quick:
        plans.append(("gridtrain-1-bf16", DEEPSETS, "mixed_bfloat16", 1))
    if args.wide:
        plans += [("wide-1", WIDE, "float32", 1), ("wide-1-bf16", WIDE, "mixed_bfloat16", 1)]
        plans += [(f"wide-{n}", WIDE, "float32", n) for n in args.wide_workers]
    for name, params, precision, workers in plans:
        train = section(params, precision)
        runs[name] = timed_gridtrain(f"{backend}-{name}", dataset, train, args.work, workers)
        print(f"  {name} done in {runs[name][0].wall:.0f} s", flush=True)
    spec = {"dataset": dataset, "train": section(DEEPSETS), "repeat": 2}
    pipeline = child("pipeline", backend, spec, env)

    target = runs["fit"][0].final_auc - args.margin
    results = {name: record(run, gpu, target) for name, (run, gpu) in runs.items()}
    print(f"target AUC {target:.4f} (plain fit's final AUC minus {args.margin})")
    print(f"{'run':<18}{'events/s':>10}{'GPU util mean/peak %':>22}{'GPU MiB':>9}"
          f"{'PS share':>10}{'to target s':>13}{'final AUC':>11}")  # fmt: skip
    for name, r in results.items():
        util = f"{fmt(r['gpu_util_mean'], '.0f')} / {fmt(r['gpu_util_peak'], '.0f')}"
        print(
            f"{name:<18}{r['events_per_s']:>10,.0f}{util:>22}{fmt(r['gpu_mib_peak'], '.0f'):>9}"
            f"{fmt(r['ps_share'], '.1%'):>10}{fmt(r['to_target_s'], '.1f', 'never'):>13}"
            f"{r['final_auc']:>11.4f}"
        )
    fastest = max(r["events_per_s"] for r in results.values())
    print(
        f"data pipeline alone (read, decode, standardise, batch): "
        f"{pipeline['events_per_s']:,.0f} events/s, {pipeline['events_per_s'] / fastest:.1f}x "
        "the fastest training rate above"
    )
    goals = goal_lines(results)
    for line in goals:
        print(line)
    return {"runs": results, "pipeline": pipeline, "target_auc": target, "goals": goals}


def goal_lines(results: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    one, fit = results["gridtrain-1"], results["fit"]
    ratio = fit["events_per_s"] / one["events_per_s"]
    lines.append(f"fit / gridtrain-1 events/s: {ratio:.2f} (goal <= {GOALS['one_worker']})")
    if "gridtrain-4" in results and one["to_target_s"] and results["gridtrain-4"]["to_target_s"]:
        ratio = results["gridtrain-4"]["to_target_s"] / one["to_target_s"]
        lines.append(f"4 workers / 1 worker time to target: {ratio:.2f} "
                     f"(goal <= {GOALS['four_workers']})")  # fmt: skip
    else:
        lines.append("4 workers / 1 worker time to target: - (not run, or the target not reached)")
    if "wide-1" in results:
        wide, bf16 = results["wide-1"], results["wide-1-bf16"]
        lines.append(
            f"wide model mixed_bfloat16 / float32 events/s: "
            f"{bf16['events_per_s'] / wide['events_per_s']:.2f} (goal >= {GOALS['bf16_speed']}), "
            f"AUC {bf16['final_auc']:.4f} against {wide['final_auc']:.4f} "
            f"(goal within {GOALS['bf16_auc']})"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare-wheels", type=Path, help="download the node's wheels here")
    parser.add_argument("--wheels", type=Path, help="install these wheels first (on the node)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU: a check of the script")
    parser.add_argument(
        "--quick", action="store_true", help="with --cpu: the smallest sizes, fit and 1 worker"
    )
    parser.add_argument("--backends", nargs="+", default=["jax", "torch"])
    parser.add_argument("--work", type=Path, default=REPO / ".bench" / "gpu")
    parser.add_argument("--out", type=Path, help="every figure as JSON")
    parser.add_argument("--events", type=int)
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--every", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+")
    parser.add_argument("--wide-workers", type=int, nargs="*")
    parser.add_argument("--no-wide", dest="wide", action="store_false")
    parser.add_argument("--margin", type=float, default=0.005)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        spec = json.loads(args.spec)
        print(json.dumps({"fit": fit_child, "pipeline": pipeline_child}[args.child](spec)))
        return 0
    if args.prepare_wheels:
        return prepare_wheels(args.prepare_wheels)
    if args.wheels and missing_modules() and not os.environ.get(INSTALLED):
        return install_and_rerun(args.wheels)
    if missing_modules():
        print(f"gpu.py: missing {', '.join(missing_modules())}: bring them with --wheels DIR")
        return 1

    env = dict(os.environ)
    if args.cpu:  # no GPU wanted: every backend on the CPU
        env.update({"CUDA_VISIBLE_DEVICES": "-1", "JAX_PLATFORMS": "cpu"})
        os.environ.update(env)
        sizes = (6_000, 1, [1], []) if args.quick else (20_000, 2, [1, 2], [2])
    else:
        listed, why = gpus_listed()
        if not listed:
            print(f"gpu.py: skipped, no GPU: {why} (--cpu runs it on the CPU as a check)")
            return 0
        print("GPUs:", "; ".join(listed))
        sizes = (200_000, 3, [1, 2, 4], [4])
    args.events = args.events or sizes[0]
    args.epochs = args.epochs or sizes[1]
    args.workers = args.workers or sizes[2]
    args.wide_workers = sizes[3] if args.wide_workers is None else args.wide_workers
    if args.quick:
        args.wide = False
    started = time.time()
    dataset = toy_dataset(args.work, args.events, shard_events=max(args.events // 12, 1000))
    print(f"{args.events:,} toy events, {args.epochs} epochs, batch {args.batch_size}, Downpour "
          f"every {args.every}; backends {', '.join(args.backends)}", flush=True)  # fmt: skip
    results = {backend: bench_backend(backend, args, dataset, env) for backend in args.backends}
    print(f"benchmark wall time: {time.time() - started:.0f} s")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        figures = {"args": vars(args), "results": results}
        args.out.write_text(json.dumps(figures, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
