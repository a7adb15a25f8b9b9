"""``gridtrain export RUN_DIR``: the trained model as ONNX, SavedModel and a frozen graph, verified.

Layer: export, orchestration. Takes the run's model (``model.keras``; for a run stopped before
the end, its best validated weights or its last checkpoint), wraps it behind the manifest's
standardisation (``graph``), writes each format (``formats``) into a new folder, and checks each
one: the validation shards' raw values are scored by each format as its users load it and
compared event by event with the Keras model on standardised inputs. Only when every format
agrees within the tolerance is the folder renamed to its final name, with ``export.json`` (what a
C++ producer needs to fill the inputs) inside; anything else leaves nothing there.

Agreement: ``|exported - keras| <= tolerance * max(|keras|, 1)`` for every event, a relative
tolerance for scores above 1 and an absolute one below (probabilities).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from gridtrain import __version__
from gridtrain.backend import use_backend
from gridtrain.data.manifest import Manifest
from gridtrain.data.shards import ShardReader
from gridtrain.errors import ExportError, GridtrainError
from gridtrain.evaluation import METRIC_NEGATIVE_WEIGHTS, weighted_auc
from gridtrain.export import FORMATS, formats
from gridtrain.export.graph import OUTPUT, ExportInput, describe_inputs, raw_input_model
from gridtrain.export.torch_onnx import export_backend
from gridtrain.files import write_text
from gridtrain.models.spec import FEATURES
from gridtrain.rundir import RunDir
from gridtrain.task import Task
from gridtrain.train.inputs import InputBuilder
from gridtrain.train.replica import replica, stage_in
from gridtrain.train.settings import WorkerSpec
from gridtrain.train.targets import unstandardise

log = logging.getLogger(__name__)

FORMAT = "gridtrain-export"
FORMAT_VERSION = 1
EXPORT_JSON = "export.json"
DEFAULT_TOLERANCE = 1e-5
BATCH = 4096


@dataclass
class Check:
    """One format scored on the validation events against the Keras model."""

    format: str
    events: int
    max_abs_diff: float
    auc: float | None
    keras_auc: float | None
    seconds: float

    def line(self) -> str:
        auc = f", AUC {self.auc:.6f} (Keras {self.keras_auc:.6f})" if self.auc is not None else ""
        return (
            f"{self.format}: {self.events} validation events, max |score - Keras| "
            f"{self.max_abs_diff:.2e}{auc}"
        )


@dataclass
class Exported:
    folder: Path
    weights: str
    checks: list[Check] = field(default_factory=list)


def _weights(files: RunDir, spec: WorkerSpec) -> tuple[Any, str]:
    """The model to export and where its weights came from."""
    from gridtrain.models import load_model
    from gridtrain.ps.checkpoint import read_checkpoint, read_initial_weights

    if files.model.exists() and export_backend(files.model) == "torch":
        model = replica(spec)  # the pickled module in model.keras names the trainer's module
        with warnings.catch_warnings():  # the optimizer's state is not wanted for scoring
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model.load_weights(files.model)
        return model, files.model.name
    if files.model.exists():
        return load_model(files.model, compile=False), files.model.name
    if not files.checkpoint.exists():
        raise ExportError(
            f"{files.path}: no {files.model.name} and no {files.checkpoint.name}; train first "
            "(gridtrain train), or give the run directory that gridtrain train wrote"
        )
    model = replica(spec)
    if spec.settings.restore_best and files.best.exists():
        model.set_weights(read_initial_weights(files.best))
        return model, f"{files.best.name} (the best validated weights of an unfinished run)"
    checkpoint = read_checkpoint(files.checkpoint)
    model.set_weights(checkpoint.center)
    return model, f"{files.checkpoint.name} (center version {checkpoint.version}, unfinished run)"


def _layers(model: Any) -> Any:
    """Every layer of ``model``, those of nested models included."""
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _layers(layer)


def _not_exportable(model: Any, kind: str, err: Exception) -> ExportError:
    """The error for a model a format cannot hold, naming the layer that is not Keras' own."""
    own = [
        layer
        for layer in _layers(model)
        if not type(layer).__module__.startswith(("keras.", "gridtrain."))
    ]
    first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    if own:
        layer = own[0]
        return ExportError(
            f"layer {layer.name!r} ({type(layer).__module__}.{type(layer).__name__}) cannot be "
            f"exported to {kind}: {first}; write it with keras.ops only, or leave {kind} out "
            "(--format)"
        )
    return ExportError(f"the model cannot be exported to {kind}: {first}")


