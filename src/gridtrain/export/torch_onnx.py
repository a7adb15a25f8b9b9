"""Exporting from the backend a model needs: ONNX through PyTorch for a wrapped torch.nn.Module.

Layer: export, framework edge. A run's ``model.keras`` is backend-independent when the model is
made of Keras layers: the exporters load it on TensorFlow (SavedModel, the frozen graph, and ONNX
converted from that graph by tf2onnx), whatever backend trained it. A model that wraps a
``torch.nn.Module`` (``keras.layers.TorchModuleWrapper``) runs on PyTorch only: it is rebuilt from
the run's model function and given the saved weights (``model.keras`` holds the module pickled by
a module name that only the training process had), and written to ONNX by ``torch.onnx``. The
ONNX file takes the same inputs, by the same names, with the same output, so the verification
and ``export.json`` are the same for both.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
import zipfile
from pathlib import Path
from typing import Any

from gridtrain.export.graph import OUTPUT, ExportInput

TORCH_ONLY = "TorchModuleWrapper"  # the Keras layer that runs on PyTorch only


def export_backend(model_file: Path) -> str:
    """The backend to export ``model_file`` (a ``.keras`` file) on: torch for a model holding a
    wrapped torch.nn.Module, else tensorflow. Read from the file's config; nothing is loaded."""
    try:
        with zipfile.ZipFile(model_file) as archive:
            config = json.loads(archive.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return "tensorflow"  # no model.keras (an unfinished run): its replica says, below
    return "torch" if TORCH_ONLY in json.dumps(config) else "tensorflow"


def holds_torch_module(model: Any) -> bool:
    """Whether ``model`` (built) has a layer that runs on PyTorch only."""
    stack = list(model.layers)
    while stack:
        layer = stack.pop()
        if type(layer).__name__ == TORCH_ONLY:
            return True
        stack.extend(getattr(layer, "layers", []))
    return False


def write_onnx(model: Any, inputs: list[ExportInput], path: Path) -> None:
    """``model`` (on the torch backend, taking a dict of ``inputs``) as an ONNX file whose inputs
    are named as ``inputs`` and whose one output is ``OUTPUT``, the batch axis left free."""
    import numpy as np
    import torch

    class ByName(torch.nn.Module):  # torch.onnx feeds positional tensors; the model takes a dict
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *tensors: Any) -> Any:
            named = dict(zip((i.name for i in inputs), tensors, strict=True))
            return self.model(named, training=False)

    example = tuple(
        torch.as_tensor(np.zeros((2, *i.shape[1:]), dtype=i.dtype)) for i in inputs
    )  # the batch axis is dynamic below; 2 keeps the tracer from treating it as a constant 1
    names = [i.name for i in inputs]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")  # the tracer's notes on Python ints and the exporter's
        torch.onnx.export(
            ByName().eval(),
            example,
            str(path),
            input_names=names,
            output_names=[OUTPUT],
            dynamic_axes={name: {0: "batch"} for name in [*names, OUTPUT]},
            dynamo=False,  # the TorchScript exporter: the torch.export one needs onnxscript
        )
