"""Training metrics of the parameter server: rates, staleness histogram, per-worker membership.

Layer: ps, bookkeeping. Thread-safe counters and their JSON-able snapshot; it never touches a
socket. The server sends snapshots in STATUS replies and appends them to a JSON-lines log.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

log = logging.getLogger(__name__)

STALENESS_BUCKETS = ("0", "1", "2", "3-4", "5-8", "9-16", "17-32", "33-64", ">64")


def staleness_bucket(stale: int) -> str:
    """The histogram bucket of a staleness value (powers of two above 2)."""
    if stale < 0:
        raise ValueError(f"staleness must be >= 0, got {stale}")
    if stale <= 2:
        return str(stale)
    upper = 4
    while upper <= 64:
        if stale <= upper:
            return f"{upper // 2 + 1}-{upper}"
        upper *= 2
    return ">64"


def staleness_percentiles(counts: Counter[int]) -> dict[str, int]:
    """p50, p90, p99 and max of the accepted pushes' staleness (empty when none was pushed)."""
    total = sum(counts.values())
    if not total:
        return {}
    result: dict[str, int] = {}
    ordered = sorted(counts.items())
    for name, fraction in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        rank, seen = fraction * total, 0
        for value, count in ordered:
            seen += count
            if seen >= rank:
                result[name] = value
                break
    result["max"] = ordered[-1][0]
    return result


def staleness_summary(counts: dict[str, int]) -> dict[str, Any]:
    """Histogram and percentiles from exact staleness counts (``{"3": 17, ...}``, JSON keys)."""
    exact = Counter({int(k): int(v) for k, v in counts.items()})
    histogram = dict.fromkeys(STALENESS_BUCKETS, 0)
    for value, count in exact.items():
        histogram[staleness_bucket(value)] += count
    return {"histogram": histogram, **staleness_percentiles(exact)}


@dataclass
class WorkerRecord:
    """One worker as the server has seen it (kept after it leaves, for the report)."""

    worker_id: int
    name: str
    address: str
    connected: bool
    joined: float
    last_seen: float
    connections: int = 1
    pushes: int = 0
    refused: int = 0
    last_version: int = 0
    left_reason: str = ""


class Metrics:
    """Counters updated by every connection thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.started = time.time()
        self._started_monotonic = time.monotonic()
        self.bytes_in = 0
        self.bytes_out = 0
        self.pushes = 0
        self.refused = 0
        self.pulls = 0
        self.staleness = dict.fromkeys(STALENESS_BUCKETS, 0)
        self.staleness_counts: Counter[int] = Counter()  # exact values, for percentiles
        self.workers: dict[int, WorkerRecord] = {}
        self._names: dict[str, int] = {}
        self._active: dict[int, int] = {}
        self._last_rates = (self._started_monotonic, 0, 0, 0)

    def join(self, name: str, address: str) -> int:
        """Register a worker; one that comes back under its name keeps its id.

        Names are expected to be unique per worker (the grid job id); a worker that reconnects
        before its old connection is noticed dead supersedes it.
        """
        now = time.time()
        with self._lock:
            worker_id = self._names.get(name) if name else None
            if worker_id is not None:
                record = self.workers[worker_id]
                record.connected = True
                record.connections += 1
                record.address = address
                record.last_seen = now
                record.left_reason = ""
                self._active[worker_id] += 1
                return worker_id
            worker_id = len(self.workers) + 1
            self.workers[worker_id] = WorkerRecord(
                worker_id, name or f"worker-{worker_id}", address, True, now, now
            )
            self._active[worker_id] = 1
            if name:
                self._names[name] = worker_id
            return worker_id

    def leave(self, worker_id: int, reason: str) -> None:
        with self._lock:
            record = self.workers.get(worker_id)
            if record is not None:
                self._active[worker_id] -= 1
                if self._active[worker_id] <= 0:
                    record.connected = False
                    record.left_reason = reason

    def record_traffic(self, worker_id: int, received: int, sent: int) -> None:
        with self._lock:
            self.bytes_in += received
            self.bytes_out += sent
            record = self.workers.get(worker_id)
            if record is not None:
                record.last_seen = time.time()

    def record_pull(self, worker_id: int, version: int) -> None:
        with self._lock:
            self.pulls += 1
            record = self.workers.get(worker_id)
            if record is not None:
                record.last_version = version

    def record_push(
        self, worker_id: int, stale: int, accepted: bool, base_version: int | None = None
    ) -> None:
        with self._lock:
            record = self.workers.get(worker_id)
            if accepted:
                self.pushes += 1
                self.staleness[staleness_bucket(stale)] += 1
                self.staleness_counts[stale] += 1
            else:
                self.refused += 1
            if record is not None:
                if base_version is not None:
                    record.last_version = max(record.last_version, base_version)
                if accepted:
                    record.pushes += 1
                else:
                    record.refused += 1

    def snapshot(
        self, version: int, counters: dict[str, int] | None = None, *, mark: bool = False
    ) -> dict[str, Any]:
        """A JSON-able view; rates over the whole run and since the last ``mark=True`` snapshot."""
        now = time.time()
        monotonic = time.monotonic()
        with self._lock:
            elapsed = max(monotonic - self._started_monotonic, 1e-9)
            last_time, last_pushes, last_in, last_out = self._last_rates
            window = max(monotonic - last_time, 1e-9)
            if mark:
                self._last_rates = (monotonic, self.pushes, self.bytes_in, self.bytes_out)
            workers = []
            for record in self.workers.values():
                entry = asdict(record)
                entry["seconds_since_seen"] = round(now - record.last_seen, 3)
                entry["lag"] = max(version - record.last_version, 0)
                workers.append(entry)
            return {
                "time": now,
                "uptime_s": round(elapsed, 3),
                "version": version,
                "pushes": self.pushes,
                "refused": self.refused,
                "pulls": self.pulls,
                "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out,
                "updates_per_s": round(self.pushes / elapsed, 3),
                "bytes_per_s": round((self.bytes_in + self.bytes_out) / elapsed, 1),
                "recent_updates_per_s": round((self.pushes - last_pushes) / window, 3),
                "recent_bytes_per_s": round(
                    (self.bytes_in + self.bytes_out - last_in - last_out) / window, 1
                ),
                "staleness_histogram": dict(self.staleness),
                "staleness_percentiles": staleness_percentiles(self.staleness_counts),
                "workers_connected": sum(record.connected for record in self.workers.values()),
                "workers": workers,
                "counters": dict(counters or {}),
            }


class MetricsLog:
    """Appends one JSON object per line; flushed after every line so ``tail -f`` works."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._handle: TextIO = open(path, "a", encoding="utf-8")  # noqa: SIM115

    def write(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()