def _validation(spec: WorkerSpec, wanted: list[str], scratch: Path) -> Any:
    """Per validation shard: (raw inputs, standardised inputs, what the model is fit to, event
    weights)."""
    manifest = Manifest.from_dict(spec.manifest)
    builder = InputBuilder(manifest, spec.features, spec.groups, wanted)
    columns = [manifest.features.index(name) for name in spec.features]
    datasets = list(wanted)
    stagein = stage_in(spec, scratch)
    try:
        for entry in manifest.shards.get("validation", []):
            location = spec.locations[entry.path]
            local = stagein.get(location, entry.bytes, entry.adler32)
            with ShardReader(local, datasets) as reader:
                raw = reader.read()
            if FEATURES in raw:
                raw[FEATURES] = np.ascontiguousarray(raw[FEATURES][:, columns])
            standardised = builder.load(local)
            stagein.release(location)
            exported = {n: raw[n].astype(np.float32, copy=False) for n in wanted}  # all float32
            yield exported, standardised.inputs, standardised.labels, standardised.event_weights
    finally:
        stagein.close()


def _auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> float | None:
    """The binary AUC; ``None`` for other tasks (labels one-hot or regression targets)."""
    if labels.ndim != 1 or labels.size == 0 or np.unique(labels).size < 2:
        return None
    return float(weighted_auc(labels.astype(np.float64), scores, weights))


def verify(
    model: Any,
    written: list[formats.Written],
    spec: WorkerSpec,
    inputs: list[ExportInput],
    tolerance: float,
) -> list[Check]:
    """Score the validation shards with every written format and with ``model``; raise
    ``ExportError`` where a format differs by more than ``tolerance``."""
    from gridtrain.models import arrange_inputs

    wanted = [i.name for i in inputs]
    task = Task.from_dict(spec.manifest.get("task"))
    scorers = {w.format: formats.load(w) for w in written}
    scores: dict[str, list[np.ndarray]] = {name: [] for name in ["keras", *scorers]}
    seconds = dict.fromkeys(scorers, 0.0)
    labels, weights = [], []
    with tempfile.TemporaryDirectory(prefix="gridtrain-export-") as scratch:
        for raw, standardised, label, weight in _validation(spec, wanted, Path(scratch)):
            for start in range(0, label.shape[0], BATCH):
                batch = {n: standardised[n][start : start + BATCH] for n in wanted}
                keras_scores = np.asarray(model.predict_on_batch(arrange_inputs(model, batch)))
                if not task.is_classifier:  # the export gives physical units
                    keras_scores = unstandardise(task, keras_scores)
                scores["keras"].append(keras_scores.reshape(-1))
                feed = {n: raw[n][start : start + BATCH] for n in wanted}
                for kind, score in scorers.items():
                    began = time.perf_counter()
                    try:
                        scored = np.asarray(score(feed))
                    except Exception as err:  # the runtime's own error, often pages long
                        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                        raise ExportError(
                            f"{kind} cannot score the validation events: {first[:300]}; nothing "
                            "was written"
                        ) from err
                    scores[kind].append(scored.reshape(-1))
                    seconds[kind] += time.perf_counter() - began
            labels.append(label)
            weights.append(weight)
    if not labels:
        raise ExportError(
            "the dataset has no validation shards to verify the export on; convert it with "
            "dataset.validation_fraction > 0"
        )
    label, weight = np.concatenate(labels), np.concatenate(weights)
    reference = np.concatenate(scores["keras"])
    keras_auc = _auc(label, reference, weight)
    checks = []
    for kind in scorers:
        exported = np.concatenate(scores[kind])
        difference = np.abs(exported.astype(np.float64) - reference)
        check = Check(
            kind,
            int(label.shape[0]),  # events, not outputs (a multiclass event has one per class)
            float(difference.max()),
            _auc(label, exported, weight),
            keras_auc,
            round(seconds[kind], 4),
        )
        worst = int(np.argmax(difference / np.maximum(np.abs(reference), 1.0)))
        if difference[worst] > tolerance * max(abs(float(reference[worst])), 1.0):
            event, output = divmod(worst, task.output_units)
            raise ExportError(
                f"{kind} scores validation event {event} {exported[worst]:.8g} (output "
                f"{output}), the Keras model {reference[worst]:.8g} (|difference| "
                f"{difference[worst]:.2e} > tolerance {tolerance:g}); nothing was written"
            )
        checks.append(check)
    return checks


