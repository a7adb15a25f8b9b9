"""The exported graph: the trained model behind the manifest's standardisation, as Keras builds it.

Layer: export, model construction (no files). The model gridtrain trains takes standardised
inputs; an experiment's C++ framework has raw values from the ROOT file. ``raw_input_model`` wraps
the trained model so that the graph takes the raw values (the features' and each jagged group's
mean and 1/std folded in as constants, padded entries set to exactly 0 as training does) and
returns the trained model's score (a regression's outputs un-standardised: physical units, the
manifest's target statistics folded in as constants). Every input is float32 (the entry counts
too), as C++ frameworks feed them. ``describe_inputs`` says what each input holds, branch by
branch, for ``export.json``; a feature column that is a derived feature (``dataset.features``'
``{name, expr, fill}``) is no branch, so its entry's ``derived`` gives the expression to compute
and the value where it is undefined: ``{"lead_jet_pt": {"expr": "Jet_pt[0]", "fill": -1.0}}``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from gridtrain.errors import ConfigError
from gridtrain.models.spec import COUNT_SUFFIX, FEATURES
from gridtrain.task import Task
from gridtrain.train.inputs import standardisation
from gridtrain.train.settings import WorkerSpec

if TYPE_CHECKING:
    import keras

OUTPUT = "score"


@dataclass(frozen=True)
class ExportInput:
    """One input of the exported graph, as a C++ producer fills it."""

    name: str
    shape: tuple[int | None, ...]  # None: the batch axis (any size)
    dtype: str
    columns: tuple[str, ...] = ()  # the branch of each column (features) or channel (a group)
    length: int | None = None  # a group: entries kept per event (longer lists are cut)
    fill: float | None = None  # a group: the value of padded entries (any value works)
    counts: str | None = None  # a count input: the group whose entries it counts (<= length)
    # the features: the derived columns, name -> {"expr": ..., "fill": ...} (None: no column is)
    derived: dict[str, dict[str, Any]] | None = field(default=None, hash=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {key: value for key, value in asdict(self).items() if value not in (None, ())}


def describe_inputs(spec: WorkerSpec, wanted: list[str]) -> list[ExportInput]:
    """The raw inputs ``wanted`` (the model's input names), in that order."""
    groups = {group["name"]: group for group in spec.manifest["jagged"]}
    images = {image["name"] for image in spec.manifest.get("images", [])}
    described = []
    for name in wanted:
        if name in images:
            raise ConfigError(
                f"the model takes the image {name!r} (dataset.images); exporting image inputs is "
                "not supported yet: use the trained model.keras as it is"
            )
        if name == FEATURES:
            derived = spec.manifest.get("derived", {})
            these = {c: dict(derived[c]) for c in spec.features if c in derived} or None
            described.append(
                ExportInput(
                    name, (None, len(spec.features)), "float32", spec.features, derived=these
                )
            )
        elif name in spec.groups:
            length, channels = spec.groups[name]
            fill = float(groups[name].get("fill", 0.0))
            described.append(
                ExportInput(name, (None, length, len(channels)), "float32", channels, length, fill)
            )
        else:
            group = name.removesuffix(COUNT_SUFFIX)
            # float32 like every input: CMSSW's cms::Ort::ONNXRuntime feeds float arrays only
            described.append(ExportInput(name, (None,), "float32", counts=group))
    return described


def _constants(spec: WorkerSpec, name: str) -> tuple[np.ndarray, np.ndarray]:
    stats = spec.manifest["stats"]
    if name == FEATURES:
        columns = [spec.manifest["features"].index(feature) for feature in spec.features]
        return standardisation(stats[FEATURES], columns)
    return standardisation(stats[name])


def target_scale(task: Task) -> tuple[np.ndarray, np.ndarray]:
    """``(m, inverse)`` with ``(z - m) * inverse == z * std + mean``: a regression's standardised
    outputs back in physical units through the ``Standardise`` layer."""
    std = np.asarray([t.std for t in task.targets], dtype=np.float64)
    mean = np.asarray([t.mean for t in task.targets], dtype=np.float64)
    return (-mean / std).astype(np.float32), std.astype(np.float32)


def raw_input_model(model: keras.Model, spec: WorkerSpec, inputs: list[ExportInput]) -> Any:
    """A Keras model over the raw ``inputs`` whose output is ``model``'s score, named OUTPUT."""
    import keras

    from gridtrain.models import arrange_inputs
    from gridtrain.models.layers import Standardise

    raw = {i.name: keras.Input(shape=i.shape[1:], dtype=i.dtype, name=i.name) for i in inputs}
    standardised: dict[str, Any] = {}
    for described in inputs:
        name = described.name
        if described.counts is not None:  # the trained model counts in int32
            standardised[name] = keras.ops.cast(raw[name], "int32")
            continue
        scale = Standardise(*_constants(spec, name), name=f"standardise_{name}")
        if described.length is None:
            standardised[name] = scale(raw[name])
        elif name + COUNT_SUFFIX in raw:  # padded entries exactly 0, whatever the fill value
            standardised[name] = scale([raw[name], raw[name + COUNT_SUFFIX]])
        else:
            raise ValueError(f"the model takes {name} without {name}{COUNT_SUFFIX}")
    score = model(arrange_inputs(model, standardised))
    task = Task.from_dict(spec.manifest.get("task"))
    if not task.is_classifier:  # y = z * std + mean, written as Standardise's (z - m) * inverse
        mean, inverse = target_scale(task)
        score = Standardise(mean, inverse, name="unstandardise_targets")(score)
    named = keras.layers.Identity(name=OUTPUT)(score)
    return keras.Model(inputs=raw, outputs=named, name="gridtrain_export")
