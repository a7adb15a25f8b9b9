"""A packed environment end to end on the pool: ``gridtrain pack-env``, transfer, train.

The tarball (this machine's Python, Keras on JAX and gridtrain, without what a worker never
imports) goes with each worker job; the wrapper unpacks it in the job's scratch directory and
the workers train from the interpreter there, not from the shared .venv.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pool_helpers import Pool, write_pool_training

from gridtrain.condor.pack import pack_env, read_info
from tests.waiting import wait_until

pytestmark = [pytest.mark.htcondor, pytest.mark.slow]

# Never imported by this test's workers (the JAX backend): the other backends (TensorFlow alone
# is 1.3 GB; the tarball would be 0.7 GB, 2.4 GB unpacked per job), what only the driver or the
# report needs (MLflow, ONNX, matplotlib), the docs' and the tests' tools. A worker that imported
# any of them would fail here, so the test also checks that a JAX worker needs none.
NOT_FOR_WORKERS = ["tensorflow", "tensorflow-*", "tensorboard*", "clang", "torch", "torchgen",
                   "functorch", "sympy", "mlflow", "databricks", "onnx", "onnxruntime",
                   "matplotlib", "material", "babel", "selenium", "jedi", "skhep_testdata",
                   "pulp", "*mypyc*", "mypy"]  # fmt: skip


@pytest.fixture
def sandboxes_removed(pool: Pool) -> Iterator[None]:
    """After the test, its jobs' sandboxes gone. A job removed at the run's end while its starter
    is still busy leaves the startd to delete the unpacked environment file by file: 80-200 s on
    a busy machine here, with the slots busy, and the next pool test's jobs idle meanwhile."""
    yield
    execute = pool.root / "var" / "lib" / "condor" / "execute"

    def removed() -> bool:
        for sandbox in execute.glob("dir_*"):
            shutil.rmtree(sandbox, ignore_errors=True)
        return not any(execute.glob("dir_*"))

    wait_until(removed, 300, "the packed jobs' sandboxes to be removed", interval=1.0)


@pytest.mark.usefixtures("sandboxes_removed")
def test_workers_train_from_a_packed_environment_unpacked_in_their_scratch(
    pool: Pool, toy_dir: Path
) -> None:
    work = pool.runs / f"packed-{os.getpid()}-0"
    tarball = work / "gridtrain-env.tar.gz"
    pack_env(tarball, exclude=NOT_FOR_WORKERS, level=1)
    assert read_info(tarball).python == ".".join(map(str, sys.version_info[:3]))

    profile = yaml.safe_load(
        (Path(__file__).parents[2] / "profiles" / "local-pool" / "condor.yaml").read_text()
    )
    profile.update(request_disk="4GB", environment={"kind": "packed", "path": str(tarball)})
    (work / "site").mkdir()
    (work / "site" / "condor.yaml").write_text(yaml.safe_dump(profile))
    write_pool_training(work, toy_dir, str(work / "site"), shard_events=1500)
    config = yaml.safe_load((work / "config.yaml").read_text())
    config["train"]["backend"] = "jax"
    (work / "config.yaml").write_text(yaml.safe_dump(config))

    run_dir = work / "run"
    done = subprocess.run(
        [sys.executable, "-m", "gridtrain", "train", "-c", "config.yaml", "--run-dir",
         str(run_dir), "--epochs", "6"],
        cwd=work, capture_output=True, text=True, timeout=420, check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 6

    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    # Every job that started ran from the unpacked environment. A fast machine may finish the
    # six epochs with the first job before the pool starts the second (each asks for 4 GB of
    # disk): the run is then done, and the second is removed unstarted, with no output.
    started = sorted(p for p in (run_dir / "condor").glob(f"{run_dir.name}-w*.out"))
    assert started, "no worker job started"
    for path in started:
        name = path.stem
        out = path.read_text()
        found = re.search(
            r"environment packed: python, version, gridtrain: (\S+) (\S+) (\S+) (\S+)", out
        )
        assert found, out
        executable, _, _, package = found.groups()
        scratch = executable.removesuffix("/.gridtrain-env/bin/python3")
        assert scratch != executable
        assert scratch.startswith("/var/lib/condor/execute/")
        assert (
            package
            == f"{scratch}/.gridtrain-env/lib/python3.11/site-packages/gridtrain/__init__.py"
        )
        assert f"worker {name} joined" in done.stderr  # the parameter server saw it
    assert any(r["type"] == "shard" for r in history)
