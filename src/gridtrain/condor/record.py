"""The one persisted record of a run's HTCondor jobs: ``condor/jobs.json``.

Layer: batch-system, state on disk (read and written whole, through ``gridtrain.files``). As law
keeps its job-submission file: the clusters submitted (schedd, collector, event log), each
worker's current job and how often it was resubmitted, and the failures per site with the sites
excluded. ``gridtrain status``, ``gridtrain cancel`` and a resumed driver re-attach from it after
the submit host restarted; it never holds a secret.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gridtrain.condor.submit import Cluster
from gridtrain.files import write_text


@dataclass
class WorkerRecord:
    """One worker position: its name, its current job (``"17.0"``), its resubmissions."""

    index: int
    name: str
    job: str
    restarts: int = 0


@dataclass
class JobsRecord:
    clusters: list[Cluster] = field(default_factory=list)
    workers: list[WorkerRecord] = field(default_factory=list)
    site_failures: dict[str, int] = field(default_factory=dict)
    excluded_sites: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> JobsRecord:
        """The record at ``path``; an empty one when there is none yet."""
        if not path.is_file():
            return cls()
        data: Any = json.loads(path.read_text())
        if isinstance(data, list):  # before 0.2: the clusters only
            return cls(clusters=[Cluster(**entry) for entry in data])
        return cls(
            clusters=[Cluster(**entry) for entry in data.get("clusters", [])],
            workers=[WorkerRecord(**entry) for entry in data.get("workers", [])],
            site_failures=dict(data.get("site_failures", {})),
            excluded_sites=list(data.get("excluded_sites", [])),
        )

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text(path, json.dumps(asdict(self), indent=1) + "\n")

    def add_cluster(self, cluster: Cluster) -> None:
        self.clusters = [c for c in self.clusters if c.cluster_id != cluster.cluster_id]
        self.clusters.append(cluster)
