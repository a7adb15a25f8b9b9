"""Export a trained model for inference in experiment software: ONNX, SavedModel, frozen graph.

Layer: export, above train. ``graph`` folds the manifest's standardisation into the model,
``formats`` writes and loads each format, ``run`` verifies every format against the Keras model
on the validation events before anything is renamed into place, ``cli`` is ``gridtrain export``.
"""

FORMATS = ("onnx", "saved_model", "frozen")  # here, so that the CLI imports no framework
