"""Job environments: the profile's choice, what it ships, and the wrapper's set-up of each kind.

The wrapper runs here as on an execute node: in a scratch folder holding what HTCondor would
have transferred. An LCG view is a folder with a ``setup.sh`` that puts an interpreter WITHOUT
gridtrain on PATH (this machine's base Python), so only the shipped wheel can provide it; the
packed environment is a real ``gridtrain pack-env`` tarball (its standard library and
gridtrain, site-packages left out to keep it small). The packed environment with TensorFlow
runs end to end on the test pool (tests/pool/test_pool_environments.py).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml

import gridtrain
from gridtrain.condor.environment import JobEnvironment, build_wheel
from gridtrain.condor.pack import INFO_MEMBER, pack_env, read_info, stale_reason
from gridtrain.condor.render import WRAPPER, WorkerJobs, render_submit_description
from gridtrain.condor.site import load_profile
from gridtrain.condor.submit import htcondor
from gridtrain.condor.worker_jobs import ship_environment
from gridtrain.errors import ConfigError

EXIT_NO_ENVIRONMENT = 86
BASE_PYTHON = Path(sys.base_prefix) / "bin" / "python3"  # has no gridtrain
PROBE = """#!/bin/bash
echo "PYTHON=$GRIDTRAIN_PYTHON VIEW=${FAKE_VIEW:-none}"
"$GRIDTRAIN_PYTHON" -c 'import sys, gridtrain; print("EXE", sys.executable)
print("GRIDTRAIN", gridtrain.__file__)'
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def small_pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tarball = tmp_path_factory.mktemp("pack") / "env.tar.gz"
    pack_env(tarball, exclude=["*"], level=1)
    return tarball


