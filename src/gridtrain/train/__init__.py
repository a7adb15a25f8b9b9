"""Training: the Keras worker, the driver that runs a training, executors and run outputs.

Layer: train, above ``ps`` (parameter server and shard leases), ``data`` (shards and manifest)
and ``stage`` (shard copies). Modules: ``settings`` (the config's train section, checked against
the manifest), ``data`` (model inputs from shards), ``worker`` (``gridtrain worker``),
``executor`` (where workers run), ``driver`` (``gridtrain train``), ``finalize`` (model, metrics
and plots of a finished run), ``cli``.
"""

# The XRootD client must be loaded before TensorFlow (after it, the process crashes), and so must
# the HTCondor bindings (after it, they no longer find the local schedd); gridtrain.stage and
# gridtrain.condor.submit load them on import, so the training code, which always loads
# TensorFlow, imports both first.
import gridtrain.condor.submit
import gridtrain.stage  # noqa: F401
