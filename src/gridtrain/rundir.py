"""The files of one training run: one name for each, in one place.

Layer: foundation. Paths only: nothing here reads or writes a file (``directory_identity`` stats
one). The driver, the worker, finalize, the report, ``gridtrain status``, the HTCondor submission
(``gridtrain submit``, the condor executor) and the workflow's rules name a run's files through
``RunDir``.

    RUN_DIR/
      config.yaml       the config the run was started with (workers and model resolved)
      worker.json       the worker spec: manifest, settings, inputs, shard locations
      ps.secret         the parameter server's secret (mode 0600; never in a job ad)
      ps.address        HOST:PORT where the parameter server listens
      initial.npz       the model's initial weights
      checkpoint.npz    the center and its version, written every CHECKPOINT_INTERVAL
      state.json        the leases' resumable state
      best.npz          the center of the best validated epoch
      leases.jsonl      every lease granted, completed, released, expired
      history.jsonl     per shard and per epoch: loss, validation metrics, updates
      ps-metrics.jsonl  the parameter server's throughput and staleness
      driver.json       the driver's pid, host and command (a detached run)
      driver.log        the driver's log
      logs/             local workers' output, one file per worker
      condor/           HTCondor: the jobs record, event log (workers.log), job output
      model.keras       the trained model            (finalize)
      metrics.json      the final metrics            (finalize)
      roc.npz           the validation ROC curve     (finalize)
      plots/            the report's PNGs            (report)
      tensorboard/      TensorBoard event files: curves per epoch, final figures, hparams
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import overload


class _File:
    """A file of the run: ``run.model`` is ``run.path / "model.keras"``."""

    def __init__(self, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, run: None, owner: type) -> _File: ...
    @overload
    def __get__(self, run: RunDir, owner: type) -> Path: ...
    def __get__(self, run: RunDir | None, owner: type) -> Path | _File:
        return self if run is None else run.path / self.name


@dataclass(frozen=True)
class RunDir:
    """A run directory and the path of each of its files."""

    path: Path

    config = _File("config.yaml")
    spec = _File("worker.json")
    secret = _File("ps.secret")
    address = _File("ps.address")
    initial = _File("initial.npz")
    checkpoint = _File("checkpoint.npz")
    state = _File("state.json")
    best = _File("best.npz")
    leases = _File("leases.jsonl")
    history = _File("history.jsonl")
    ps_metrics = _File("ps-metrics.jsonl")
    driver = _File("driver.json")
    driver_log = _File("driver.log")
    logs = _File("logs")
    condor = _File("condor")
    model = _File("model.keras")
    metrics = _File("metrics.json")
    roc = _File("roc.npz")
    plots = _File("plots")

    @property
    def condor_jobs(self) -> Path:
        """The HTCondor jobs record: clusters, each worker's current job, excluded sites."""
        return self.condor / "jobs.json"

    @property
    def condor_event_log(self) -> Path:
        """The job event log that HTCondor writes for the run's worker jobs."""
        return self.condor / "workers.log"


def directory_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of ``path``, None if it is gone: a folder removed and made again under
    the same name is another one. The driver and the tuner compare it to notice their run
    directory removed under them."""
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_dev, status.st_ino
