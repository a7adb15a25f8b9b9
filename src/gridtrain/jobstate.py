"""The few states a worker job is in, whatever runs it (local processes, HTCondor).

Layer: foundation, no imports. Each executor maps its native states onto these (as law does for
every batch system), so that the driver, ``gridtrain status`` and the tests speak one language.
"""

from __future__ import annotations

import enum


class JobState(enum.StrEnum):
    IDLE = "idle"  # waiting to start (queued, or a process not yet spawned)
    RUNNING = "running"
    HELD = "held"  # stopped by the batch system until released (HTCondor holds)
    EVICTED = "evicted"  # stopped by the pool (vacate, preemption, checkpoint exit); will rerun
    DONE = "done"  # exited 0
    FAILED = "failed"  # exited non-zero, killed by a signal, or removed

    @property
    def final(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED)
