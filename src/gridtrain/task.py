"""The learning task: what a dataset is converted for and what a model must predict.

Layer: foundation, pure records. Conversion writes the task into the manifest (with the regression
targets' statistics), training and the report read it from there, and a model's output is checked
against it before any process starts. No numpy, TensorFlow or Keras here.

Three kinds (the config's ``task.kind``):

==============  ===================  ==========  ==========================  =================
kind            label / target       output      loss                        metrics
==============  ===================  ==========  ==========================  =================
``binary``      label 0 or 1         1, sigmoid  binary cross-entropy        ROC AUC
``multiclass``  label 0 .. K-1       K, softmax  categorical cross-entropy   one-vs-rest AUCs
``regression``  T float targets      T, linear   ``mse``, ``mae``, ``huber`` response, resolution
==============  ===================  ==========  ==========================  =================

Regression targets are standardised with the training split's mean and standard deviation
(``Target.mean``/``Target.std``): the model learns ``(y - mean) / std`` and ``Task.unstandardise``
is what turns its outputs back into physical units.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from gridtrain.errors import ConfigError

KINDS = ("binary", "multiclass", "regression")
REGRESSION_LOSSES = ("mse", "mae", "huber")
BINARY_CLASSES = ("background", "signal")


@dataclass(frozen=True)
class Target:
    """One regression target: a branch or an expression of branches, and its statistics."""

    name: str
    expression: str
    mean: float = 0.0
    std: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "expression": self.expression,
            "mean": self.mean,
            "std": self.std,
        }


@dataclass(frozen=True)
class Task:
    """The task of one dataset and its trainings.

    ``classes`` names the labels in order (label ``i`` is ``classes[i]``); for ``binary`` it is
    ``("background", "signal")`` unless the config names them. ``balance`` (classifiers) weights
    each class to the same sum of weights in training.
    """

    kind: str = "binary"
    classes: tuple[str, ...] = BINARY_CLASSES
    targets: tuple[Target, ...] = ()
    loss: str | None = None
    balance: bool = False
    huber_delta: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"task.kind is {self.kind!r}; choose one of {', '.join(KINDS)}")
        if self.kind == "regression":
            object.__setattr__(self, "classes", ())  # a regression has no classes
            if not self.targets:
                raise ConfigError(
                    "task.kind is regression but task.targets is empty; name at least one, "
                    "e.g. targets: [{name: response, expression: genJet_pt / Jet_pt}]"
                )
            if self.loss not in REGRESSION_LOSSES:
                raise ConfigError(
                    f"task.loss is {self.loss!r}; a regression takes one of "
                    f"{', '.join(REGRESSION_LOSSES)}"
                )
            if self.balance:
                raise ConfigError("task.balance is for classifiers; remove it for a regression")
            names = [t.name for t in self.targets]
            if len(set(names)) != len(names):
                raise ConfigError(f"task.targets repeat a name: {names}; give each its own")
            for t in self.targets:
                if not t.std > 0:
                    raise ConfigError(
                        f"target {t.name!r} has standard deviation {t.std}; a constant target "
                        "cannot be learned (check its expression)"
                    )
            return
        if self.targets:
            raise ConfigError(f"task.targets are for regression; task.kind is {self.kind!r}")
        if self.loss is not None:
            raise ConfigError(
                f"task.loss is for regression; a {self.kind} classifier uses cross-entropy"
            )
        if len(set(self.classes)) != len(self.classes):
            raise ConfigError(f"task.classes repeat a name: {list(self.classes)}")
        if self.kind == "binary" and len(self.classes) != 2:
            raise ConfigError(
                f"a binary task has 2 classes, not {len(self.classes)} ({list(self.classes)}); "
                "use task.kind: multiclass"
            )
        if self.kind == "multiclass" and len(self.classes) < 3:
            raise ConfigError(
                f"task.classes names {len(self.classes)} classes; a multiclass task needs at "
                "least 3 (two classes: task.kind: binary)"
            )

    # -- what a model must produce ------------------------------------------------------------

    @property
    def is_classifier(self) -> bool:
        return self.kind != "regression"

    @property
    def output_units(self) -> int:
        if self.kind == "binary":
            return 1
        if self.kind == "multiclass":
            return len(self.classes)
        return len(self.targets)

    @property
    def output_activation(self) -> str:
        return {"binary": "sigmoid", "multiclass": "softmax", "regression": "linear"}[self.kind]

    @property
    def loss_name(self) -> str:
        """The Keras loss identifier the built-in compile uses."""
        if self.kind == "binary":
            return "binary_crossentropy"
        if self.kind == "multiclass":
            return "categorical_crossentropy"
        assert self.loss is not None
        return self.loss

    def describe(self) -> str:
        """One phrase for messages: ``multiclass (top, W, QCD)``."""
        if self.kind == "regression":
            return f"regression of {', '.join(t.name for t in self.targets)}"
        return f"{self.kind} ({', '.join(self.classes)})"

    def unstandardise(self, index: int, value: Any) -> Any:
        """Target ``index`` in physical units from the model's standardised output ``value``."""
        t = self.targets[index]
        return value * t.std + t.mean

    def with_statistics(self, means: Sequence[float], stds: Sequence[float]) -> Task:
        """The same task with the targets' training-split statistics filled in."""
        if len(means) != len(self.targets) or len(stds) != len(self.targets):
            raise ValueError(f"{len(self.targets)} targets, {len(means)} means, {len(stds)} stds")
        targets = tuple(
            replace(t, mean=float(m), std=float(s))
            for t, m, s in zip(self.targets, means, stds, strict=True)
        )
        return replace(self, targets=targets)

    # -- records ------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``task`` record (JSON types only)."""
        record: dict[str, Any] = {"kind": self.kind}
        if self.is_classifier:
            record["classes"] = list(self.classes)
            record["balance"] = self.balance
        else:
            record["targets"] = [t.to_dict() for t in self.targets]
            record["loss"] = self.loss
            if self.loss == "huber":
                record["huber_delta"] = self.huber_delta
        return record

    @classmethod
    def from_dict(cls, record: Mapping[str, Any] | None) -> Task:
        """A task from a manifest record or the config's ``task`` section.

        ``None`` or an empty section is the binary task (manifests and configs written before
        tasks existed). Targets from a config carry no statistics yet (0 and 1).
        """
        if not record:
            return cls()
        kind = str(record.get("kind", "binary"))
        targets = tuple(
            Target(
                name=str(t["name"]),
                expression=str(t.get("expression", t["name"])),
                mean=float(t.get("mean", 0.0)),
                std=float(t.get("std", 1.0)),
            )
            for t in record.get("targets", ()) or ()
        )
        default_classes = BINARY_CLASSES if kind == "binary" else ()
        loss = record.get("loss")
        if kind == "regression" and loss is None:
            loss = "mse"
        return cls(
            kind=kind,
            classes=tuple(str(c) for c in record.get("classes") or default_classes),
            targets=targets,
            loss=loss,
            balance=bool(record.get("balance", False)),
            huber_delta=float(record.get("huber_delta", 1.0)),
        )
