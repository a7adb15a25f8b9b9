"""gridtrain installed from its wheel into a new environment outside the checkout.

The job template, the wrapper and the built-in site profiles are package data: from a folder
that is not the checkout, with only the wheel and the locked dependencies installed, every
built-in profile renders a submit description and a short training runs its workers on the pool.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from pool_helpers import Pool, write_pool_training

from gridtrain.condor.site import builtin_profiles

pytestmark = [pytest.mark.htcondor, pytest.mark.slow]

CHECKOUT = Path(__file__).parents[2]
UV = str(Path(sys.executable).parent / "uv")


def run(*command: str | Path, cwd: Path, timeout: float = 300) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(
        [str(c) for c in command], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        check=False, env={**env, "TF_CPP_MIN_LOG_LEVEL": "3", "UV_PYTHON_DOWNLOADS": "never"},
    )  # fmt: skip
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done.stdout


def test_the_wheel_submits_and_trains_outside_the_checkout(pool: Pool, toy_dir: Path) -> None:
    work = pool.runs / f"wheel-{os.getpid()}-0"
    work.mkdir(parents=True)
    run(UV, "build", "--wheel", "--quiet", "--out-dir", work / "dist", CHECKOUT, cwd=work)
    [wheel] = (work / "dist").glob("gridtrain-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for name in builtin_profiles():
        assert f"gridtrain/condor/sites/{name}.yaml" in names
    assert {"gridtrain/condor/job/worker.sub", "gridtrain/condor/job/worker.sh"} <= names

    venv = work / "venv"
    run(UV, "venv", "--quiet", "--python", sys.executable, venv, cwd=work)
    locked = run(UV, "export", "--frozen", "--no-hashes", "--no-emit-project",
                 "--no-default-groups", "--extra", "cpu", cwd=CHECKOUT)  # fmt: skip
    (work / "requirements.txt").write_text(locked)
    run(UV, "pip", "install", "--quiet", "--python", venv / "bin" / "python",
        "-r", "requirements.txt", wheel, cwd=work)  # fmt: skip
    package = run(venv / "bin" / "python", "-c", "import gridtrain; print(gridtrain.__file__)",
                  cwd=work).strip()  # fmt: skip
    assert package == f"{venv}/lib/python3.11/site-packages/gridtrain/__init__.py"
    wrapper = Path(package).parent / "condor" / "job" / "worker.sh"

    gridtrain = venv / "bin" / "gridtrain"
    for name in builtin_profiles():
        out = run(gridtrain, "submit", "run-dry", "--workers", "2", "--profile", name,
                  "--dry-run", cwd=work)  # fmt: skip
        assert f"executable              = {wrapper}\n" in out, out
        assert f"# 2 job(s) in one cluster, profile {name}:" in out

    # the built-in profile, from the wheel
    write_pool_training(work, toy_dir, "local-pool", shard_events=3000)
    run(gridtrain, "train", "-c", "config.yaml", "--run-dir", "run", "--epochs", "3",
        cwd=work, timeout=420)  # fmt: skip
    assert json.loads((work / "run" / "metrics.json").read_text())["epochs"] == 3
    for index in (0, 1):
        out = (work / "run" / "condor" / f"run-w{index}.out").read_text()
        assert f"python, version, gridtrain: {venv}/bin/python" in out, out
        assert f"{package}" in out
