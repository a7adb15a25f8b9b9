"""What every process of a run builds from its settings: the Keras replica and the stage-in.

Layer: train, factory. The driver (to check the model before any process starts), each worker
and the final evaluation build the same model from the same settings, and stage shards with the
same stage settings: from here, so that they cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gridtrain.config import StageConfig
from gridtrain.stage import StageIn
from gridtrain.task import Task
from gridtrain.train.settings import TrainConfig, WorkerSpec

if TYPE_CHECKING:
    import keras


def build_replica(
    settings: TrainConfig,
    features: tuple[str, ...],
    groups: dict[str, tuple[int, tuple[str, ...]]],
    images: dict[str, tuple[int, ...]] | None = None,
    task: Task | None = None,
) -> keras.Model:
    """The run's compiled model over the given inputs for ``task`` (binary when None), its output
    checked against the task (TensorFlow is imported here, lazily)."""
    from gridtrain.models import InputSpec, build_model

    return build_model(
        settings.model,
        settings.model_params,
        InputSpec(features, groups, images or {}, task or Task()),
        learning_rate=settings.learning_rate,
        seed=settings.seed,
    )


def replica(spec: WorkerSpec) -> keras.Model:
    """The model of the run that ``spec`` (worker.json) describes."""
    from gridtrain.models.spec import image_shapes

    images = image_shapes(spec.manifest.get("images", []))
    task = Task.from_dict(spec.manifest.get("task"))
    return build_replica(spec.settings, spec.features, spec.groups, images, task)


def stage_in(spec: WorkerSpec, scratch: Path, budget_bytes: int | None = None) -> StageIn:
    """A stage-in into ``scratch`` with the run's stage settings (timeouts, retries, chunks)."""
    stage = StageConfig.from_dict(spec.stage)
    return StageIn(
        scratch,
        budget_bytes,
        timeout=stage.timeout,
        retries=stage.retries,
        backoff=stage.backoff,
        parallel_chunks=stage.parallel_chunks,
    )
