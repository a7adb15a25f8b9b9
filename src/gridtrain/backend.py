"""Which Keras backend a process trains with (``train.backend``), set before Keras is imported.

Layer: foundation; imports no framework. Keras reads ``KERAS_BACKEND`` once, when it is first
imported, so a process that trains a run must choose its backend before anything imports Keras:
the driver as it reads the config or the run's worker spec, each worker as it reads its spec, and
whoever starts a process for a run (the local executor, the pool's job environment, a prewarmed
worker) passes ``backend_environment``. A process that already holds Keras on another backend is
refused rather than switched, since models built before a switch stop working.
"""

from __future__ import annotations

import os
import sys
import warnings

from gridtrain.errors import ConfigError

BACKENDS = ("tensorflow", "jax", "torch")
DEFAULT_BACKEND = "tensorflow"
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")

# The module each backend imports (what `gridtrain doctor` checks a site's image for) and the
# extra that installs its CPU build here.
BACKEND_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
BACKEND_EXTRAS = {"tensorflow": "cpu", "jax": "jax", "torch": "torch"}


def check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise ConfigError(f"train.backend: {name!r} is not one of {', '.join(BACKENDS)}")
    return name


def backend_environment(name: str) -> dict[str, str]:
    """The environment variables that make a new process's Keras use backend ``name``."""
    return {"KERAS_BACKEND": check_backend(name)}


def requested_backend() -> str:
    """The backend this process's Keras uses or will use (``KERAS_BACKEND``, else the default)."""
    return os.environ.get("KERAS_BACKEND") or DEFAULT_BACKEND


def loaded_backend() -> str | None:
    """The backend of the Keras this process has imported; None before Keras is imported."""
    keras = sys.modules.get("keras")
    if keras is None:
        return None
    return str(keras.backend.backend())


def use_backend(name: str) -> None:
    """Make this process's Keras use backend ``name``: before Keras is imported, set
    ``KERAS_BACKEND``; after, accept only the backend it was imported with."""
    check_backend(name)
    loaded = loaded_backend()
    if loaded is None:
        os.environ["KERAS_BACKEND"] = name
        if name == "jax":
            # JAX takes 75% of a GPU's memory at its first use: the driver (which builds the
            # model) and the workers sharing that GPU would not fit. Memory as needed instead.
            os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        if name == "torch":
            # XRootD's exit hook looks at every live object; one of torch's deprecated aliases
            # warns when looked at, on every exit of a process that imported both
            warnings.filterwarnings(
                "ignore", message=".*torch.distributed.reduce_op", category=FutureWarning
            )
        return
    if loaded != name:
        raise ConfigError(
            f"train.backend: {name}, but this process imported Keras on {loaded} already; a "
            f"backend is chosen before Keras is imported: run `gridtrain train` (a new process) "
            f"or set KERAS_BACKEND={name} before importing keras"
        )