def run_wrapper(scratch: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    probe = scratch.parent / "probe.sh"
    probe.write_text(PROBE)
    probe.chmod(0o755)
    return subprocess.run(
        ["bash", str(WRAPPER), "run-w0", "0", "--", str(probe)],
        cwd=scratch,
        env={"PATH": "/usr/bin:/bin", "HOME": str(scratch), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def scratch_with(tmp_path: Path, *files: Path) -> Path:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    for file in files:
        (scratch / file.name).write_bytes(file.read_bytes())
    return scratch


def fake_view(tmp_path: Path) -> Path:
    view = tmp_path / "view"
    (view / "bin").mkdir(parents=True)
    (view / "bin" / "python3").symlink_to(BASE_PYTHON)
    (view / "setup.sh").write_text(f'export PATH="{view}/bin:$PATH"\nexport FAKE_VIEW=lcg\n')
    return view


def test_lcg_view_is_sourced_and_the_shipped_wheel_provides_gridtrain(
    tmp_path: Path, wheel: Path
) -> None:
    scratch = scratch_with(tmp_path, wheel)
    view = fake_view(tmp_path)
    done = run_wrapper(
        scratch,
        {"GRIDTRAIN_ENV": "lcg", "GRIDTRAIN_ENV_PATH": str(view), "GRIDTRAIN_WHEELS": wheel.name},
    )
    assert done.returncode == 0, done.stderr
    assert "PYTHON=python3 VIEW=lcg" in done.stdout
    assert f"GRIDTRAIN {scratch}/.gridtrain-lib/gridtrain/__init__.py" in done.stdout
    assert f"environment lcg: python, version, gridtrain: {view}/bin/python3" in done.stdout


def test_missing_lcg_view_exits_86_naming_the_path_and_the_requirement(tmp_path: Path) -> None:
    done = run_wrapper(
        scratch_with(tmp_path), {"GRIDTRAIN_ENV": "lcg", "GRIDTRAIN_ENV_PATH": "/cvmfs/nope"}
    )
    assert done.returncode == EXIT_NO_ENVIRONMENT
    assert "no LCG view /cvmfs/nope/setup.sh" in done.stderr
    assert "HAS_CVMFS_sft_cern_ch" in done.stderr


def test_container_takes_gridtrain_from_the_image_or_the_shipped_wheel(
    tmp_path: Path, wheel: Path
) -> None:
    # The "image": this environment's bin first on PATH, as inside a container.
    image_path = f"{Path(sys.prefix) / 'bin'}:/usr/bin:/bin"
    image = run_wrapper(scratch_with(tmp_path), {"GRIDTRAIN_ENV": "container", "PATH": image_path})
    assert image.returncode == 0, image.stderr
    assert f"GRIDTRAIN {Path(gridtrain.__file__)}" in image.stdout

    (tmp_path / "second").mkdir()
    scratch = scratch_with(tmp_path / "second", wheel)
    shipped = run_wrapper(
        scratch,
        {"GRIDTRAIN_ENV": "container", "PATH": image_path, "GRIDTRAIN_WHEELS": wheel.name},
    )
    assert shipped.returncode == 0, shipped.stderr
    assert f"GRIDTRAIN {scratch}/.gridtrain-lib/gridtrain/__init__.py" in shipped.stdout


def test_image_without_gridtrain_exits_86_with_the_way_out(tmp_path: Path) -> None:
    view = fake_view(tmp_path)  # an interpreter without gridtrain, on PATH
    done = run_wrapper(
        scratch_with(tmp_path), {"GRIDTRAIN_ENV": "container", "PATH": f"{view}/bin:/usr/bin"}
    )
    assert done.returncode == EXIT_NO_ENVIRONMENT
    assert "cannot import gridtrain (ship it: environment gridtrain: shipped)" in done.stderr


def test_packed_environment_runs_from_the_jobs_scratch(tmp_path: Path, small_pack: Path) -> None:
    scratch = scratch_with(tmp_path, small_pack)
    done = run_wrapper(scratch, {"GRIDTRAIN_ENV": "packed", "GRIDTRAIN_ENV_PATH": small_pack.name})
    assert done.returncode == 0, done.stderr
    env = scratch / ".gridtrain-env"
    assert f"EXE {env}/bin/python3" in done.stdout
    assert f"GRIDTRAIN {env}/lib/python3.11/site-packages/gridtrain/__init__.py" in done.stdout
    assert not (scratch / small_pack.name).exists()  # one copy on the scratch disk


def test_broken_or_missing_tarball_and_unknown_kind_exit_86(tmp_path: Path) -> None:
    scratch = scratch_with(tmp_path)
    (scratch / "env.tar.gz").write_bytes(b"not a tarball")
    broken = run_wrapper(scratch, {"GRIDTRAIN_ENV": "packed", "GRIDTRAIN_ENV_PATH": "env.tar.gz"})
    assert broken.returncode == EXIT_NO_ENVIRONMENT
    assert "cannot unpack env.tar.gz" in broken.stderr
    missing = run_wrapper(scratch, {"GRIDTRAIN_ENV": "packed", "GRIDTRAIN_ENV_PATH": "gone.tgz"})
    assert missing.returncode == EXIT_NO_ENVIRONMENT
    assert "the tarball gone.tgz was not transferred" in missing.stderr
    unknown = run_wrapper(scratch, {"GRIDTRAIN_ENV": "docker"})
    assert unknown.returncode == EXIT_NO_ENVIRONMENT
    assert "GRIDTRAIN_ENV=docker is not host, lcg, container or packed" in unknown.stderr


def test_wheel_is_reproducible_and_complete(tmp_path: Path, wheel: Path) -> None:
    again = build_wheel(tmp_path)
    assert again.read_bytes() == wheel.read_bytes()
    names = zipfile.ZipFile(wheel).namelist()
    assert "gridtrain/cli.py" in names
    assert "gridtrain/schemas/config.schema.yaml" in names
    assert not [n for n in names if "__pycache__" in n]
    record = zipfile.ZipFile(wheel).read("gridtrain-0.1.0.dist-info/RECORD").decode()
    assert len(record.splitlines()) == len(names)


def test_packed_info_and_stale_sources(tmp_path: Path, small_pack: Path) -> None:
    info = read_info(small_pack)
    assert (
        info.python == f"{sys.version_info.major}.{sys.version_info.minor}.{sys.version_info.micro}"
    )
    assert stale_reason(small_pack) is None
    old = tmp_path / "old.tar.gz"
    with tarfile.open(old, "w:gz") as tar:
        data = json.dumps({**info.__dict__, "source": "0" * 16}).encode()
        member = tarfile.TarInfo(INFO_MEMBER)
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    assert f"run `gridtrain pack-env -o {old}` again" in (stale_reason(old) or "")
    other = tmp_path / "other.tar.gz"
    with tarfile.open(other, "w:gz") as tar:
        tar.add(__file__, "something.py")
    with pytest.raises(ConfigError, match=r"not made by gridtrain pack-env"):
        read_info(other)


def test_pack_env_refuses_an_interpreter_that_is_not_a_virtual_environment(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match=r"not a virtual environment.*conda-pack"):
        pack_env(tmp_path / "x.tar.gz", prefix=Path(sys.base_prefix))
    assert not list(tmp_path.iterdir())  # nothing half-written


def write_profile(tmp_path: Path, **values: object) -> Path:
    path = tmp_path / "site" / "condor.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump({"request_gpus": 1, **values}))
    return path


@pytest.mark.parametrize(
    ("environment", "message"),
    [
        ({"kind": "docker"}, "kind 'docker' is not one of host, lcg, container, packed"),
        ({"kind": "lcg"}, "kind lcg needs a path: the view's folder"),
        ({"kind": "packed"}, "gridtrain pack-env -o gridtrain-env.tar.gz"),
        ({"kind": "lcg", "path": "/v", "gridtrain": "image"}, "'image' with kind container"),
        ({"kind": "container"}, "kind container needs container_image"),
        ({"kind": "host", "venv": "/x"}, "unknown environment key"),
        ("lcg", "environment must be a mapping"),
    ],
)
def test_profile_environment_errors_name_the_file_and_the_way_out(
    tmp_path: Path, environment: object, message: str
) -> None:
    path = write_profile(tmp_path, environment=environment)
    with pytest.raises(ConfigError, match=str(path)) as err:
        load_profile(path)
    assert message in str(err.value)


def test_rendered_jobs_carry_what_each_kind_needs(tmp_path: Path, small_pack: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    extra_wheel = tmp_path / "hdf5plugin-5.0-py3-none-any.whl"
    extra_wheel.write_bytes(b"zip")
    kinds = {
        "lcg": {
            "kind": "lcg",
            "path": "/cvmfs/sft.cern.ch/lcg/views/X",
            "wheels": [str(extra_wheel)],
        },
        "container": {"kind": "container", "gridtrain": "image"},
        "packed": {"kind": "packed", "path": str(small_pack)},
        "host": {"kind": "host", "path": "/afs/cern.ch/user/m/me/venv"},
    }
    for kind, environment in kinds.items():
        profile = load_profile(
            write_profile(tmp_path, environment=environment, container_image="/cvmfs/img")
        )
        jobs = WorkerJobs(
            run,
            "h:1",
            1,
            run / "worker.json",
            run / "ps.secret",
            venv=Path(sys.prefix),
            wheel=ship_environment(profile, run / "condor"),
        )
        submit = htcondor().Submit(render_submit_description(profile, jobs))
        inputs = submit["transfer_input_files"].split(", ")
        environ = submit["environment"]
        assert f"GRIDTRAIN_ENV={kind}" in environ
        if kind == "lcg":
            assert inputs[2:] == [
                str(run / "condor" / "gridtrain-0.1.0-py3-none-any.whl"),
                str(extra_wheel),
            ]
            assert "GRIDTRAIN_WHEELS=gridtrain-0.1.0-py3-none-any.whl,hdf5plugin-5.0" in environ
            assert "GRIDTRAIN_ENV_PATH=/cvmfs/sft.cern.ch/lcg/views/X" in environ
        elif kind == "container":
            assert inputs[2:] == []
            assert "GRIDTRAIN_WHEELS" not in environ
        elif kind == "packed":
            assert inputs[2:] == [str(small_pack)]
            assert f"GRIDTRAIN_ENV_PATH={small_pack.name}" in environ
        else:
            assert "GRIDTRAIN_ENV_PATH=/afs/cern.ch/user/m/me/venv" in environ


def test_submitting_refuses_a_packed_environment_that_does_not_exist(tmp_path: Path) -> None:
    profile = load_profile(write_profile(tmp_path, environment={"kind": "packed", "path": "e.tgz"}))
    with pytest.raises(ConfigError, match=r"packed environment e.tgz: no such file; .*pack-env"):
        ship_environment(profile, tmp_path / "condor")
    assert JobEnvironment(kind="packed", path="osdf:///ospool/x/e.tgz").files(None) == [
        "osdf:///ospool/x/e.tgz"
    ]


def test_doctor_checks_the_environment_the_profile_names(tmp_path: Path, small_pack: Path) -> None:
    from gridtrain.condor.doctor import run_checks

    def environment_line(environment: dict[str, object]) -> str:
        profile = load_profile(write_profile(tmp_path, environment=environment))
        [check] = [c for c in run_checks(profile, None) if c.name == "environment"]
        return f"{'ok' if check.ok else 'FAIL'} {check.found} -> {check.fix}"

    assert environment_line({"kind": "host"}).startswith(f"ok {sys.prefix}")
    view = fake_view(tmp_path)
    assert environment_line({"kind": "lcg", "path": str(view)}).startswith(
        f"ok LCG view {view}, gridtrain shipped"
    )
    missing = environment_line({"kind": "lcg", "path": "/cvmfs/sft.cern.ch/lcg/views/LCG_0"})
    assert missing.startswith("FAIL LCG view /cvmfs/sft.cern.ch/lcg/views/LCG_0/setup")
    assert "-> mount /cvmfs/sft.cern.ch" in missing
    packed = environment_line({"kind": "packed", "path": str(small_pack)})
    assert packed.startswith(f"ok packed {small_pack}: Python 3.11")
    gone = environment_line({"kind": "packed", "path": str(tmp_path / "gone.tgz")})
    assert gone.startswith("FAIL")
    assert "gridtrain pack-env -o" in gone
