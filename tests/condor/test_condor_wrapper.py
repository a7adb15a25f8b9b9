"""The job wrapper jobs/worker.sh, run directly: the worker command, exit codes, eviction."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gridtrain.condor.render import EXIT_EVICTED, WRAPPER


def start(scratch: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["bash", str(WRAPPER), "run-w3", "3"],
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
    wrapper = start(tmp_path, {"GRIDTRAIN_JOB_COMMAND": "false"})
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
    wrapper = start(tmp_path, {"GRIDTRAIN_JOB_COMMAND": str(worker)})
    assert wrapper.stdout is not None
    deadline = time.monotonic() + 20
    while "ready" not in wrapper.stdout.readline():
        assert time.monotonic() < deadline
    wrapper.send_signal(signal.SIGTERM)
    out, err = wrapper.communicate(timeout=30)
    assert wrapper.returncode == EXIT_EVICTED == 85
    assert "worker got TERM" in out
    assert "worker exited 143 after SIGTERM" in err
