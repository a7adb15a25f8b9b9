"""``gridtrain status`` and ``gridtrain cancel``: a run seen, or stopped, from its directory alone.

Layer: train, orchestration edge. Everything comes from the run directory (``gridtrain.rundir``:
driver.json, state.json, metrics.json), the running parameter server (authenticated with
ps.secret) and the run's executor, attached from the run directory: its ``status()`` and
``cancel()`` (for HTCondor: the jobs record, the event log and, where that is gone, the
schedd). So a new shell, a new login or a restarted submit host re-attaches to a run without the
process that started it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from gridtrain.errors import ConfigError, GridtrainError
from gridtrain.rundir import RunDir
from gridtrain.train.driver import TrainingFailed, attach_executor, running_driver
from gridtrain.train.kfold import fold_dirs, is_kfold
from gridtrain.train.settings import WorkerSpec


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _phase(files: RunDir, driver: dict[str, Any] | None) -> str:
    if driver is not None:
        return "training"
    if files.metrics.exists():
        return "finished"
    state = _read_json(files.state) or {}
    stopped = str(state.get("leases", {}).get("stopped", ""))
    if stopped.startswith("interrupted"):
        return "stopped"
    if files.driver.exists():
        return "lost"  # driver.json left by a driver that did not end cleanly
    return "prepared" if not files.state.exists() else "stopped"


def _ps_status(files: RunDir) -> dict[str, Any] | str:
    from gridtrain.ps import auth
    from gridtrain.ps.client import PSClient

    try:
        address = files.address.read_text().strip()
        secret = auth.read_secret_file(files.secret)
        with PSClient(address, secret, None, name="status", timeout=5.0) as ps:
            return {**ps.status(), "address": address}  # as the workers dial it
    except (OSError, GridtrainError) as err:
        return f"not reachable ({err})"


def run_status(run_dir: Path) -> dict[str, Any]:
    """Everything ``gridtrain status`` prints, as a dictionary (a k-fold run: its own phase and
    driver, and each fold's status under ``folds``)."""
    if is_kfold(run_dir):
        files = RunDir(run_dir.absolute())
        driver = running_driver(files)
        folds = [run_status(fold) for fold in fold_dirs(run_dir)]
        phase = "training" if driver is not None else "finished" if files.metrics.exists() else ""
        if not phase:
            phase = "stopped" if any(f["phase"] != "prepared" for f in folds) else "prepared"
        return {"run_dir": str(files.path), "phase": phase, "driver": driver, "folds": folds}
    files = RunDir(run_dir.absolute())
    if not files.spec.exists():
        raise ConfigError(
            f"{run_dir}: no run here (no {files.spec.name}); start one with gridtrain train"
        )
    settings = WorkerSpec.read(files.spec).settings
    driver = running_driver(files)
    status: dict[str, Any] = {
        "run_dir": str(files.path),
        "phase": _phase(files, driver),
        "executor": settings.executor,
        "epochs": settings.epochs,
        "workers_asked": settings.workers,
        "driver": driver or _read_json(files.driver),
    }
    if status["phase"] == "training":
        status["ps"] = _ps_status(files)
    state = _read_json(files.state)
    if state is not None:
        status["stopped"] = state.get("leases", {}).get("stopped", "")
    metrics = _read_json(files.metrics)
    if metrics is not None:
        status["metrics"] = {k: metrics.get(k) for k in ("auc", "loss", "epochs", "wall_time_s")}
    status["jobs"] = attach_executor(settings.executor, files.path).status()
    return status


def format_status(status: dict[str, Any]) -> str:
    if "folds" in status:
        return _format_folds(status)
    run_dir, phase = status["run_dir"], status["phase"]
    driver = status.get("driver") or {}
    head = f"run {run_dir}: {phase}"
    if phase == "training":
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(driver.get("started", 0)))
        head += f" (driver pid {driver['pid']} on {driver['host']} since {started})"
    head += f", executor {status['executor']}, {status['workers_asked']} workers"
    lines = [head]
    ps = status.get("ps")
    if isinstance(ps, str):
        lines.append(f"  parameter server: {ps}")
    elif isinstance(ps, dict):
        leases = ps.get("leases") or {}
        latest = leases.get("latest_validation") or {}
        parts = [
            f"epoch {leases.get('epoch', 0) + 1}/{leases.get('epochs', status['epochs'])}",
            f"shards {leases.get('shards_done', '?')}/{leases.get('shards_total', '?')}",
            f"{ps['workers_connected']} workers connected",
            f"{ps['updates_per_s']:.1f} updates/s",
        ]
        if "auc" in latest:
            parts.append(f"last validation AUC {latest['auc']:.4f} (epoch {latest['epoch'] + 1})")
        elif "loss" in latest:  # a regression
            parts.append(f"last validation loss {latest['loss']:.4f} (epoch {latest['epoch'] + 1})")
        lines.append(f"  parameter server {ps.get('address', '?')}: " + ", ".join(parts))
    metrics = status.get("metrics")
    if phase == "finished" and metrics:
        scores = ", ".join(
            f"{name} {metrics[key]:.4f}"
            for name, key in (("validation AUC", "auc"), ("loss", "loss"))
            if isinstance(metrics.get(key), (int, float))
        )
        lines.append(
            f"  {scores or 'no validation'} after {metrics['epochs']} epochs in "
            f"{metrics['wall_time_s']:.0f} s (model.keras)"
        )
    elif phase == "stopped":
        lines.append(
            f"  {status.get('stopped') or 'stopped'}; continue with gridtrain train --resume "
            f"{run_dir}"
        )
    elif phase == "lost":
        lines.append(
            f"  the driver (pid {driver.get('pid')} on {driver.get('host')}) ended without "
            "stopping the run (killed, or the host restarted); continue from its last "
            f"checkpoint with gridtrain train --resume {run_dir}"
        )
    jobs = status.get("jobs")
    if jobs:
        lines.append(f"  worker jobs ({'; '.join(jobs['sources'])}):")
        for worker in jobs["workers"]:
            detail = ""
            if worker["state"] == "held":
                detail = f"  hold code {worker['hold_reason_code']}: {worker['hold_reason']}"
            elif worker.get("removed"):
                detail = "  removed"
            elif worker.get("return_value") not in (None, 0):
                detail = f"  exit {worker['return_value']}"
            again = f", resubmitted {worker['resubmissions']}x" if worker["resubmissions"] else ""
            lines.append(
                f"    {worker['name']:<24} job {worker['job']:<9} {worker['state']:<8} "
                f"attempts {worker['attempts']}{again}{detail}"
            )
        sites = jobs.get("sites") or {}
        if sites.get("excluded"):
            failures = sites.get("failures", {})
            excluded = [f"{s} ({failures.get(s, 0)} failed)" for s in sites["excluded"]]
            lines.append(f"  sites excluded: {', '.join(excluded)}")
    return "\n".join(lines)


