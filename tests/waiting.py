"""Waiting on an event with a deadline: the one way a test waits for another process or thread.

A test never sleeps for "probably done by now": it polls the thing it needs (a status record, a
lease log line, a process state) until it holds, and fails at the deadline with a message naming
what did not happen. The deadline is generous (a busy machine is slow, not wrong); the poll is
short, so a quiet machine does not pay for it.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``condition`` until it returns something true, and return that; fail after
    ``timeout`` seconds with ``what`` in the message."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def remove_while_written(folder: Path, timeout: float, what: str) -> None:
    """Remove ``folder`` as a user's ``rm -rf`` run again until it is gone: a process still
    writing may add a file between the listing and the rmdir ("Directory not empty")."""
    wait_until(
        lambda: shutil.rmtree(folder, ignore_errors=True) or not folder.exists(),
        timeout,
        f"{what} to be removed while it is written to",
        interval=0.2,
    )
