"""The model that scores: the run's Keras model or its ONNX export, behind one interface.

Layer: apply, the runtimes' edge. Both engines take the *raw* inputs ``export.json`` describes
(``features`` as the chosen columns, each jagged group padded with its entry count, all float32)
and return the scores in the units the user sees (probabilities; a regression's targets in
physical units): the standardisation is inside the model, exactly as ``gridtrain export`` folds
it in (``gridtrain.export.graph.raw_input_model``). The ONNX engine reads ``export.json`` and
``model.onnx`` and imports neither TensorFlow nor Keras (nor the export and training layers that
would load them): the path for a grid job or an analysis environment without TensorFlow.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gridtrain.errors import ApplyError
from gridtrain.rundir import RunDir

ENGINES = ("keras", "onnx")
EXPORT_JSON = "export.json"
OUTPUT = "score"  # the exported graph's one output (gridtrain.export.graph.OUTPUT)

Scores = Callable[[dict[str, np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class ModelInput:
    """One raw input of the model, as ``export.json`` describes it."""

    name: str
    columns: tuple[str, ...] = ()  # features: the feature columns; a group: its channels
    length: int | None = None  # a group: entries kept per event
    counts: str | None = None  # a count input: the group whose entries it counts

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> ModelInput:
        length = record.get("length")
        return cls(
            record["name"],
            tuple(record.get("columns", ())),
            None if length is None else int(length),
            record.get("counts"),
        )


@dataclass(frozen=True)
class ModelRef:
    """Which model scores, found and fingerprinted without loading it (cheap, any process)."""

    engine: str
    run_dir: Path
    path: Path  # model.keras, or the export's model.onnx
    sha256: str

    @property
    def export_dir(self) -> Path:
        return self.path.parent


FOLDS_FILE = "folds.json"  # a k-fold run's parent directory (gridtrain.train.kfold)


@dataclass(frozen=True)
class FoldRule:
    """How a k-fold run split its events: event ``e`` is in fold ``fold_of(ids, folds, seed)``
    (``gridtrain.data.folds``) of its ``event_id`` columns; fold k's model never trained on it."""

    folds: int
    seed: int
    event_id: tuple[str, ...]


@dataclass(frozen=True)
class RunModels:
    """What scores a run's events: its one model, or one per fold of a k-fold run with the
    rule that gives each event the model that never saw it."""

    engine: str
    run_dir: Path
    models: tuple[ModelRef, ...]
    folds: FoldRule | None = None

    @property
    def sha256(self) -> str:
        """The model file's SHA-256; of a k-fold run, that of its models' in fold order."""
        if len(self.models) == 1:
            return self.models[0].sha256
        return hashlib.sha256("\n".join(m.sha256 for m in self.models).encode()).hexdigest()


@dataclass
class Engine:
    """A loaded model: its raw inputs and ``score(feed) -> (N, outputs)``."""

    kind: str
    inputs: tuple[ModelInput, ...]
    score: Scores


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_model(run_dir: Path, engine: str, export_dir: Path | None = None) -> ModelRef:
    """The model file of ``engine`` for the run in ``run_dir``; ``ApplyError`` if it has none."""
    files = RunDir(run_dir)
    if not files.config.exists():
        raise ApplyError(f"{run_dir}: no {files.config.name}; not a gridtrain run directory")
    if engine == "keras":
        if not files.model.exists():
            raise ApplyError(
                f"{run_dir}: no {files.model.name}; score with a finished run (gridtrain "
                "train), or with its export (--engine onnx)"
            )
        return ModelRef(engine, run_dir, files.model, _sha256(files.model))
    if engine != "onnx":
        raise ApplyError(f"--engine {engine}: choose one of {', '.join(ENGINES)}")
    folder = export_dir or run_dir / "export"
    described = folder / EXPORT_JSON
    if not described.exists():
        raise ApplyError(
            f"{folder}: no {EXPORT_JSON}; export the run first (gridtrain export {run_dir} "
            "--format onnx), or score with --engine keras"
        )
    onnx = json.loads(described.read_text()).get("files", {}).get("onnx")
    if onnx is None or not (folder / onnx["path"]).exists():
        raise ApplyError(f"{folder}: the export has no ONNX model; export again with --format onnx")
    return ModelRef(engine, run_dir, folder / onnx["path"], _sha256(folder / onnx["path"]))