def _format_folds(status: dict[str, Any]) -> str:
    folds = status["folds"]
    head = f"k-fold run {status['run_dir']}: {status['phase']}, {len(folds)} folds"
    driver = status.get("driver")
    if driver:
        head += f" (driver pid {driver['pid']} on {driver['host']})"
    lines = [head]
    for fold in folds:
        lines.extend("  " + line for line in format_status(fold).splitlines())
    if status["phase"] == "stopped":
        lines.append(f"  continue every fold with gridtrain train --resume {status['run_dir']}")
    return "\n".join(lines)


def cancel(run_dir: Path, *, timeout: float = 120.0) -> str:
    """Stop the run's driver (checkpoint, PS stopped, jobs removed) and remove any queued job.
    For a k-fold run: its driver, then every fold's."""
    if is_kfold(run_dir):
        return _cancel_folds(run_dir, timeout)
    files = RunDir(run_dir.absolute())
    if not files.spec.exists():
        raise ConfigError(f"{run_dir}: no run here (no {files.spec.name}); nothing to cancel")
    done = _stop_driver(files, run_dir, timeout)
    settings = WorkerSpec.read(files.spec).settings
    removed = attach_executor(settings.executor, files.path).cancel()
    if removed:
        done.append(f"removed {removed} queued worker job(s)")
    if not done:
        return f"gridtrain cancel: {run_dir}: nothing to cancel (no driver running, no job queued)"
    return f"gridtrain cancel: {'; '.join(done)}; continue with gridtrain train --resume {run_dir}"


def _stop_driver(files: RunDir, run_dir: Path, timeout: float) -> list[str]:
    """SIGTERM the running driver of ``files`` and wait until it has checkpointed and gone."""
    driver = running_driver(files)
    if driver is None:
        return []
    pid = int(driver["pid"])
    if driver["host"] != socket.gethostname():
        raise GridtrainError(
            f"{run_dir}: its driver runs on {driver['host']} (pid {pid}); run gridtrain "
            "cancel there"
        )
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while running_driver(files) is not None:
        if time.monotonic() > deadline:
            raise TrainingFailed(
                f"the driver (pid {pid}) did not stop within {timeout:g} s; see "
                f"{files.driver_log}, or kill -9 {pid} and run gridtrain cancel again"
            )
        time.sleep(0.2)
    return [f"stopped the driver (pid {pid}), which checkpointed the run"]


def _cancel_folds(run_dir: Path, timeout: float) -> str:
    done = [
        f"k-fold: {line}" for line in _stop_driver(RunDir(run_dir.absolute()), run_dir, timeout)
    ]
    for fold in fold_dirs(run_dir):
        said = cancel(fold, timeout=timeout)
        if "nothing to cancel" not in said:
            done.append(
                f"{fold.name}: {said.removeprefix('gridtrain cancel: ').split('; continue')[0]}"
            )
    if not done:
        return f"gridtrain cancel: {run_dir}: nothing to cancel (no driver running, no job queued)"
    return f"gridtrain cancel: {'; '.join(done)}; continue with gridtrain train --resume {run_dir}"
