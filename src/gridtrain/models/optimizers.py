"""Optimizers the built-in training may compile a model with, registered with Keras.

Layer: models, Keras building blocks (``keras.optimizers`` only, any backend). Importing this
module registers them, so a saved ``.keras`` file compiled with one loads back;
``gridtrain.models.load_model`` does that import for you.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras


@keras.saving.register_keras_serializable(package="gridtrain")
class HeadAdam(keras.optimizers.Adam):  # type: ignore[misc]
    """Adam whose steps for the variables of the layers ``head_layers`` are ``head_scale`` times
    as large: one optimizer, two learning rates (a schedule scales both). Fine-tuning's
    ``train.head_learning_rate`` (``gridtrain.train.finetune``)."""

    def __init__(
        self, head_layers: Sequence[str] = (), head_scale: float = 1.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.head_layers = list(head_layers)
        self.head_scale = float(head_scale)

    def build(self, variables: list[Any]) -> None:
        super().build(variables)
        # by position: a backend may hand update_step its own variable type, without the path
        self._head_indices = {
            i for i, v in enumerate(variables) if v.path.split("/", 1)[0] in self.head_layers
        }

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        if self._get_variable_index(variable) in self._head_indices:
            learning_rate = learning_rate * self.head_scale
        super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(head_layers=self.head_layers, head_scale=self.head_scale)
        return config