def find_models(run_dir: Path, engine: str, export_dir: Path | None = None) -> RunModels:
    """The run's model, or each fold's for a k-fold run (``RUN_DIR/folds.json``). A k-fold
    run's ONNX models are those of its export (``gridtrain export RUN_DIR``: ``export.json``'s
    ``folds`` record, each fold's model in ``fold-k/`` below it), or else each fold's own export
    (``RUN_DIR/fold-k/export``)."""
    folds = run_dir / FOLDS_FILE
    if not folds.is_file():
        return RunModels(engine, run_dir, (find_model(run_dir, engine, export_dir),))
    record = json.loads(folds.read_text())
    rule = FoldRule(int(record["folds"]), int(record["seed"]), tuple(record["event_id"]))
    if not rule.event_id or rule.event_id == ("sample_index", "entry"):
        raise ApplyError(
            f"{run_dir}: a k-fold run without dataset.event_id branches split its events by "
            "(sample, entry), which a scored file does not carry; score with one fold's run "
            f"({run_dir}/{record['runs'][0]}) instead"
        )
    if engine == "onnx":
        exported = _fold_exports(run_dir, record["runs"], rule, export_dir)
        if exported is not None:
            return RunModels(engine, run_dir, exported, rule)
    elif export_dir is not None:
        raise ApplyError(
            f"--export {export_dir}: the Keras engine scores with each fold's model.keras; "
            "leave --export out, or score with the export (--engine onnx)"
        )
    models = tuple(find_model(run_dir / name, engine) for name in record["runs"])
    return RunModels(engine, run_dir, models, rule)


def _fold_exports(
    run_dir: Path, runs: list[str], rule: FoldRule, export_dir: Path | None
) -> tuple[ModelRef, ...] | None:
    """Each fold's ONNX model from a k-fold run's export (``export.json`` with ``folds``); None
    when the run was not exported as a whole (``--export`` not given): each fold's own then."""
    folder = export_dir or run_dir / "export"
    described = folder / EXPORT_JSON
    if not described.is_file():
        if export_dir is None:
            return None
        raise ApplyError(
            f"--export {export_dir}: no {EXPORT_JSON}; export the run first (gridtrain export "
            f"{run_dir} --format onnx)"
        )
    record = json.loads(described.read_text()).get("folds")
    if not isinstance(record, dict):
        raise ApplyError(
            f"{folder}: the export of one model, not of the k-fold run {run_dir}; export the "
            f"run again (gridtrain export {run_dir} --format onnx), or leave --export out"
        )
    if (record.get("folds"), record.get("seed"), tuple(record.get("event_id", ()))) != (
        rule.folds,
        rule.seed,
        rule.event_id,
    ):
        raise ApplyError(
            f"{folder}: its fold rule ({record.get('folds')} folds, seed {record.get('seed')}) "
            f"is not that of {run_dir} ({rule.folds} folds, seed {rule.seed}); export the run "
            "again"
        )
    models = []
    for name in runs:
        onnx = record.get("models", {}).get(name, {}).get("onnx")
        if onnx is None or not (folder / onnx["path"]).is_file():
            raise ApplyError(
                f"{folder}: the export has no ONNX model of {name}; export again with "
                f"--format onnx (gridtrain export {run_dir} --format onnx)"
            )
        path = folder / onnx["path"]
        if not (path.parent / EXPORT_JSON).is_file():
            raise ApplyError(f"{path.parent}: no {EXPORT_JSON} beside {path.name}; export again")
        models.append(ModelRef("onnx", run_dir / name, path, _sha256(path)))
    return tuple(models)


def load_engine(model: ModelRef, threads: int) -> Engine:
    """Load ``model`` to score on ``threads`` threads."""
    if model.engine == "onnx":
        return _onnx(model, threads)
    return _keras(model, threads)


def _onnx(model: ModelRef, threads: int) -> Engine:
    try:
        import onnxruntime
    except ImportError:
        raise ApplyError(
            "--engine onnx needs ONNX Runtime: pip install onnxruntime (or gridtrain[export])"
        ) from None
    described = json.loads((model.export_dir / EXPORT_JSON).read_text())
    names = described["files"]["onnx"]
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # The memory pattern plans allocations per input shape: a file's last block (and every
    # file of another size) would be planned again; without it a fresh session's first pass
    # over a file takes about a sixth less CPU, and later passes as much as with it.
    options.enable_mem_pattern = False
    session = onnxruntime.InferenceSession(
        str(model.path), options, providers=["CPUExecutionProvider"]
    )
    tensors = names.get("inputs", {})
    output = names.get("outputs", {}).get(OUTPUT, OUTPUT)

    def score(feed: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(session.run([output], {tensors.get(k, k): v for k, v in feed.items()})[0])

    inputs = tuple(ModelInput.from_json(record) for record in described["inputs"])
    return Engine("onnx", inputs, score)


def _keras(model: ModelRef, threads: int) -> Engine:
    """The run's Keras model behind the export's raw-input wrapper (the same graph, run by
    Keras): the standardisation and a regression's un-standardisation as the export has them."""
    # gridtrain.train loads the XRootD client (root:// inputs) before TensorFlow can be loaded.
    from gridtrain.export.graph import describe_inputs, raw_input_model
    from gridtrain.models import load_model, model_input_names
    from gridtrain.train.settings import WorkerSpec

    import tensorflow as tf  # isort: skip

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    spec = WorkerSpec.read(RunDir(model.run_dir).spec)
    trained = load_model(model.path, compile=False)
    described = describe_inputs(spec, model_input_names(trained))
    wrapped = raw_input_model(trained, spec, described)

    def score(feed: dict[str, np.ndarray]) -> np.ndarray:
        return np.asarray(wrapped.predict_on_batch(feed))

    inputs = tuple(ModelInput.from_json(i.to_json()) for i in described)
    return Engine("keras", inputs, score)
