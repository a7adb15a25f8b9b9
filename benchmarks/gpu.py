"""GPU training: the toy Deep Sets with 1, 2 and 4 workers sharing one GPU, in one short call.

Prepared for a machine with an NVIDIA GPU and the lock's ``gpu`` extra installable (a grid GPU
node, or a lent device that can reach PyPI or a wheel cache). In one run:

1. unless ``--no-install``: ``uv sync --locked --extra gpu --extra workflow`` into ``--venv``
   (default ``.bench/venv-gpu``), so the figures come from the locked TensorFlow build, and the
   script re-executes itself there;
2. the toy dataset (``--events``, default 200,000) converted once with the repository's config;
3. ``gridtrain train --workers N`` for N in ``--workers`` (default 1 2 4), every worker process on
   the same GPU (``CUDA_VISIBLE_DEVICES`` as given; the workers turn memory growth on), Downpour,
   early stopping off, ``--epochs`` epochs;
4. while each training runs, ``nvidia-smi`` is sampled every 0.5 s (utilisation and memory).

Printed per N: events/s (summed over workers, training steps only), mean and peak GPU
utilisation, peak GPU memory, the time from launch to the target AUC (the 1-worker run's final AUC
minus ``--margin``), final AUC and the exchange share. The baseline is the 1-worker run on the same
GPU; the last line is its time to the target over the fastest N's (above 1: sharing the GPU
between asynchronous workers reaches the target sooner).

    python benchmarks/gpu.py                         # installs, then about 3-5 min on an H200
    python benchmarks/gpu.py --no-install --events 50000 --epochs 2 --workers 1 2   # smoke test

On a machine without an NVIDIA GPU (no ``nvidia-smi``, or one that lists no GPU) it installs
nothing, prints a line saying it skipped and why, and exits 0 (``make bench`` runs it
everywhere). ``--allow-cpu`` runs it anyway so that the script itself can be checked on any
machine (utilisation columns are '-'; its figures then describe the CPU):

    python benchmarks/gpu.py --no-install --allow-cpu --events 20000 --epochs 2 --workers 1 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from bench_helpers import REPO, TimedRun, fmt, run_gridtrain, toy_dataset, train_section

DEEPSETS: dict[str, object] = {}  # the built-in defaults (phi 64-64-64, rho 64-64)


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

    def summary(self) -> tuple[float | None, float | None, float | None]:
        """Mean utilisation, peak utilisation, peak memory (None without samples)."""
        if not self.samples:
            return None, None, None
        utils = [u for u, _ in self.samples]
        return sum(utils) / len(utils), max(utils), max(m for _, m in self.samples)


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


def install(venv: Path) -> Path:
    """The locked GPU environment in ``venv``; returns its python."""
    uv = shutil.which("uv") or str(REPO / ".venv" / "bin" / "uv")
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv)}
    command = [uv, "sync", "--locked", "--quiet", "--extra", "gpu", "--extra", "workflow"]
    print("installing the GPU environment:", " ".join(command), flush=True)
    subprocess.run(command, cwd=REPO, env=env, check=True)
    return venv / "bin" / "python"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-install", action="store_true", help="use this interpreter as is")
    parser.add_argument("--venv", type=Path, default=REPO / ".bench" / "venv-gpu")
    parser.add_argument("--work", type=Path, default=REPO / ".bench" / "gpu")
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--margin", type=float, default=0.005)
    parser.add_argument(
        "--allow-cpu", action="store_true", help="run without a GPU (a check of the script)"
    )
    args = parser.parse_args()

    listed, why = gpus_listed()
    if not listed and not args.allow_cpu:
        print(f"gpu.py: skipped, no GPU: {why} (--allow-cpu runs it on the CPU as a check)")
        return 0
    if not args.no_install:
        python = install(args.venv)
        rest = [*sys.argv[1:], "--no-install"]
        return subprocess.run([str(python), __file__, *rest], check=False).returncode

    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    print(f"TensorFlow {tf.__version__}; GPUs: {[g.name for g in gpus] or 'none (CPU figures)'}")
    if listed and not gpus and not args.allow_cpu:
        print(f"nvidia-smi lists {listed} but TensorFlow sees no GPU: its CUDA build is missing")
        return 1
    dataset = toy_dataset(args.work, args.events, shard_events=16_384)
    train = train_section(
        "deepsets",
        DEEPSETS,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=1e-3,
        algorithm={"algorithm": "downpour", "every": 8},
    )
    runs: dict[int, tuple[TimedRun, tuple[float | None, float | None, float | None]]] = {}
    for n in args.workers:
        with GpuSampler() as sampler:
            run = run_gridtrain(f"gpu-{n}", dataset, train, args.work / f"run-{n}", n)
        runs[n] = (run, sampler.summary())

    baseline = runs[min(runs)][0]
    target = baseline.final_auc - args.margin
    print(f"\ntarget AUC {target:.4f} (the {min(runs)}-worker final AUC minus {args.margin})")
    print("workers  events/s  GPU util mean/peak %  GPU MiB  to target s  final AUC  PS share")
    for n, (run, (mean, peak, memory)) in runs.items():
        print(
            f"{n:7d}  {run.events_per_s:8.0f}  {fmt(mean, '.0f'):>9} / {fmt(peak, '.0f'):<8}"
            f"  {fmt(memory, '.0f'):>7}  {fmt(run.time_to(target)):>11}"
            f"  {run.final_auc:9.4f}  {fmt(run.ps_share, '.3f'):>8}"
        )
    base_time = baseline.time_to(target)
    times = [t for run, _ in runs.values() if (t := run.time_to(target)) is not None]
    if base_time is None or not times:
        print("time to target, 1 worker / fastest: - (the target was not reached)")
        return 1
    print(f"time to target, {min(runs)} worker / fastest: {base_time / min(times):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
