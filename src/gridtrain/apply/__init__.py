"""``gridtrain apply``: a trained run's scores as friend trees of the analysis's own ROOT files.

Layer: apply, above export (it scores with the run's Keras model or its ONNX export). Modules:
``engines`` (the model behind one interface: raw inputs in, scores out; the ONNX engine imports no
TensorFlow), ``outputs`` (the scores file: branch names, writing under a temporary name, the
marker that lets a finished file be verified and skipped), ``scoring`` (one input file, block by
block, read through ``gridtrain.data.events`` as conversion reads it), ``run`` (many files, local
processes, progress and the summary), ``cli``.
"""
