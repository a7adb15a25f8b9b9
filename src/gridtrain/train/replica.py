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
    statistics: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] | None = None,
) -> keras.Model:
    """The run's compiled model over the given inputs for ``task`` (binary when None), its output
    checked against the task (Keras is imported here, lazily, on the run's backend), its layers
    under the run's dtype policy (``train.precision``), the layers ``train.freeze`` names frozen
    and the head's learning rate set (``train/finetune.py``). ``statistics``: the jagged groups'
    standardisation, for the models that undo it (the taggers' four-momenta)."""
    from gridtrain.backend import use_backend

    use_backend(settings.backend)  # before Keras is imported, or the one it was imported with
    import keras

    from gridtrain.models import InputSpec, build_model
    from gridtrain.train.finetune import prepare_model

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(settings.precision)
    try:  # layers keep the policy they were made under: the process's own is put back
        model = build_model(
            settings.model,
            settings.model_params,
            InputSpec(features, groups, images or {}, task or Task(), statistics or {}),
            learning_rate=settings.learning_rate,
            seed=settings.seed,
        )
        return prepare_model(
            model,
            settings.freeze,
            settings.head,
            settings.learning_rate,
            settings.head_learning_rate,
        )
    finally:
        keras.config.set_dtype_policy(previous)


def replica(spec: WorkerSpec) -> keras.Model:
    """The model of the run that ``spec`` (worker.json) describes."""
    from gridtrain.models.spec import group_statistics, image_shapes

    images = image_shapes(spec.manifest.get("images", []))
    task = Task.from_dict(spec.manifest.get("task"))
    statistics = group_statistics(spec.manifest.get("stats", {}), spec.groups)
    return build_replica(spec.settings, spec.features, spec.groups, images, task, statistics)


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