def _outputs(task: Task) -> dict[str, Any]:
    """``export.json``'s one output: its shape, what each column is and in which units."""
    if task.kind == "regression":
        columns = [t.name for t in task.targets]
        meaning = "the targets in physical units (as the shards store them): " + ", ".join(
            f"{t.name} = {t.expression}" for t in task.targets
        )
        units = "the target expression's own units"
    elif task.kind == "multiclass":
        columns = list(task.classes)
        meaning = f"probability of each class (softmax, rows sum to 1): {', '.join(columns)}"
        units = "probability"
    else:
        columns = [task.classes[1]]
        meaning = f"probability of label 1, {task.classes[1]} (sigmoid)"
        units = "probability"
    return {
        "name": OUTPUT,
        "shape": [None, task.output_units],
        "dtype": "float32",
        "columns": columns,
        "units": units,
        "meaning": meaning,
    }


def _samples(manifest: dict[str, Any], task: Task) -> dict[str, dict[str, Any]]:
    """Per sample: its label (class index; None for a regression) and its event weight as the
    shards store it, ``float32(weight * factor)`` (``weight``: a branch, an expression or a
    number; ``factor``: xsec x lumi / sumw, 1 without a cross-section)."""
    normalisation = (manifest.get("weights") or {}).get("normalisation") or {}
    own = normalisation.get("samples") or {}
    samples: dict[str, dict[str, Any]] = {}
    for source in manifest["sources"]:
        name = source["sample"]
        if name in samples:
            continue
        label = source["label"] if task.is_classifier else None
        if isinstance(label, str):  # a class name
            label = task.classes.index(label)
        record = own.get(name) or {}
        weight = record.get("weight", manifest["weight"])
        samples[name] = {
            "label": label,
            "class": task.classes[label] if label is not None else None,
            "weight": 1.0 if weight is None else weight,
            "factor": float(record.get("factor", 1.0)),
        }
    return samples


def _describe(
    files: RunDir,
    spec: WorkerSpec,
    inputs: list[ExportInput],
    written: list[formats.Written],
    weights: str,
) -> dict[str, Any]:
    manifest = spec.manifest
    task = Task.from_dict(manifest.get("task"))
    config = yaml.safe_load(files.config.read_text()) if files.config.exists() else {}
    samples = _samples(manifest, task)
    classes: dict[str, list[str]] = {}  # label -> its samples; a regression has none
    for name, sample in samples.items():
        if sample["label"] is not None:
            classes.setdefault(str(sample["label"]), []).append(name)
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    split = manifest["split"]
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "gridtrain_version": __version__,
        "manifest_sha256": hashlib.sha256(canonical).hexdigest(),
        "dataset": manifest["name"],
        "weights": weights,
        "task": task.kind,
        "class_names": list(task.classes),
        "classes": classes,
        "targets": [t.to_dict() for t in task.targets],
        "samples": samples,
        "inputs": [i.to_json() for i in inputs],
        "outputs": [_outputs(task)],
        "files": {
            w.format: {
                "path": w.path.name,
                "inputs": w.inputs,
                "outputs": w.outputs,
            }
            for w in written
        },
        "metrics": {
            "negative_weights": METRIC_NEGATIVE_WEIGHTS,
            "rule": "every metric counts an event of negative weight as weight 0 (the report's "
            "rule, whatever train.negative_weights did in training)",
            "training_negative_weights": spec.settings.negative_weights,
        },
        "event_selection": {
            "tree": manifest["sources"][0]["tree"] if manifest["sources"] else None,
            "selection": (config.get("dataset") or {}).get("selection"),
            "event_id": manifest["event_id"],
            "weight": manifest["weight"],
            "validation_split": {
                **split,
                "rule": "h = seed; for each event-id branch x (as uint64): h = splitmix64(h ^ x); "
                "the event is in the validation split when h < fraction * 2**64",
            },
        },
    }


