"""A user model function over two jagged groups, shown in docs/how-to/training.md and run by
tests/models/test_models_user.py. Name it in a config as
``model: {name: docs/examples/two_groups.py:two_groups, params: {groups: [jets, muons]}}``."""

# --8<-- [start:two_groups]
import keras

from gridtrain.models.layers import MaskedPooling


def two_groups(inputs, groups=None, width=32):
    """Deep Sets by hand: per group a Dense embedding of each entry and a sum over the real
    entries (MaskedPooling drops the padded slots, whatever they hold); the groups' sums and the
    flat features go into one Dense layer and the task's head."""
    keras_inputs, parts = {}, []
    for group in groups or list(inputs.groups):  # default: every jagged group
        length, channels = inputs.groups[group]  # e.g. (40, ("pt", "eta", "phi"))
        entries = keras.Input(shape=(length, len(channels)), name=group)
        count = keras.Input(shape=(), dtype="int32", name=f"{group}_count")
        keras_inputs[group], keras_inputs[f"{group}_count"] = entries, count
        embedded = keras.layers.Dense(width, activation="relu", name=f"embed_{group}")(entries)
        parts.append(MaskedPooling("sum", name=f"sum_{group}")([embedded, count]))
    if inputs.features:  # the flat features' names, in the order they are fed
        keras_inputs["features"] = keras.Input(shape=(len(inputs.features),), name="features")
        parts.append(keras_inputs["features"])
    x = keras.layers.Concatenate()(parts) if len(parts) > 1 else parts[0]
    x = keras.layers.Dense(width, activation="relu")(x)
    task = inputs.task  # the head the dataset's task needs: units, activation, loss
    output = keras.layers.Dense(task.output_units, activation=task.output_activation)(x)
    model = keras.Model(keras_inputs, output)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=task.loss_name)
    return model


# --8<-- [end:two_groups]
