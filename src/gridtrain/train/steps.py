"""Training steps run a window at a time: one compiled call for the steps between exchanges.

Layer: train, framework edge (imports the backend's framework lazily). ``train_on_batch`` costs a
Python round trip per step (argument conversion, metric reset, a function call, results back to
numpy); with a jet-tagging-sized model that overhead, not the device, sets the pace. ``WindowSteps``
runs the steps of a window in one call and returns every step's loss, a function per Keras
backend (as Keras' own ``backend/*/trainer.py`` split ``fit``):

- TensorFlow: a ``tf.function`` graph loop over the window's batches, as Keras'
  ``steps_per_execution`` does; each step the model's own ``train_step`` (a user model's override
  included), compiled as Keras compiles it (``jit_compile`` as the model has it).
- JAX: the model's stateless ``train_step`` under one ``jax.jit`` with a ``lax.scan`` over the
  window (a window of 7 steps as scans of 4, 2 and 1: each length is compiled once), the state
  (trainable, non-trainable, optimizer and metric variables) carried through and written back to
  the model's variables once, at the end.
- PyTorch: the eager loop of Keras' own train function (``torch.compile`` when the model asks
  for it), the window's arrays moved to the device once, the losses read back once.

Every step starts from freshly reset metrics as ``train_on_batch`` does, so "loss" is that step's
loss: the same operations in the same order, and the weights and losses are those of a
``train_on_batch`` loop (bit for bit on the CPU, on each backend; tested). The first step of a
model runs through ``train_on_batch`` to build the optimizer and metric variables, which a
compiled loop may not create; a window of one step, or one with a short last batch, runs per
batch.
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
        import keras

        backend = keras.backend.backend()
        compile_window = {
            "tensorflow": _tensorflow_window,
            "jax": _jax_window,
            "torch": _torch_window,
        }
        return compile_window[backend](self.model)


def _tensorflow_window(model: Any) -> Any:
    import tensorflow as tf

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


def _jax_window(model: Any) -> Any:
    import jax

    def scan(state: Any, reset: Any, inputs: Any, labels: Any, weights: Any) -> Any:
        def one_step(state: Any, batch: Any) -> Any:
            trainable, non_trainable, optimizer, _ = state
            logs, state = model.train_step((trainable, non_trainable, optimizer, reset), batch)
            return state, logs["loss"].astype("float32")

        return jax.lax.scan(one_step, (*state, reset), (inputs, labels, weights))

    # the old state's buffers hold the new one; ``reset`` (the metric variables as
    # reset_metrics leaves them: each step starts from them) is not given up
    compiled = jax.jit(scan, donate_argnums=0)
    groups = (
        model.trainable_variables,
        model.non_trainable_variables,
        model.optimizer.variables,
        model.metrics_variables,
    )

    def window(inputs: Any, labels: Any, weights: Any) -> Any:
        model.reset_metrics()
        reset = [variable.value for variable in model.metrics_variables]
        state: Any = tuple([variable.value for variable in group] for group in groups[:3])
        losses, start = [], 0
        for size in _powers_of_two(int(labels.shape[0])):
            chunk = _rows(jax, (inputs, labels, weights), slice(start, start + size))
            (*state, last), chunk_losses = compiled(state, reset, *chunk)
            state = tuple(state)
            losses.append(np.asarray(chunk_losses))
            start += size
        for group, values in zip(groups, (*state, last), strict=True):
            for variable, value in zip(group, values, strict=True):
                variable.assign(value)
        return np.concatenate(losses)

    return window


def _rows(jax: Any, arrays: Any, part: slice) -> Any:
    return jax.tree_util.tree_map(lambda array: array[part], arrays)


def _powers_of_two(steps: int) -> list[int]:
    """``steps`` as a sum of powers of two, largest first (7 -> [4, 2, 1]). A jitted scan is
    compiled once per length, and a window's length is whatever is left to the next exchange
    (1 to ``every``): in these pieces a worker compiles at most log2(every) + 1 of them."""
    return [1 << bit for bit in reversed(range(steps.bit_length())) if steps >> bit & 1]


def _torch_window(model: Any) -> Any:
    import keras

    model.make_train_function()  # Keras' own step: train_step, or torch.compile of it

    def window(inputs: Any, labels: Any, weights: Any) -> Any:
        on_device = keras.tree.map_structure(keras.ops.convert_to_tensor, (inputs, labels, weights))
        inputs, labels, weights = on_device
        losses = []
        for i in range(int(labels.shape[0])):
            x = keras.tree.map_structure(lambda t: t[i], inputs)  # noqa: B023 - used at once
            model.reset_metrics()  # as train_on_batch does: "loss" is this step's loss
            logs = model.train_function([(x, labels[i], weights[i])])
            losses.append(keras.ops.cast(logs["loss"], "float32"))
        return keras.ops.convert_to_numpy(keras.ops.stack(losses))

    return window
