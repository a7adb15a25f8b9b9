"""Many files scored: every input checked first, then scored in this process or in ``jobs``
local processes, with progress and a summary.

Layer: apply, orchestration. Before anything is written every input is opened and checked (its
tree, the branches the model reads, ``--keep``), and two inputs that would write one scores file
are refused, so a typo costs seconds, not a half-scored list. Files are the unit of work: each
process loads the model once and scores whole files; a finished file is verified and skipped
(``gridtrain.apply.outputs``), so an interrupted run resumes where it stopped. The first error
stops the run (files already finished stay) and is raised, naming its file.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from gridtrain.apply.outputs import check_format, check_names
from gridtrain.apply.scoring import ApplySettings, FileResult, Scorer
from gridtrain.errors import ApplyError

log = logging.getLogger(__name__)

Progress = Callable[[int, int, int], None]  # (events done, events in all, files done)


@dataclass
class Summary:
    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def scored(self) -> list[FileResult]:
        return [f for f in self.files if not f.skipped]

    @property
    def events(self) -> int:
        """Events scored by this run (not those of files skipped as finished)."""
        return sum(f.entries for f in self.scored)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        skipped = len(self.files) - len(self.scored)
        done = f" ({skipped} finished already, skipped)" if skipped else ""
        return (
            f"{len(self.files)} files{done}, {self.events} events scored in "
            f"{self.seconds:.1f} s ({self.rate:,.0f} events/s)"
        )


def apply_files(
    settings: ApplySettings,
    paths: Sequence[str],
    jobs: int = 1,
    progress: Progress | None = None,
) -> Summary:
    """Score ``paths`` with ``settings``; files in ``jobs`` processes at once."""
    began = time.perf_counter()
    if not paths:
        raise ApplyError("no input files; name at least one ROOT file")
    if jobs < 1:
        raise ApplyError(f"--jobs {jobs}: give 1 or more")
    check_format(settings.format)
    check_names(list(paths))
    scorer = Scorer(settings)
    sizes = {}
    for path in paths:  # every input checked before anything is written
        reader, _ = scorer.open(path)
        sizes[path] = reader.entries
        reader.close()
    total = sum(sizes.values())
    done = [0, 0]

    def advance(events: int, files: int = 0) -> None:
        done[0] += events
        done[1] += files
        if progress is not None:
            progress(done[0], total, done[1])

    summary = Summary()
    if jobs == 1 or len(paths) == 1:
        for path in paths:
            summary.files.append(scorer.score_file(path, advance))
            advance(0, 1)
    else:
        summary.files = _in_processes(settings, list(paths), jobs, advance)
    summary.seconds = time.perf_counter() - began
    return summary


# -- --jobs N: local processes, each with its own model ------------------------------------------

_scorer: Scorer | None = None
_events: Any = None


def _start(settings: ApplySettings, events: Any) -> None:
    global _scorer, _events
    _scorer, _events = Scorer(settings), events


def _score(path: str) -> FileResult:
    assert _scorer is not None
    return _scorer.score_file(path, _events.put)


def _in_processes(
    settings: ApplySettings, paths: list[str], jobs: int, advance: Callable[[int, int], None]
) -> list[FileResult]:
    # spawn, not fork: a forked TensorFlow or ONNX Runtime thread pool would deadlock.
    context = multiprocessing.get_context("spawn")
    events = context.Queue()
    threads = settings.threads
    with ProcessPoolExecutor(
        min(jobs, len(paths)), context, initializer=_start, initargs=(settings, events)
    ) as pool:
        futures: dict[Future[FileResult], str] = {pool.submit(_score, p): p for p in paths}
        pending = set(futures)
        try:
            while pending:
                finished, pending = wait(pending, timeout=0.2, return_when=FIRST_EXCEPTION)
                _drain(events, advance)
                for future in finished:
                    future.result()  # the first error stops the run
                    advance(0, 1)
        except BaseException:
            for future in pending:
                future.cancel()
            raise
        _drain(events, advance)
    log.debug("scored %d files in %d processes of %d threads", len(paths), jobs, threads)
    return [future.result() for future in futures]


def _drain(events: Any, advance: Callable[[int, int], None]) -> None:
    while True:
        try:
            advance(events.get_nowait(), 0)
        except queue.Empty:
            return


def default_threads(jobs: int) -> int:
    """Threads per process: the cores shared among the jobs."""
    return max(1, (os.cpu_count() or 1) // max(jobs, 1))
