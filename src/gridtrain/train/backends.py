"""What differs between the Keras backends in a training process: devices and precision.

Layer: train, framework edge. The one place besides ``steps.py`` (a window of steps per backend)
that imports a framework by name, a function per backend, chosen from the backend this process's
Keras runs on (``gridtrain.backend``). Model code never comes here: it is written in ``keras.ops``.
"""

from __future__ import annotations

import contextlib
import os

from gridtrain.backend import requested_backend


def configure_devices(threads: int | None, backend: str | None = None) -> str:
    """Set up the backend's devices before first use; returns a description for the log.

    One process has one device: the GPU(s) in CUDA_VISIBLE_DEVICES, taking memory as it needs
    it (workers may share a GPU), or the CPU with its thread pools sized by ``threads``.
    """
    backend = backend or requested_backend()
    return {"tensorflow": _tensorflow, "jax": _jax, "torch": _torch}[backend](threads)


def _tensorflow(threads: int | None) -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        tf.config.experimental.set_memory_growth(gpu, True)
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(min(threads, 2))
    if gpus:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "all")
        return f"TensorFlow, {len(gpus)} GPU(s) (CUDA_VISIBLE_DEVICES={visible}), memory growth on"
    return f"TensorFlow, CPU, {threads or os.cpu_count()} threads"


def _jax(threads: int | None) -> str:
    # JAX takes 75% of a GPU's memory at its first use unless told otherwise: workers sharing a
    # GPU would not fit. Growth as needed, as TensorFlow's memory growth.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if threads == 1:  # XLA's CPU client has no thread count, only one thread or Eigen's pool
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_cpu_multi_thread_eigen" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
    import jax

    gpus = [device for device in jax.devices() if device.platform == "gpu"]
    if gpus:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "all")
        return f"JAX, {len(gpus)} GPU(s) (CUDA_VISIBLE_DEVICES={visible}), memory as needed"
    return f"JAX, CPU, {threads or os.cpu_count()} threads"


def _torch(threads: int | None) -> str:
    import torch

    if threads:
        torch.set_num_threads(threads)
        # refused once set, or once parallel work ran in this process: keep what it has
        with contextlib.suppress(RuntimeError):
            torch.set_num_interop_threads(min(threads, 2))
    if torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "all")
        count = torch.cuda.device_count()
        return f"PyTorch, {count} GPU(s) (CUDA_VISIBLE_DEVICES={visible})"
    return f"PyTorch, CPU, {threads or os.cpu_count()} threads"
