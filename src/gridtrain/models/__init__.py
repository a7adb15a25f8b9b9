"""The model zoo: built-in Keras models by name, or a user's function returning one.

Layer: models. ``build_model(name, params, inputs, learning_rate=...)`` returns a compiled model
whose head fits the dataset's task (``inputs.task``: binary, multiclass or regression) and whose
inputs are named after what the worker feeds (see ``spec``); it knows nothing of
shards, workers or the parameter server. Importing this package does not import Keras or
TensorFlow: the builders do, when called.
"""

from gridtrain.models.build import (
    arrange_inputs,
    build_model,
    check_inputs,
    check_model_params,
    load_model,
    model_input_names,
    save_model,
)
from gridtrain.models.params import Param
from gridtrain.models.spec import COUNT_SUFFIX, FEATURES, InputSpec, InputTensor
from gridtrain.models.user import absolute_model_name
from gridtrain.models.zoo import MODELS, Builder, resolve_params

__all__ = [
    "COUNT_SUFFIX",
    "FEATURES",
    "MODELS",
    "Builder",
    "InputSpec",
    "InputTensor",
    "Param",
    "absolute_model_name",
    "arrange_inputs",
    "build_model",
    "check_inputs",
    "check_model_params",
    "load_model",
    "model_input_names",
    "resolve_params",
    "save_model",
]
