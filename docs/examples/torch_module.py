"""A PyTorch module trained as it is, shown in docs/how-to/training.md and run by
tests/train/test_train_torch_module.py. Name it in a config with the torch backend:
``train: {backend: torch, model: {name: docs/examples/torch_module.py:torch_module}}``."""

# --8<-- [start:torch_module]
import keras
import torch


class ConstituentSum(torch.nn.Module):
    """Plain PyTorch, as weaver's taggers are written: an MLP on each constituent, a sum over
    the real ones (count per jet; padded slots are multiplied away, whatever they hold), and an
    MLP on that sum and the jet features, giving logits."""

    def __init__(self, channels, features, width, outputs):
        super().__init__()
        self.phi = torch.nn.Sequential(
            torch.nn.Linear(channels, width), torch.nn.ReLU(), torch.nn.Linear(width, width)
        )
        self.rho = torch.nn.Sequential(
            torch.nn.Linear(width + features, width),
            torch.nn.ReLU(),
            torch.nn.Linear(width, outputs),
        )

    def forward(self, constituents, count, features):
        slots = torch.arange(constituents.shape[1], device=constituents.device)
        real = (slots[None, :] < count[:, None]).unsqueeze(-1)
        embedded = torch.where(real, self.phi(torch.where(real, constituents, 0.0)), 0.0)
        return self.rho(torch.cat([embedded.sum(dim=1), features], dim=1))


def torch_module(inputs, group="constituents", width=32):
    """The module wrapped as a Keras layer (keras.layers.TorchModuleWrapper: its parameters are
    the model's weights, which the parameter server exchanges), with the task's activation."""
    length, channels = inputs.groups[group]
    keras_inputs = {
        group: keras.Input(shape=(length, len(channels)), name=group),
        f"{group}_count": keras.Input(shape=(), dtype="int32", name=f"{group}_count"),
        "features": keras.Input(shape=(len(inputs.features),), name="features"),
    }
    task = inputs.task
    module = ConstituentSum(len(channels), len(inputs.features), width, task.output_units)
    wrapped = keras.layers.TorchModuleWrapper(module, output_shape=(None, task.output_units))
    logits = wrapped(*keras_inputs.values())
    output = keras.layers.Activation(task.output_activation, name="probability")(logits)
    model = keras.Model(keras_inputs, output)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=task.loss_name)
    return model


# --8<-- [end:torch_module]
