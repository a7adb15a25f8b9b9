"""A user model whose padding mask is built with ``keras.ops.arange`` in the functional graph, as
a physicist writes it (issue 29): the slot numbers are a tensor made when the model is built, not
a layer's output. Named in a config as ``tests/export/arange_mask.py:arange_mask``."""

import keras


def arange_mask(inputs, width=16):
    length, channels = inputs.groups["constituents"]
    entries = keras.Input(shape=(length, len(channels)), name="constituents")
    count = keras.Input(shape=(), dtype="int32", name="constituents_count")
    slots = keras.ops.expand_dims(keras.ops.arange(length), 0)  # (1, length)
    real = keras.ops.less(slots, keras.ops.expand_dims(count, -1))  # (batch, length)
    mask = keras.ops.expand_dims(keras.ops.cast(real, "float32"), -1)
    embedded = keras.layers.Dense(width, activation="relu", name="embed")(entries) * mask
    pooled = keras.ops.sum(embedded, axis=1)
    task = inputs.task
    output = keras.layers.Dense(task.output_units, activation=task.output_activation)(pooled)
    model = keras.Model({"constituents": entries, "constituents_count": count}, output)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=task.loss_name)
    return model
