"""What a built-in model's hyper-parameter is: its default and how a value is checked.

Layer: models, pure records (no Keras). The zoo (``models.zoo``) and the taggers' parameters
(``models.taggers``) both describe their parameters with ``Param``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ACTIVATIONS = ("relu", "gelu", "silu", "swish", "elu", "selu", "tanh", "sigmoid", "leaky_relu")


@dataclass(frozen=True)
class Param:
    """One hyper-parameter: its default and what a valid value is."""

    default: Any
    valid: Callable[[Any], bool]
    expected: str


def units(value: Any) -> bool:
    """A list of positive integers (layer widths)."""
    return isinstance(value, list | tuple) and all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
    )
