"""Training settings: the config's ``train`` section as a record, checked against the manifest.

Layer: train, records. No TensorFlow, no sockets: the driver checks everything here before any
process starts, and hands workers the same record as JSON (``worker.json`` in the run directory).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gridtrain.backend import DEFAULT_BACKEND, PRECISIONS, check_backend
from gridtrain.data.manifest import Manifest
from gridtrain.errors import ConfigError
from gridtrain.files import write_text
from gridtrain.ps.protocol import WIRE_FLOAT32, pushes_topk
from gridtrain.ps.rules import AlgorithmConfig
from gridtrain.train.targets import DEFAULT_NEGATIVE_WEIGHTS

# The rules that take a push of any number of steps (``train.overlap: adaptive``): Downpour adds
# the delta, EASGD moves by the pushed weights' distance. ADAG and GEM scale a push by its window,
# and sync counts its rounds by windows.
ADAPTIVE_ALGORITHMS = ("downpour", "easgd")


@dataclass(frozen=True)
class TrainConfig:
    """The validated ``train`` section (defaults come from the schema)."""

    model: str
    model_params: dict[str, Any]
    features: tuple[str, ...] | None
    epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    algorithm: dict[str, Any]
    every: int
    patience: int | None
    min_delta: float
    restore_best: bool
    lease_timeout: float
    workers: int
    executor: str
    condor_profile: str
    scratch_budget_mb: int | None
    run_dir: str
    # exchanges travel while the next window trains; "adaptive": and a busy link defers the
    # exchange instead of being waited for (train/overlap.py)
    overlap: bool | str = True
    negative_weights: str = DEFAULT_NEGATIVE_WEIGHTS  # keep | abs | zero (train/targets.py)
    wire: str = WIRE_FLOAT32  # float32 | bf16 | topk | topk-bf16: how tensors travel
    topk: float = 0.01  # with wire topk: the share of each tensor's entries a push carries
    backend: str = DEFAULT_BACKEND  # the Keras backend of the driver and workers (backend.py)
    precision: str = "float32"  # Keras' dtype policy: float32, mixed_bfloat16, mixed_float16
    folds: int | None = None  # k-fold training: K models (train/kfold.py); None: one model
    fold: int | None = None  # the fold this run trains (0 .. folds-1), set by train/kfold.py
    # fine-tuning (train/finetune.py): initial weights from another model, frozen layers, a head
    init_from: str | None = None
    freeze: tuple[str, ...] = ()
    head: tuple[str, ...] = ("probability", "prediction")
    head_learning_rate: float | None = None
    mlflow: str | None = None  # an MLflow tracking URI: the run logged there too (tracking.py)

    @classmethod
    def from_dict(cls, section: dict[str, Any]) -> TrainConfig:
        algorithm = dict(section["algorithm"])
        every = int(algorithm.pop("every"))
        stopping = section["early_stopping"]
        features = section["features"]
        return cls(
            model=section["model"]["name"],
            model_params=dict(section["model"]["params"]),
            features=tuple(features) if features is not None else None,
            epochs=section["epochs"],
            batch_size=section["batch_size"],
            learning_rate=float(section["learning_rate"]),
            seed=section["seed"],
            algorithm=algorithm,
            every=every,
            patience=stopping["patience"],
            min_delta=float(stopping["min_delta"]),
            restore_best=stopping["restore_best"],
            lease_timeout=float(section["lease_timeout"]),
            workers=section["workers"],
            executor=section["executor"],
            condor_profile=section["condor"]["profile"],
            scratch_budget_mb=section["scratch_budget_mb"],
            run_dir=section["run_dir"],
            overlap=section["overlap"],
            negative_weights=section.get("negative_weights", DEFAULT_NEGATIVE_WEIGHTS),
            wire=section.get("wire", WIRE_FLOAT32),
            topk=float(section.get("topk", 0.01)),
            backend=section.get("backend", DEFAULT_BACKEND),
            precision=section.get("precision", "float32"),
            folds=section.get("folds"),
            init_from=section.get("init_from"),
            freeze=tuple(section.get("freeze") or ()),
            head=tuple(section.get("head", ("probability", "prediction"))),
            head_learning_rate=(
                None
                if section.get("head_learning_rate") is None
                else float(section["head_learning_rate"])
            ),
            mlflow=section.get("mlflow"),
        )

    def __post_init__(self) -> None:
        check_backend(self.backend)
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"train.precision: {self.precision!r} is not one of {', '.join(PRECISIONS)}"
            )
        if pushes_topk(self.wire) and self.algorithm.get("algorithm") == "easgd":
            raise ConfigError(
                f"train.wire: {self.wire} sends updates, but EASGD workers push their weights; "
                "use wire: bf16 with easgd, or another algorithm"
            )

        algorithm = self.algorithm.get("algorithm", AlgorithmConfig.algorithm)
        if self.overlap == "adaptive" and algorithm not in ADAPTIVE_ALGORITHMS:
            raise ConfigError(
                f"train.overlap: adaptive pushes as many steps as the link let pass, but "
                f"{algorithm} takes one window of every={self.every} steps per push; use "
                f"overlap: true with {algorithm}, or algorithm {' or '.join(ADAPTIVE_ALGORITHMS)}"
            )

    def algorithm_config(self) -> AlgorithmConfig:
        """The parameter server's rule; ADAG's window is the exchange period."""
        values = dict(self.algorithm)
        if values.get("algorithm") == "adag":
            values["window"] = self.every
        return AlgorithmConfig.from_dict(values)

    def with_model_path_resolved(self, base: Path) -> TrainConfig:
        """A user model named by file ("models/net.py:build") made absolute for the workers."""
        from gridtrain.models import absolute_model_name

        return TrainConfig(**{**asdict(self), "model": absolute_model_name(self.model, base)})


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs besides the PS address and secret (``worker.json``).

    ``manifest`` is the dataset's manifest; ``locations`` maps each shard's name in it to where a
    worker fetches it (an absolute path or a URL), so a worker needs no access to the folder the
    manifest came from.
    """

    manifest: dict[str, Any]
    source: str
    settings: TrainConfig
    features: tuple[str, ...]
    groups: dict[str, tuple[int, tuple[str, ...]]] = field(default_factory=dict)
    locations: dict[str, str] = field(default_factory=dict)
    stage: dict[str, Any] = field(default_factory=dict)  # the config's stage section

    def write(self, path: Path) -> None:
        write_text(path, json.dumps(asdict(self), indent=1))

    @classmethod
    def read(cls, path: Path) -> WorkerSpec:
        try:
            data = json.loads(path.read_text())
            settings = data["settings"]
            settings.setdefault("condor_profile", "local-pool")  # runs prepared before it existed
            if settings["features"] is not None:
                settings["features"] = tuple(settings["features"])
            return cls(
                manifest=data["manifest"],
                source=data["source"],
                settings=TrainConfig(**settings),
                features=tuple(data["features"]),
                groups={
                    name: (int(length), tuple(channels))
                    for name, (length, channels) in data["groups"].items()
                },
                locations=dict(data["locations"]),
                stage=dict(data.get("stage", {})),
            )
        except FileNotFoundError:
            raise ConfigError(
                f"{path}: no worker spec; it is written by `gridtrain train` into the run directory"
            ) from None
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"{path}: not a gridtrain worker spec ({err})") from None


def select_inputs(
    manifest: Manifest, features: tuple[str, ...] | None, source: str
) -> tuple[tuple[str, ...], dict[str, tuple[int, tuple[str, ...]]]]:
    """The flat features and jagged groups the model may use; unknown features are an error."""
    available = list(manifest.features)
    chosen = tuple(available) if features is None else features
    unknown = [name for name in chosen if name not in available]
    if unknown:
        raise ConfigError(
            f"train.features: {', '.join(map(repr, unknown))} not in the dataset {source} "
            f"(it has {', '.join(available) or 'no flat features'}); fix the name or re-run "
            "conversion with it in dataset.features"
        )
    groups = {
        group["name"]: (int(group["length"]), tuple(group["branches"])) for group in manifest.jagged
    }
    return chosen, groups