def _replace(folder: Path, final: Path) -> None:
    """Rename the written ``folder`` to ``final``, replacing an earlier export whole."""
    folder.chmod(0o755)
    if final.exists():
        old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.old."))
        final.rename(old / final.name)
        folder.rename(final)
        shutil.rmtree(old)
    else:
        folder.rename(final)


def _export_folds(
    run_dir: Path, kinds: tuple[str, ...], out: Path | None, tolerance: float
) -> Exported:
    """A k-fold run: each fold's model exported and verified into ``fold-k/``, and an
    ``export.json`` that says which model scores which event (``folds``: K, the hash and its
    inputs), so that C++ code dispatches each event to the model that never trained on it."""
    from gridtrain.train.kfold import FOLDS_FILE, fold_dirs

    record = json.loads((run_dir / FOLDS_FILE).read_text())
    final = (out or run_dir / "export").absolute()
    final.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    try:
        checks, weights, models = [], [], {}
        for fold in fold_dirs(run_dir):
            exported = export_run(fold, kinds, folder / fold.name, tolerance)
            described = json.loads((exported.folder / EXPORT_JSON).read_text())
            models[fold.name] = {
                kind: {**files, "path": f"{fold.name}/{files['path']}"}
                for kind, files in described["files"].items()
            }
            weights.append(f"{fold.name}: {exported.weights}")
            for check in exported.checks:
                check.format = f"{fold.name}/{check.format}"
                checks.append(check)
        del described["verification"], described["files"]
        description = {
            **described,
            "weights": "; ".join(weights),
            "folds": {
                **{key: value for key, value in record.items() if key != "runs"},
                "models": models,
                "dispatch": "score each event with models[f'fold-{fold}'], fold computed from "
                "its event-id branches by the rule: every event is then scored by the one model "
                "that did not train on it",
            },
            "verification": {"checks": [check.__dict__ for check in checks]},
        }
        write_text(folder / EXPORT_JSON, json.dumps(description, indent=1) + "\n")
        _replace(folder, final)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    log.info("exported %d folds to %s", len(models), final)
    return Exported(final, description["weights"], checks)


def export_run(
    run_dir: Path,
    kinds: tuple[str, ...] = FORMATS,
    out: Path | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> Exported:
    """Export the run in ``run_dir`` into ``out`` (default ``RUN_DIR/export``), verified; a
    k-fold run's folds each into ``fold-k/``."""
    from gridtrain.models import model_input_names
    from gridtrain.train.kfold import is_kfold

    if is_kfold(run_dir):
        return _export_folds(Path(run_dir), kinds, out, tolerance)
    files = RunDir(run_dir)
    if not files.spec.exists():
        raise ExportError(f"{run_dir}: no {files.spec.name}; not a gridtrain run directory")
    unknown = sorted(set(kinds) - set(FORMATS))
    if unknown or not kinds:
        raise ExportError(
            f"export format(s) {', '.join(unknown) or 'none'}: choose from {', '.join(FORMATS)}"
        )
    spec = WorkerSpec.read(files.spec)
    backend = export_backend(files.model)  # TensorFlow's exporters, or torch.onnx (torch_onnx)
    use_backend(backend)
    if backend == "torch" and tuple(kinds) == FORMATS:  # the default: what PyTorch can write
        kinds = ("onnx",)
    model, weights = _weights(files, spec)
    inputs = describe_inputs(spec, model_input_names(model))
    wrapped = raw_input_model(model, spec, inputs)
    final = (out or files.path / "export").absolute()
    final.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    try:
        written = []
        for kind in kinds:
            try:
                written.append(formats.write(kind, wrapped, inputs, folder))
            except GridtrainError:
                raise
            except Exception as err:  # a converter's own error: say which layer, and the way out
                raise _not_exportable(model, kind, err) from err
        checks = verify(model, written, spec, inputs, tolerance)
        description = _describe(files, spec, inputs, written, weights)
        description["verification"] = {
            "tolerance": tolerance,
            "rule": "|exported - keras| <= tolerance * max(|keras|, 1), every validation event",
            "checks": [check.__dict__ for check in checks],
        }
        write_text(folder / EXPORT_JSON, json.dumps(description, indent=1) + "\n")
        _replace(folder, final)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    log.info("exported %s to %s", weights, final)
    return Exported(final, weights, checks)
