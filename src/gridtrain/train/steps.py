"""Training steps run a window at a time: one compiled call for the steps between exchanges.

Layer: train, framework edge (imports TensorFlow lazily). ``train_on_batch`` costs a Python round
trip per step (argument conversion, metric reset, a function call, results back to numpy); with a
jet-tagging-sized model that overhead, not the device, sets the pace. ``WindowSteps`` runs the
steps of a window inside one ``tf.function`` (a graph loop over the window's batches, as Keras'
``steps_per_execution`` does) and returns every step's loss.

Each step is the model's own ``train_step`` (a user model's override included), compiled the way
Keras compiles it (``jit_compile`` as the model has it), after the metrics are reset as
``train_on_batch`` resets them: the same operations in the same order, so the weights and losses
are those of a ``train_on_batch`` loop (bit for bit on the CPU; tested). The first step of a
model runs through ``train_on_batch`` to build the optimizer and metric variables, which a graph
loop may not create; a window of one step, or one with a short last batch, runs per batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np


def windows(
    inputs: Mapping[str, np.ndarray],
    labels: np.ndarray,
    weights: np.ndarray,
    batch_size: int,
    sizes: Iterator[int],
) -> Iterator[tuple[int, dict[str, np.ndarray], np.ndarray, np.ndarray]]:
    """Consecutive windows of batches: ``(steps, inputs, labels, weights)`` stacked per step.

    ``sizes`` says how many steps the next window may hold (the steps left to the next exchange);
    a window never mixes full batches with the shard's short last one. The stacked arrays are
    views of the shard's arrays, shaped ``(steps, batch_size, ...)``; the short last batch comes
    alone as ``steps == 1`` with its own length.
    """
    events = labels.shape[0]
    full = events // batch_size
    start_batch = 0
    while start_batch * batch_size < events:
        wanted = next(sizes)
        steps = min(wanted, full - start_batch)
        if steps <= 0:  # only the short last batch is left
            start = start_batch * batch_size
            yield (
                1,
                {name: array[None, start:] for name, array in inputs.items()},
                labels[None, start:],
                weights[None, start:],
            )
            return
        start, stop = start_batch * batch_size, (start_batch + steps) * batch_size

        def stack(array: np.ndarray, start: int = start, stop: int = stop) -> np.ndarray:
            return array[start:stop].reshape((-1, batch_size, *array.shape[1:]))

        yield (
            steps,
            {name: stack(array) for name, array in inputs.items()},
            stack(labels),
            stack(weights),
        )
        start_batch += steps


class WindowSteps:
    """Runs windows of training steps on ``model`` in one compiled call each."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self._function: Any = None
        self._built = False

    def train(
        self, inputs: Mapping[str, np.ndarray], labels: np.ndarray, weights: np.ndarray
    ) -> np.ndarray:
        """Train on a window stacked as ``(steps, batch, ...)``; returns the steps' losses."""
        steps = labels.shape[0]
        if steps == 1 or not self._built:
            losses = [self._one(inputs, labels, weights, 0)]
            self._built = True
            if steps == 1:
                return np.asarray(losses, dtype=np.float64)
            rest = slice(1, None)
            inputs = {name: array[rest] for name, array in inputs.items()}
            labels, weights = labels[rest], weights[rest]
            return np.asarray([*losses, *self.train(inputs, labels, weights)])
        from gridtrain.models import arrange_inputs

        if self._function is None:
            self._function = self._compile()
        arranged = arrange_inputs(self.model, inputs)
        return np.asarray(self._function(arranged, labels, weights), dtype=np.float64)

    def _one(
        self, inputs: Mapping[str, np.ndarray], labels: np.ndarray, weights: np.ndarray, i: int
    ) -> float:
        from gridtrain.models import arrange_inputs

        batch = {name: array[i] for name, array in inputs.items()}
        result = self.model.train_on_batch(
            arrange_inputs(self.model, batch), labels[i], sample_weight=weights[i]
        )
        return float(result[0] if isinstance(result, list) else result)

    def _compile(self) -> Any:
        import tensorflow as tf

        model = self.model

        @tf.autograph.experimental.do_not_convert  # type: ignore[untyped-decorator]
        def one_step(data: Any) -> Any:
            model.reset_metrics()  # as train_on_batch does: "loss" is this step's loss
            return model.train_step(data)["loss"]

        step = tf.function(one_step, reduce_retracing=True, jit_compile=model.jit_compile)

        @tf.function(reduce_retracing=True)  # type: ignore[untyped-decorator]
        def window(inputs: Any, labels: Any, weights: Any) -> Any:
            steps = tf.shape(labels)[0]
            losses = tf.TensorArray(tf.float32, size=steps)
            for i in tf.range(steps):
                x = tf.nest.map_structure(lambda t: t[i], inputs)  # noqa: B023 - used at once
                loss = step((x, labels[i], weights[i]))
                losses = losses.write(i, tf.cast(loss, tf.float32))
            return losses.stack()

        return window
