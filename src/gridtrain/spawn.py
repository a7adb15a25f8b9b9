"""Start a gridtrain command as a process of its own session, and wait for it to take hold.

Layer: foundation. A detached driver (``gridtrain train --detach``), a detached tuner (``gridtrain
tune --detach``) and each trial of a study are new ``python -m gridtrain ...`` processes, not
forks: the parent may hold TensorFlow's threads, which a fork would not carry over. Each runs in a
session of its own, so Ctrl-C and a closed terminal reach only the parent, with its output
appended to a log file in the run directory. A process that others must be able to tell alive
is handed its lock (``gridtrain.liveness``) as it starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from gridtrain.errors import GridtrainError
from gridtrain.liveness import claim, release

QUIET_TENSORFLOW = {"TF_CPP_MIN_LOG_LEVEL": "3"}


def spawn_gridtrain(
    arguments: Sequence[str],
    log_path: Path,
    env: dict[str, str] | None = None,
    *,
    holding: Path | None = None,
) -> subprocess.Popen[bytes]:
    """``python -m gridtrain ARGUMENTS`` in a new session, its output appended to ``log_path``.

    ``env`` adds to (or overrides) this process's environment. With ``holding``, the process
    holds that lock (``liveness.held`` tells it alive) from its start to its exit, and this
    process does not; a lock a live process holds already is refused (``GridtrainError``).
    """
    lock = None
    if holding is not None:
        lock = claim(holding)
        if lock is None:
            raise GridtrainError(f"{holding} is held by a running process; stop it first")
    try:
        with open(log_path, "ab") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "gridtrain", *arguments],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                pass_fds=() if lock is None else (lock,),
                env={**os.environ, **env} if env else None,
            )
    finally:
        if lock is not None:
            release(lock)  # the child's inherited descriptor holds it on


def wait_until_claimed(
    process: subprocess.Popen[bytes], claimed: Callable[[], bool], timeout: float
) -> bool:
    """Poll ``claimed`` until it is true (True), the process exits or ``timeout`` passes (False).

    The caller tells an exit (``process.poll()`` is not None) from a slow start.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if claimed():
            return True
        time.sleep(0.1)
    return False


def last_line(path: Path) -> str:
    """The last line of a log file ('' if it is empty or cannot be read)."""
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""
