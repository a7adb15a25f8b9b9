"""What a dataset offers a model: the names, shapes and dtypes of the inputs the worker feeds.

Layer: models, pure records. No TensorFlow or Keras here, so the head node can describe a
dataset's inputs (and check a config against them) without importing a framework.

The worker feeds a dict keyed by Keras input name:

- ``"features"``: float32 (batch, F), the flat features, standardised;
- ``"<group>"``: float32 (batch, L, C) per jagged group, standardised, padded entries exactly 0;
- ``"<group>_count"``: int32 (batch,), the entries of each event before padding (<= L);
- ``"<image>"``: float32 (batch, *shape) per image (``dataset.images``), standardised with the
  manifest's global (per channel) or per-pixel statistics.

``InputSpec.statistics`` holds, per jagged group, the per-channel mean and standard deviation the
worker standardised it with, so a model that needs physical values (the taggers' four-momenta and
(delta eta, delta phi) distances) can undo the standardisation in its graph; empty, the model
takes the values it is fed as physical ones.

``InputSpec.task`` is what the model must predict (``gridtrain.task.Task``): its output has
``task.output_units`` units with ``task.output_activation`` (1 sigmoid, K softmax, or T linear on
standardised targets), which ``gridtrain.models.build`` checks before any process starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gridtrain.errors import ConfigError
from gridtrain.task import Task

if TYPE_CHECKING:
    from gridtrain.data.manifest import Manifest

FEATURES = "features"
COUNT_SUFFIX = "_count"


@dataclass(frozen=True)
class InputTensor:
    """One input the worker can feed: its shape without the batch axis, and dtype."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def describe(self) -> str:
        dims = " x ".join(map(str, self.shape)) if self.shape else "scalar"
        return f"{self.name} ({dims}, {self.dtype})"


@dataclass(frozen=True)
class InputSpec:
    """The flat feature names, the jagged groups (name -> (length L, channel names)), the
    images (name -> shape per event), the task the model's head must fit and the groups'
    standardisation (name -> (means, standard deviations) per channel)."""

    features: tuple[str, ...]
    groups: dict[str, tuple[int, tuple[str, ...]]]
    images: dict[str, tuple[int, ...]] = field(default_factory=dict)
    task: Task = field(default_factory=Task)
    statistics: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for group, (length, channels) in self.groups.items():
            if group == FEATURES or group.endswith(COUNT_SUFFIX):
                raise ConfigError(
                    f"jagged group name {group!r} clashes with the input names the worker feeds "
                    f"({FEATURES!r}, '<group>{COUNT_SUFFIX}'); rename the group"
                )
            if length < 1 or not channels:
                raise ConfigError(
                    f"jagged group {group!r} has length {length} and {len(channels)} channels; "
                    "both must be at least 1"
                )

    @classmethod
    def from_manifest(cls, manifest: Manifest) -> InputSpec:
        """The inputs a converted dataset offers and its task, from its manifest."""
        groups = {g["name"]: (int(g["length"]), tuple(g["branches"])) for g in manifest.jagged}
        task = Task.from_dict(getattr(manifest, "task", None))  # older manifests: binary
        statistics = group_statistics(getattr(manifest, "stats", {}), groups)
        return cls(
            tuple(manifest.features), groups, image_shapes(manifest.images), task, statistics
        )

    def tensors(self) -> dict[str, InputTensor]:
        """Every input this dataset can feed, by Keras input name."""
        offered: dict[str, InputTensor] = {}
        if self.features:
            offered[FEATURES] = InputTensor(FEATURES, (len(self.features),), "float32")
        for group, (length, channels) in self.groups.items():
            offered[group] = InputTensor(group, (length, len(channels)), "float32")
            count = group + COUNT_SUFFIX
            offered[count] = InputTensor(count, (), "int32")
        for image, shape in self.images.items():
            offered[image] = InputTensor(image, shape, "float32")
        return offered

    def describe(self) -> str:
        """One line listing what is offered, for error messages."""
        tensors = self.tensors()
        return ", ".join(t.describe() for t in tensors.values()) if tensors else "nothing"


def image_shapes(images: list[dict[str, Any]]) -> dict[str, tuple[int, ...]]:
    """Image name -> shape per event, from a manifest's ``images`` entries."""
    return {image["name"]: tuple(int(n) for n in image["shape"]) for image in images}


def group_statistics(
    stats: dict[str, Any], groups: dict[str, Any]
) -> dict[str, tuple[tuple[float, ...], tuple[float, ...]]]:
    """Per jagged group its channels' (means, standard deviations) from a manifest's ``stats``
    (a group without statistics is left out: its values are taken as they come)."""
    return {
        name: (
            tuple(float(v) for v in stats[name]["mean"]),
            tuple(float(v) for v in stats[name]["std"]),
        )
        for name in groups
        if name in stats
    }
