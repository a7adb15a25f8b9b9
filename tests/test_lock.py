"""The project's environments come from one lock (uv.lock): checked against what is installed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
UV = Path(sys.executable).parent / "uv"


def locked_env_args() -> list[str]:
    """The extras and groups that `make` installs, read from the Makefile's LOCKED_ENV line."""
    [line] = [
        ln for ln in (ROOT / "Makefile").read_text().splitlines() if ln.startswith("LOCKED_ENV")
    ]
    return line.split(":=", 1)[1].split()


def pins(requirements: str) -> dict[str, str]:
    """``{normalised name: version}`` of every ``name==version`` line of a requirements text."""
    found = {}
    for line in requirements.splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s;\\]+)", line)
        if match:
            found[re.sub(r"[-_.]+", "-", match[1]).lower()] = match[3]
    return found


def export(*args: str) -> str:
    command = [str(UV), "export", "--frozen", "--no-hashes", "--no-emit-project"]
    return subprocess.run(
        [*command, "--no-default-groups", *args],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def test_pip_freeze_is_exactly_the_lock() -> None:
    freeze = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--all", "--exclude-editable"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    locked = pins(export(*locked_env_args()))
    assert len(locked) > 100
    installed = pins(freeze)
    installed.pop("pip")  # what made the venv; uv keeps it and the lock does not name it
    assert installed == locked


def test_envs_files_are_generated_from_the_lock_and_current(tmp_path: Path) -> None:
    subprocess.run(
        ["make", "-s", "envs", f"ENVS_DIR={tmp_path}"], cwd=ROOT, check=True, capture_output=True
    )
    for name in ("requirements-gpu.txt", "requirements-cpu.txt"):
        generated = (tmp_path / name).read_text()
        assert "--hash=sha256:" in generated
        assert (ROOT / "envs" / name).read_text() == generated, f"envs/{name}: run `make envs`"


def test_gpu_jobs_get_the_versions_the_tests_run() -> None:
    gpu, tested = pins(export("--extra", "gpu")), pins(export(*locked_env_args()))
    assert gpu.pop("tensorflow") == tested.pop("tensorflow-cpu")  # same release, CUDA build
    shared = gpu.keys() & tested.keys()
    assert {"keras", "numpy", "uproot", "h5py", "pyyaml", "htcondor", "xrootd"} <= shared
    assert {name: gpu[name] for name in shared} == {name: tested[name] for name in shared}
    assert {name for name in gpu.keys() - tested.keys() if not name.startswith("nvidia-")} == set()
