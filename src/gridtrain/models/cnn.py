"""A small convolutional network for one image input (``dataset.images``).

Layer: models, Keras graph pieces; ``gridtrain.models.zoo`` builds the ``cnn`` model from them
(importing this module only when that model is built). The jet-image taggers' classic form
(de Oliveira et al., arXiv:1511.05190; Komiske et al., arXiv:1612.01551): blocks of a
same-padded 2-D convolution, each followed by 2 x 2 max pooling while the image is at least
4 pixels on a side, then the feature maps flattened for the dense layers and the task's head.

An image is (H, W) (one channel, given its axis here) or (H, W, C), channels last, as
``InputSpec.images`` describes it; other ranks are refused in one line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import keras

from gridtrain.errors import ConfigError

MIN_POOLED_SIDE = 4


def cnn_body(
    model: str,
    image: Any,
    name: str,
    shape: tuple[int, ...],
    params: Mapping[str, Any],
    kernel: Callable[[], Any],
) -> Any:
    """The flattened feature maps of ``image`` (batch, *shape); ``kernel()`` an initializer."""
    if len(shape) not in (2, 3):
        raise ConfigError(
            f"model {model!r}: image {name!r} has shape {shape}; a 2-D CNN takes (H, W) or "
            "(H, W, channels) images"
        )
    x = image
    if len(shape) == 2:
        x = keras.layers.Reshape((*shape, 1), name=f"{name}_channel")(x)
    height, width = shape[0], shape[1]
    for i, filters in enumerate(params["filters"]):
        x = keras.layers.Conv2D(
            filters,
            params["kernel_size"],
            padding="same",
            activation=params["activation"],
            kernel_initializer=kernel(),
            name=f"conv_{i}",
        )(x)
        if min(height, width) >= MIN_POOLED_SIDE:
            x = keras.layers.MaxPooling2D(2, name=f"conv_{i}_pool")(x)
            height, width = height // 2, width // 2
    return keras.layers.Flatten(name="flatten")(x)
