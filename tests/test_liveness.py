"""One way to tell a process alive from another (``gridtrain.liveness``): a lock it holds for
life, gone with it however it ends, held from the first instruction of a spawned child."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gridtrain.errors import GridtrainError
from gridtrain.liveness import claim, held, release
from gridtrain.spawn import spawn_gridtrain

HOLD = (
    "import fcntl, sys, time; lock = open(sys.argv[1], 'w'); fcntl.flock(lock, fcntl.LOCK_EX); "
    "print('held', flush=True); time.sleep(60)"
)


def test_a_claimed_lock_is_held_until_released_and_refused_to_a_second_claimant(
    tmp_path: Path,
) -> None:
    lock = tmp_path / ".lock"
    assert not held(lock)  # no file: nobody
    fd = claim(lock)
    assert fd is not None
    assert held(lock)
    assert claim(lock) is None
    release(fd)
    assert not held(lock)
    assert lock.exists()  # kept: a removed lock file would let a second claimant in
    again = claim(lock)
    assert again is not None
    release(again)
    assert not held(tmp_path / "gone" / ".lock")


def test_a_killed_holder_leaves_the_lock_free_even_before_it_is_reaped(tmp_path: Path) -> None:
    lock = tmp_path / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"held\n"
        assert held(lock)
        assert claim(lock) is None
        holder.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 10
        while held(lock):  # gone with the process: a zombie, not yet waited for, holds nothing
            assert time.monotonic() < deadline
            time.sleep(0.01)
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    fd = claim(lock)
    assert fd is not None
    release(fd)


def test_a_spawned_process_holds_the_lock_it_is_handed_from_start_to_exit(
    tmp_path: Path,
) -> None:
    lock = tmp_path / ".trial.lock"
    log = tmp_path / "out.log"
    process = spawn_gridtrain(["--help"], log, holding=lock)
    try:
        assert held(lock)  # from the start, and not by this process any more:
        process.wait(timeout=120)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0, log.read_text()
    assert not held(lock)

    fd = claim(lock)
    assert fd is not None
    try:
        with pytest.raises(GridtrainError, match="held by a running process"):
            spawn_gridtrain(["--help"], log, holding=lock)
    finally:
        release(fd)
