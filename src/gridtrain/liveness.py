"""Whether a process still runs, asked from another process: a file lock it holds for life.

Layer: foundation. It takes, probes and releases locks; it never signals a process and never
reads /proc.

The training driver (``gridtrain status``, ``cancel``, the web service), the tuner (``gridtrain
tune status``, ``tune cancel``) and each training a tuner starts (a killed tuner's orphans) are
all told alive the one way kept here: the process holds an exclusive ``flock`` on a lock file in
its folder for as long as it runs, and anyone may probe it. The choice, against the two ways
used before:

- The kernel drops a ``flock`` when the last descriptor on it closes: when the process exits,
  however it exits (SIGKILL included), and before it turns into a zombie. A held lock cannot
  outlive its process and a reused pid never holds it, so no pid has to be trusted.
- A pid with the kernel's start time of that pid (``/proc/PID/stat``) also names one process for
  good, but needs /proc, its parsing and a zombie check; a match on ``/proc/PID/cmdline`` also
  takes an unrelated process that names the same folder for the one recorded.

A lock is seen on its own host only, so each holder also writes a record beside it (pid, host)
for people and for signals; a record that names another host is the caller's to judge.

A child can be handed a lock at its start (``gridtrain.spawn``): the parent takes it and the
child inherits the descriptor, so the lock is held from the child's first instruction to its
exit, with no window in which it runs unlocked. A descriptor forked on by the holder (not
started with ``close_fds``) would keep the lock after the holder's exit; ``subprocess`` closes
inherited descriptors by default, and gridtrain starts every process that way.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

# A probe holds a shared lock for a moment; a claim that meets one waits it out this long
# before it takes the lock for held by a live process.
CLAIM_PATIENCE = 0.5


def claim(path: Path) -> int | None:
    """Hold the lock at ``path`` from now until ``release`` or this process's exit.

    Returns the lock's descriptor, or None while a live process holds it. The file is created
    when missing and never removed (removing it would let a second claimant lock a new file).
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + CLAIM_PATIENCE
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.02)
                continue
            os.close(fd)
            return None
        return fd


def release(fd: int) -> None:
    """Give up a lock ``claim`` returned (closing its descriptor)."""
    os.close(fd)


def held(path: Path) -> bool:
    """Whether a live process holds the lock at ``path`` (False when there is no such file)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
