"""Jet taggers on the substructure toy, the same wall time each: do pairs of particles pay?

On the particle-level toy (``gridtrain toy --task substructure``: QCD one-prong, W/Z two-prong and
top three-prong jets from the parton shower of ``gridtrain.data.shower``; by default 40,000 jets
of each class, a quarter kept for validation), five models train as a 3-class tagger with
``gridtrain train`` through the parameter server with 2 workers, each for the same wall time
(``--budget`` seconds from its launch, default 80: start-up included), then are stopped. Each is
scored on the validation jets with the weights a user keeps under early stopping: of the best
validated epoch's (the PS keeps them) and the center at the stop, the lower validation loss, the
same rule for every model (so a model that overfits late is not judged on its overfit weights):

  mlp               dense layers on the 17 jet-level features (flatten: 0, no particles)
  deepsets          Deep Sets (particle flow) over the particles and secondary vertices
  interaction       the interaction network (JEDI-net) over the same
  particlenet-lite  ParticleNet-Lite (EdgeConv; the paper's size)
  part-small        the Particle Transformer's small preset (pairwise attention bias)

The particles are the 48 hardest of each jet (part_deta, part_dphi, part_logpt, part_logenergy,
part_logptrel, part_logerel, part_dr, part_charge, part_pt, part_energy), the secondary vertices
the 4 hardest (sv_deta, sv_dphi, sv_pt, sv_mass, sv_ntracks, sv_sip3d); Adam at 1e-3, batches of
256, Downpour every 8 steps, early stopping's patience off (the run goes on to the budget).

Printed per model: trainable parameters, training events/s per worker (from the workers' shard
records), epochs trained (events trained / training events), the weights kept, the validation
macro AUC (one class against the rest, averaged) and the QCD rejection 1/eps_B at 50% efficiency
of the W/Z tag, the score p(W/Z) / (p(W/Z) + p(QCD)) on W/Z and QCD jets; the top tag's beside it
(">N" when none of the N QCD jets passes). Last line: the best pairwise model's (interaction,
ParticleNet, ParT) W/Z rejection over Deep Sets' (goal >= 1.5).

    python benchmarks/taggers.py                    # 5 models x 80 s: about 9 min here
    python benchmarks/taggers.py --budget 300 --models deepsets,particlenet-lite
    python benchmarks/taggers.py --toy substructure-matched   # QCD in the signals' mass range
    python benchmarks/taggers.py --rescore ...      # score the runs in --work again, no training
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bench_helpers import QUIET_TF
from gridtrain.data.toy import JET_FEATURES as JET_FEATURES_OF_THE_TOY

GOAL = 1.5
CLASSES = ("qcd", "wz", "top")
PARTICLES = ["part_deta", "part_dphi", "part_logpt", "part_logenergy", "part_logptrel",
             "part_logerel", "part_dr", "part_charge", "part_pt", "part_energy"]  # fmt: skip
SVS = ["sv_deta", "sv_dphi", "sv_pt", "sv_mass", "sv_ntracks", "sv_sip3d"]
JET_FEATURES = [*JET_FEATURES_OF_THE_TOY, "jet_nsv"]
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "mlp": ("mlp", {"hidden": [64, 64], "flatten": 0}),
    "deepsets": ("deepsets", {}),
    "interaction": ("interaction", {"relation": [32, 32], "object": [32, 32], "classifier": [64]}),
    "particlenet-lite": ("particlenet", {"preset": "lite"}),
    "part-small": ("part", {"preset": "small"}),
}
PAIRWISE = ("interaction", "particlenet-lite", "part-small")


def pair_score(signal: np.ndarray, background: np.ndarray) -> np.ndarray:
    """p(signal) / (p(signal) + p(background)); 0.5 where both are 0 (a jet the model puts in
    the third class with certainty: float32 softmax rounds the other two to 0, and 0/0 would
    rank it anywhere)."""
    total = signal + background
    return np.divide(signal, total, out=np.full_like(total, 0.5), where=total > 0)


def dataset(work: Path, per_class: int, toy_task: str = "substructure") -> dict[str, Any]:
    """The toy written and converted once (reused while its manifest matches the config)."""
    from gridtrain.config import DatasetConfig
    from gridtrain.data.convert import convert
    from gridtrain.data.manifest import load_manifest
    from gridtrain.data.toy import write_toy_dataset

    toy = work / f"{toy_task}-{per_class}"
    if not (toy / "top.root").exists():
        write_toy_dataset(toy, 3 * per_class, seed=1, task=toy_task)
    section: dict[str, Any] = {
        "name": "substructure",
        "tree": "events",
        "samples": [
            {"name": c, "files": [str((toy / f"{c}.root").resolve())], "class": c} for c in CLASSES
        ],
        "features": JET_FEATURES,
        "jagged": {
            "particles": {"branches": PARTICLES, "length": 48},
            "svs": {"branches": SVS, "length": 4},
        },
        "weight": "weight",
        "event_id": ["run", "luminosityBlock", "event"],
        "validation_fraction": 0.25,
        "shard_events": 8192,
        "outdir": str((work / f"dataset-{toy_task}-{per_class}").resolve()),
    }
    task = {"kind": "multiclass", "classes": list(CLASSES)}
    cfg = DatasetConfig.from_dict(section, task)
    manifest = Path(section["outdir"]) / "manifest.json"
    if not manifest.exists() or load_manifest(manifest).config_hash != cfg.content_hash():
        convert(cfg)
    return section


def train(work: Path, section: dict[str, Any], name: str, budget: float) -> Path:
    """``gridtrain train`` of model ``name`` stopped ``budget`` seconds after its launch."""
    model, params = MODELS[name]
    run = work / "runs" / name
    config = {
        "task": {"kind": "multiclass", "classes": list(CLASSES)},
        "dataset": section,
        "train": {
            "model": {"name": model, "params": params},
            "epochs": 1000,
            "workers": 2,
            "batch_size": 256,
            "learning_rate": 0.001,
            "seed": 1,
            "early_stopping": {"patience": None},
            "run_dir": str(run),
        },
    }
    if run.exists():
        import shutil

        shutil.rmtree(run)
    run.mkdir(parents=True)
    path = run.parent / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    launched = time.monotonic()
    with open(run.parent / f"{name}.log", "w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gridtrain", "train", "-c", str(path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **QUIET_TF},
        )
        try:
            process.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)  # the driver stops its workers, checkpoints
            process.wait(timeout=120)
    print(f"  {name}: stopped {time.monotonic() - launched:.0f} s after launch", flush=True)
    return run


def score(run: Path) -> dict[str, Any]:
    """The run's model scored on the validation shards: of the best validated epoch's weights
    (the PS keeps them, best.npz) and the center at the stop, the one with the lower validation
    loss: the model a user keeps with early stopping, chosen by the same rule for every model."""
    from gridtrain.data.manifest import Manifest
    from gridtrain.evaluation import (
        auc_from_curve,
        efficiency_at,
        one_vs_rest_roc,
        weighted_categorical_log_loss,
    )
    from gridtrain.models import arrange_inputs, model_input_names
    from gridtrain.ps.checkpoint import read_checkpoint, read_initial_weights
    from gridtrain.train.inputs import InputBuilder
    from gridtrain.train.replica import replica
    from gridtrain.train.settings import WorkerSpec

    spec = WorkerSpec.read(run / "worker.json")
    model = replica(spec)
    manifest = Manifest.from_dict(spec.manifest)
    builder = InputBuilder(manifest, spec.features, spec.groups, model_input_names(model))
    base = Path(spec.source).parent
    parts = [builder.load(base / entry.path) for entry in manifest.shards["validation"]]
    labels = np.concatenate([p.labels.argmax(axis=1) for p in parts])
    weights = np.concatenate([np.maximum(p.event_weights, 0.0) for p in parts])
    candidates = {"stop": read_checkpoint(run / "checkpoint.npz").center}
    if (run / "best.npz").exists():
        candidates["best epoch"] = read_initial_weights(run / "best.npz")
    scored = {}
    for which, center in candidates.items():
        model.set_weights(center)
        outputs = np.concatenate(
            [
                model.predict(arrange_inputs(model, p.inputs), batch_size=4096, verbose=0)
                for p in parts
            ]
        )
        scored[which] = (weighted_categorical_log_loss(labels, outputs, weights), outputs)
    kept = min(scored, key=lambda which: scored[which][0])
    loss, outputs = scored[kept]
    aucs = []
    for k in range(len(CLASSES)):
        fpr, tpr, _ = one_vs_rest_roc(labels, outputs, weights, k)
        aucs.append(auc_from_curve(fpr, tpr))
    rejections = {}
    for k in (1, 2):  # W/Z, top against QCD: p(k) / (p(k) + p(qcd))
        scores = np.stack([outputs[:, 0], pair_score(outputs[:, k], outputs[:, 0])], 1)
        relabelled = np.where(labels == k, 1, np.where(labels == 0, 0, -1))
        fpr, tpr, _ = one_vs_rest_roc(relabelled, scores, weights, 1, background=0)
        eff = efficiency_at(tpr, fpr, 0.5)
        rejections[CLASSES[k]] = 1.0 / eff if eff > 0 else None  # no QCD jet passed
    records = [
        json.loads(line)
        for line in (run / "history.jsonl").read_text().splitlines()
        if line.startswith('{"type":"shard"')
    ]
    per_worker: dict[str, list[float]] = {}
    for r in records:
        events, seconds = per_worker.setdefault(r["worker"], [0.0, 0.0])
        per_worker[r["worker"]] = [events + r["events"], seconds + r["seconds"]]
    rates = [events / seconds for events, seconds in per_worker.values() if seconds > 0]
    trained = sum(r["events"] for r in records)
    epochs = trained / sum(entry.events for entry in manifest.shards["train"])
    return {
        "kept": kept,
        "best_epoch": json.loads((run / "state.json").read_text())["leases"].get("best_epoch"),
        "validation_loss": loss,
        "parameters": sum(int(np.prod(w.shape)) for w in model.trainable_weights),
        "events_per_s": float(np.mean(rates)) if rates else 0.0,
        "epochs": epochs,
        "macro_auc": float(np.mean(aucs)),
        "rejection_wz": rejections["wz"],
        "rejection_top": rejections["top"],
        "validation_jets": len(labels),
        "validation_qcd": int(np.sum(labels == 0)),
    }


def add_toy_arguments(parser: argparse.ArgumentParser, toy: str) -> None:
    """``--toy`` (default ``toy``), ``--per-class`` and ``--work``: the jets ``dataset`` makes."""
    parser.add_argument("--per-class", type=int, default=40_000, help="toy jets per class")
    parser.add_argument(
        "--toy",
        choices=("substructure", "substructure-matched"),
        default=toy,
        help="the toy; substructure-matched: QCD jets spread over the W/Z and top masses",
    )
    parser.add_argument("--work", type=Path, default=Path("results/bench-taggers"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=80.0, help="seconds per model (launch)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated")
    add_toy_arguments(parser, "substructure")
    parser.add_argument(
        "--rescore",
        action="store_true",
        help="score the runs already in --work/runs again, without training",
    )
    args = parser.parse_args()
    names = args.models.split(",")
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {', '.join(MODELS)}")
    args.work.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    section = dataset(args.work, args.per_class, args.toy)
    print(f"toy and conversion: {time.monotonic() - start:.0f} s", flush=True)
    if args.rescore:
        results = {name: score(args.work / "runs" / name) for name in names}
    else:
        results = {name: score(train(args.work, section, name, args.budget)) for name in names}
    print(
        f"\n{args.budget:.0f} s per model, 2 workers, {os.cpu_count()} CPUs; load average "
        f"{os.getloadavg()[0]:.1f} at the end"
    )
    print(f"{'model':18} {'params':>8} {'ev/s/worker':>11} {'epochs':>6} {'kept':>10} "
          f"{'macro AUC':>9} {'R50 W/Z':>8} {'R50 top':>8}")  # fmt: skip

    def kept(r: dict[str, Any]) -> str:
        return "stop" if r["kept"] == "stop" else f"epoch {r['best_epoch']}"

    for name, r in results.items():
        wz, top = (
            f"{value:8.1f}" if value is not None else f"{'>' + str(r['validation_qcd']):>8}"
            for value in (r["rejection_wz"], r["rejection_top"])
        )
        print(
            f"{name:18} {r['parameters']:8d} {r['events_per_s']:11.0f} {r['epochs']:6.2f} "
            f"{kept(r):>10} {r['macro_auc']:9.4f} {wz} {top}"
        )
    (args.work / "results.json").write_text(json.dumps(results, indent=1))
    pairwise = [n for n in PAIRWISE if n in results]
    if "deepsets" in results and pairwise:
        no_pass = 10.0 * len(CLASSES) * args.per_class  # no QCD jet passed: above any count

        def rejection(name: str) -> float:
            value = results[name]["rejection_wz"]
            return float(value) if value is not None else no_pass

        best = max(pairwise, key=rejection)
        ratio = rejection(best) / rejection("deepsets")
        print(
            f"best pairwise ({best}) W/Z rejection at 50% / Deep Sets': {ratio:.2f} "
            f"(goal >= {GOAL})"
        )


if __name__ == "__main__":
    main()
