"""The export formats, each written and then loaded back the way its users load it.

Layer: export, files and runtimes. ``onnx``: the frozen graph below converted by tf2onnx, scored
with ONNX Runtime, what CMSSW's ``PhysicsTools/ONNXRuntime`` and Athena load. ``saved_model``:
TensorFlow's SavedModel (SONIC/Triton, Python). ``frozen``: a frozen GraphDef (``model.pb``),
variables folded into constants, run in a TensorFlow 1 session as ``tensorflow::loadGraphDef``
and ``tensorflow::run`` do in CMSSW's ``PhysicsTools/TensorFlow``.

Every writer takes the raw-input Keras model of ``graph.raw_input_model`` and a path; every loader
returns ``score(inputs: dict[str, ndarray]) -> ndarray`` plus the names C++ code needs.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gridtrain.errors import ExportError
from gridtrain.export.graph import OUTPUT, ExportInput

log = logging.getLogger(__name__)

Scorer = Callable[[dict[str, np.ndarray]], np.ndarray]
FILE_NAMES = {"onnx": "model.onnx", "saved_model": "saved_model", "frozen": "model.pb"}


@dataclass
class Written:
    """One written format: its file (or folder) and the tensor names a C++ user feeds."""

    format: str
    path: Path
    inputs: dict[str, str] = field(default_factory=dict)  # input name -> tensor or node name
    outputs: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """tf2onnx and TensorFlow print, warn and log while they trace; none of it concerns the
    user (an error still raises)."""
    loggers = [logging.getLogger(name) for name in ("tensorflow", "tf2onnx")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def _signature(inputs: list[ExportInput]) -> list[Any]:
    """The exported function's one argument: a dict of the raw inputs, by name."""
    import tensorflow as tf

    return [{i.name: tf.TensorSpec(i.shape, i.dtype, name=i.name) for i in inputs}]


def write(kind: str, model: Any, inputs: list[ExportInput], folder: Path) -> Written:
    """Write ``model`` in format ``kind`` into ``folder``."""
    path = folder / FILE_NAMES[kind]
    if _on_torch(model):  # a wrapped torch.nn.Module: ONNX through torch.onnx, nothing else
        if kind != "onnx":
            raise ExportError(
                f"{kind} is written by TensorFlow, on which a model that wraps a torch.nn.Module "
                "cannot run; export it with --format onnx"
            )
        from gridtrain.export.torch_onnx import write_onnx

        write_onnx(model, inputs, path)
        return Written(kind, path, {i.name: i.name for i in inputs}, {OUTPUT: OUTPUT})
    if kind == "onnx":
        return _write_onnx(model, inputs, path)
    if kind == "saved_model":
        with _quiet():
            model.export(str(path), format="tf_saved_model", verbose=False)
        names = {i.name: i.name for i in inputs}
        return Written(kind, path, names, {OUTPUT: OUTPUT})
    return _write_frozen(model, inputs, path)


def _on_torch(model: Any) -> bool:
    from gridtrain.export.torch_onnx import holds_torch_module

    return holds_torch_module(model)


def _frozen(model: Any, inputs: list[ExportInput]) -> Any:
    """The model as one TensorFlow graph with every variable and captured tensor a constant.

    Both the frozen GraphDef and the ONNX file are written from this graph. A functional model
    can hold tensors made when it was built (a mask from ``keras.ops.arange(length)``); traced,
    they are captured inputs of the function, which tf2onnx's ``from_function`` turns into
    inputs of the ONNX graph that no user feeds ("Required inputs ([...Less/x:0]) are missing
    from input feed"). Folded here, only the model's own inputs remain.
    """
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    @tf.function(input_signature=_signature(inputs))  # type: ignore[untyped-decorator]
    def serve(tensors: dict[str, Any]) -> Any:
        return tf.identity(model(tensors, training=False), name=OUTPUT)

    with _quiet():
        frozen = convert_variables_to_constants_v2(serve.get_concrete_function())
    names = {tensor.name.split(":")[0]: tensor.name for tensor in frozen.inputs}
    extra = sorted(set(names) - {i.name for i in inputs})
    if extra:  # a tensor the graph reads and cannot fold: name its op, the way out
        raise ExportError(
            f"the traced graph reads tensor(s) {', '.join(extra)} besides the model's inputs "
            "(a value computed outside the layers when the model was built); compute it inside "
            "a layer's call() with keras.ops, or leave this format out (--format)"
        )
    return frozen


def _write_onnx(model: Any, inputs: list[ExportInput], path: Path) -> Written:
    import onnx

    frozen = _frozen(model, inputs)
    feeds = [tensor.name for tensor in frozen.inputs]
    output = frozen.outputs[0].name
    rename = {name: name.split(":")[0] for name in feeds} | {output: OUTPUT}
    with _quiet():
        import tf2onnx
        from keras.src.export.tf2onnx_lib import patch_tf2onnx  # what model.export() runs first

        patch_tf2onnx()  # tf2onnx 1.17 still reads np.object, gone in numpy 2
        proto, _ = tf2onnx.convert.from_graph_def(
            frozen.graph.as_graph_def(),
            name="gridtrain_export",
            input_names=feeds,
            output_names=[output],
            tensors_to_rename=rename,
        )
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    names = {i.name: i.name for i in inputs}
    if {i.name for i in proto.graph.input} != set(names):
        raise ExportError(
            f"the ONNX graph's inputs are {sorted(i.name for i in proto.graph.input)}, not the "
            f"model's {sorted(names)}"
        )
    return Written("onnx", path, names, {OUTPUT: OUTPUT})


def _write_frozen(model: Any, inputs: list[ExportInput], path: Path) -> Written:
    frozen = _frozen(model, inputs)
    path.write_bytes(frozen.graph.as_graph_def().SerializeToString())
    names = {tensor.name.split(":")[0]: tensor.name for tensor in frozen.inputs}
    return Written("frozen", path, names, {OUTPUT: frozen.outputs[0].name})


def load(written: Written) -> Scorer:
    """The written model as its users run it."""
    if written.format == "onnx":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        session = onnxruntime.InferenceSession(str(written.path), options)
        return lambda feed: session.run([OUTPUT], feed)[0]
    import tensorflow as tf

    if written.format == "saved_model":
        loaded = tf.saved_model.load(str(written.path))
        serve = loaded.signatures["serving_default"]
        return lambda feed: next(iter(serve(**feed).values())).numpy()
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(written.path.read_bytes())
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    session = tf.compat.v1.Session(graph=graph)
    output = written.outputs[OUTPUT]
    return lambda feed: session.run(output, {written.inputs[k]: v for k, v in feed.items()})
