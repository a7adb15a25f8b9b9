"""Training: the Keras worker, the driver that runs a training, executors and run outputs.

Layer: train, above ``ps`` (parameter server and shard leases), ``data`` (shards and manifest)
and ``stage`` (shard copies). Modules: ``settings`` (the config's train section, checked against
the manifest), ``data`` (model inputs from shards), ``worker`` (``gridtrain worker``),
``executor`` (where workers run), ``driver`` (``gridtrain train``), ``finalize`` (model, metrics
and plots of a finished run), ``cli``.
"""

# The XRootD client library (PyPI xrootd 6.x) crashes with SIGSEGV when it is loaded after
# TensorFlow (2.21); loaded first, both work. Staging imports it lazily, so the training code,
# which always loads TensorFlow, loads it here, before anything else can import TensorFlow.
import XRootD.client  # noqa: F401
