"""A few lines on a run's outcome for the terminal, from the same records the plots use.

Layer: report, text. Pure formatting of a ``Run``; no I/O.
"""

from __future__ import annotations

import math
from typing import Any

from gridtrain.report.run import Run
from gridtrain.rundir import RunDir


def summary_lines(run: Run) -> list[str]:
    """Two or three lines on the run's outcome, for the terminal."""
    m: dict[str, Any] = run.metrics or {}
    lines = []
    if run.metrics is not None:
        lines.append(
            f"validation AUC {_fmt(m.get('auc'), '.4f')}, loss {_fmt(m.get('loss'), '.4f')}, "
            f"accuracy {_fmt(m.get('accuracy'), '.4f')} ({m.get('model', 'model ?')})"
        )
        stop = ", stopped early" if m.get("stopped_early") else ""
        lines.append(
            f"{m.get('epochs', '?')} epochs (best {m.get('best_epoch', '?')}{stop}), wall time "
            f"{_duration(m.get('wall_time_s'))}, {m.get('updates', '?')} updates "
            f"({m.get('refused', 0)} refused)"
        )
    elif run.epochs:
        last = run.epochs[-1]
        lines.append(
            f"no {RunDir(run.path).metrics} (training unfinished?); after epoch {last.epoch}: "
            f"validation AUC {last.val_auc:.4f}, loss {last.val_loss:.4f}, "
            f"{last.updates} updates in {_duration(last.time)}"
        )
    else:
        lines.append(
            f"no {RunDir(run.path).metrics.name} and no finished epoch; "
            f"{len(run.shards)} shards trained"
        )
    staleness = m.get("staleness")
    workers = m.get("workers")
    if isinstance(staleness, dict) and isinstance(workers, list) and workers:
        rate = sum(float(w.get("events_per_s", 0)) for w in workers if isinstance(w, dict))
        lines.append(
            f"{len(workers)} workers, {rate:,.0f} events/s in all; staleness p50 "
            f"{staleness.get('p50', '?')}, p90 {staleness.get('p90', '?')}, max "
            f"{staleness.get('max', '?')}"
        )
    return lines


def _fmt(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, int | float) else "?"


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or not math.isfinite(seconds):
        return "?"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"
