"""The job wrapper jobs/worker.sh, run directly: the worker command, exit codes, eviction."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gridtrain.condor.render import EXIT_EVICTED, WRAPPER


def start(scratch: Path, env: dict[str, str], *command: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["bash", str(WRAPPER), "run-w3", "3", *(("--", *command) if command else ())],
        cwd=scratch,
        env={
            "PATH": os.environ["PATH"],
            "HOME": str(scratch),
            "GRIDTRAIN_ENV_PATH": sys.prefix,  # this environment, which has gridtrain
            **env,
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_runs_gridtrain_worker_with_the_transferred_files(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    fake = venv / "bin" / "python3"  # answers the wrapper's probe, then shows its arguments
    fake.write_text(
        '#!/bin/sh\n[ "$1" = -c ] && { echo "fake 3.11 0.1 /fake/gridtrain"; exit 0; }\n'
        'echo "ARGS: $*"\nstat -c "MODE: %a" ps.secret\n'
    )
    fake.chmod(0o755)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "ps.secret").write_text("s3cret")
    (scratch / "ps.secret").chmod(0o644)
    env = {
        "GRIDTRAIN_ENV": "host",
        "GRIDTRAIN_ENV_PATH": str(venv),
        "GRIDTRAIN_PS_ADDRESS": "10.0.0.5:9600",
        "GRIDTRAIN_THREADS": "2",
        "CUDA_VISIBLE_DEVICES": "GPU-abc",
    }
    out, _ = start(scratch, env).communicate(timeout=30)
    assert (
        "ARGS: -m gridtrain worker --spec worker.json --address 10.0.0.5:9600 "
        "--secret-file ps.secret --name run-w3 --threads 2"
    ) in out
    assert "MODE: 600" in out
    assert "CUDA_VISIBLE_DEVICES=GPU-abc" in out
    assert "s3cret" not in out


def test_exit_code_of_the_worker_is_the_jobs(tmp_path: Path) -> None:
    wrapper = start(tmp_path, {}, "false")
    wrapper.communicate(timeout=30)
    assert wrapper.returncode == 1


def test_sigterm_is_forwarded_and_becomes_the_checkpoint_exit_code(tmp_path: Path) -> None:
    # A worker that stops cleanly on SIGTERM (exit 143) and says so.
    worker = tmp_path / "worker.sh"
    worker.write_text(
        "#!/bin/bash\ntrap 'echo worker got TERM; exit 143' TERM\necho ready\n"
        "while true; do sleep 0.1; done\n"
    )
    worker.chmod(0o755)
    wrapper = start(tmp_path, {}, str(worker))
    assert wrapper.stdout is not None
    deadline = time.monotonic() + 20
    while "ready" not in wrapper.stdout.readline():
        assert time.monotonic() < deadline
    wrapper.send_signal(signal.SIGTERM)
    out, err = wrapper.communicate(timeout=30)
    assert wrapper.returncode == EXIT_EVICTED == 85
    assert "worker got TERM" in out
    assert "worker exited 143 after SIGTERM" in err


def test_the_environment_cannot_change_what_runs_only_the_arguments_can(tmp_path: Path) -> None:
    # The old test hook, GRIDTRAIN_JOB_COMMAND, is not honoured: the worker runs.
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    fake = venv / "bin" / "python3"
    fake.write_text('#!/bin/sh\n[ "$1" = -c ] && { echo "fake"; exit 0; }\necho "ARGS: $*"\n')
    fake.chmod(0o755)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {"GRIDTRAIN_ENV_PATH": str(venv), "GRIDTRAIN_PS_ADDRESS": "ps:1"}
    out, _ = start(scratch, {**env, "GRIDTRAIN_JOB_COMMAND": "touch pwned"}).communicate(timeout=30)
    assert "ARGS: -m gridtrain worker --spec worker.json --address ps:1" in out
    assert not (scratch / "pwned").exists()
    bad = start(scratch, env, "")  # `--` without a command is a usage error, nothing runs
    _, err = bad.communicate(timeout=30)
    assert bad.returncode == 2
    assert "usage: worker.sh NAME INDEX [-- COMMAND ARG...]" in err


def test_a_job_command_goes_into_the_arguments_never_the_environment() -> None:
    from gridtrain.condor.render import WorkerJobs, render_submit_description
    from gridtrain.condor.site import load_profile
    from gridtrain.errors import ConfigError

    run = Path("/data/runs/r")
    jobs = WorkerJobs(
        run, "h:1", 2, run / "worker.json", run / "ps.secret", command=("sleep", "60")
    )
    text = render_submit_description(load_profile("local-pool"), jobs)
    assert "arguments               = $(worker_name) $(worker_index) -- sleep 60\n" in text
    assert "sleep" not in text.split("environment             =")[1].split("\n")[0]
    with pytest.raises(ConfigError, match="job command word 'a b'"):
        render_submit_description(
            load_profile("local-pool"),
            WorkerJobs(run, "h:1", 1, run / "worker.json", run / "ps.secret", command=("a b",)),
        )
