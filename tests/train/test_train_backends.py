"""train.backend and train.precision: each Keras backend in a process of its own, as a run has it.

The compiled window must train bit for bit like a ``train_on_batch`` loop on every backend (on the
CPU), and every dtype policy must keep float32 variables (what the worker pushes) while its layers
compute in 16 bits. Keras picks its backend once per process, so each backend's checks run in a
subprocess (tests/train/backend_check.py) with ``KERAS_BACKEND`` set.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gridtrain.backend import BACKENDS, backend_environment, requested_backend, use_backend
from gridtrain.errors import ConfigError

HERE = Path(__file__).parent


@pytest.fixture(scope="module", params=BACKENDS)
def checked(request: pytest.FixtureRequest) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(HERE / "backend_check.py")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, **backend_environment(request.param), "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    assert result["backend"] == request.param
    return result


@pytest.mark.slow
def test_saving_a_model_imports_no_tensorflow_on_another_backend(checked: dict[str, Any]) -> None:
    saved = checked["saved"]
    assert saved["same"]
    if checked["backend"] != "tensorflow":  # a JAX or PyTorch run's driver saves its model
        assert saved == {"tensorflow_before": False, "tensorflow_after": False, "same": True}


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mlp", "deepsets"])
def test_compiled_window_trains_bit_for_bit_like_train_on_batch(
    checked: dict[str, Any], model: str
) -> None:
    result = checked[model]
    assert result["losses"] == result["expected"]  # 9 full batches and the short last one
    assert len(result["losses"]) == 10
    assert result["weights_max_difference"] == 0.0


@pytest.mark.slow
@pytest.mark.parametrize(
    ("precision", "computes_in", "optimizer"),
    [
        ("float32", "float32", "Adam"),
        ("mixed_bfloat16", "bfloat16", "Adam"),
        ("mixed_float16", "float16", "LossScaleOptimizer"),  # loss scaling for float16
    ],
)
def test_precision_computes_in_16_bits_and_keeps_float32_weights(
    checked: dict[str, Any], precision: str, computes_in: str, optimizer: str
) -> None:
    result = checked[precision]
    assert computes_in in result["compute_dtypes"]
    assert result["weight_dtypes"] == ["float32"]  # the parameter server's master weights
    assert result["optimizer"] == optimizer
    assert result["losses_finite"]
    assert result["moved"]
    assert result["output_dtype"] == "float32"  # the head stays float32: no rounded scores
    assert result["global_policy_after"] == "float32"  # the process's own policy put back


def test_use_backend_sets_the_variable_before_keras_and_refuses_a_switch_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import keras

    loaded = keras.backend.backend()
    use_backend(loaded)  # the one Keras was imported with: fine
    other = next(name for name in BACKENDS if name != loaded)
    with pytest.raises(ConfigError, match=f"train.backend: {other}, but this process imported"):
        use_backend(other)
    with pytest.raises(ConfigError, match="'theano' is not one of tensorflow, jax, torch"):
        use_backend("theano")
    monkeypatch.delitem(sys.modules, "keras")  # as in a process that has not imported it yet
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    assert requested_backend() == "tensorflow"
    use_backend(other)
    assert os.environ["KERAS_BACKEND"] == other == requested_backend()


def test_pool_jobs_and_local_workers_carry_the_backend(tmp_path: Path) -> None:
    from gridtrain.condor.render import WorkerJobs, _environment
    from gridtrain.condor.site import SiteProfile
    from gridtrain.train.local_executor import LocalExecutor

    jobs = WorkerJobs(
        tmp_path, "127.0.0.1:1", 1, tmp_path / "w.json", tmp_path / "s", backend="jax"
    )
    assert "KERAS_BACKEND=jax" in _environment(jobs, SiteProfile("test"))
    assert LocalExecutor(2)._environment(0, 1, "torch")["KERAS_BACKEND"] == "torch"


def test_a_prewarmed_worker_is_handed_only_a_run_of_its_own_backend(tmp_path: Path) -> None:
    from gridtrain.train.executor import Launch, Slot
    from gridtrain.train.local_executor import LocalExecutor

    executor = LocalExecutor(2)
    executor.prewarm(1, "r", "jax")  # imports JAX before it knows the run
    try:
        [(threads, process)] = executor._waiting.values()
        environ = Path(f"/proc/{process.pid}/environ").read_bytes().split(b"\0")
        assert b"KERAS_BACKEND=jax" in environ
        launch = Launch(tmp_path / "w.json", "127.0.0.1:9", tmp_path / "s", tmp_path, "r", "torch")
        assert not executor._hand_over(Slot(0, "r-w0"), threads, launch)  # a plain start instead
        assert process.poll() is None  # not told anything: it ends when discarded
    finally:
        executor.discard_prewarmed()
    assert process.poll() == -signal.SIGKILL  # killed mid-import: it held nothing yet
