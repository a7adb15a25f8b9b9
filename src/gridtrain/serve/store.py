"""The runs under ``--root``, read from their directories: the service's only source of truth.

Layer: serve. Reads files named by ``gridtrain.rundir`` and asks ``gridtrain.train`` whether a
driver holds a run; never writes into a run directory. A name is checked against ``RUN_NAME``
before it becomes a path, and a download is a file this module lists, so no request can reach a
file outside a known run. No link is followed: a run folder that is a symbolic link is no run, nor
is one whose worker.json, driver.json, state.json, ps.address, ps.secret or condor/ is a link
(status, cancel and resume read them), and a file is read or served only when its real path
(``os.path.realpath``, every link followed) is the path itself under the real ``--root``, so a link
planted in a run (plots/x.png to ~/.ssh/id_rsa, model.keras to ps.secret, export/ to another
folder) is neither listed nor served.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from gridtrain.errors import ConfigError
from gridtrain.rundir import RunDir
from gridtrain.serve.schemas import Progress, RunSummary
from gridtrain.serve.settings import RUN_NAME
from gridtrain.train.driver import DRIVER_LOCK, running_driver

EXPORT = "export"


class UnknownRun(ConfigError, LookupError):
    """No run of that name under --root."""


def own_file(path: Path) -> bool:
    """Whether ``path`` is a regular file reached through no symbolic link at all."""
    return os.path.realpath(path) == os.path.abspath(path) and os.path.isfile(path)


def own_dir(path: Path) -> bool:
    """Whether ``path`` is a folder reached through no symbolic link at all."""
    return os.path.realpath(path) == os.path.abspath(path) and os.path.isdir(path)


def _read_json(path: Path) -> Any:
    if not own_file(path):
        return None
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def read_history(files: RunDir) -> list[dict[str, Any]]:
    """history.jsonl's complete lines (a line being written is left for the next read)."""
    if not own_file(files.history):
        return []
    try:
        text = files.history.read_text()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.endswith("}")]


def phase(files: RunDir) -> str:
    """The phase ``gridtrain status`` reports, without asking the parameter server (from the
    run's own files: a driver.json or metrics.json that is a link counts as absent)."""
    if own_file(files.driver) and running_driver(files) is not None:
        return "training"
    if own_file(files.metrics):
        return "finished"
    stopped = str(((_read_json(files.state) or {}).get("leases") or {}).get("stopped", ""))
    if stopped.startswith("interrupted"):
        return "stopped"
    if own_file(files.driver):
        return "lost"  # driver.json left by a driver that did not end cleanly
    return "stopped" if files.state.exists() else "prepared"


class RunStore:
    """The run directories directly under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(os.path.realpath(root))
        self._shards: dict[str, tuple[int, int, str, int]] = {}  # name -> the spec's counts

    def files(self, name: str) -> RunDir:
        """The run called ``name``; ``UnknownRun`` when there is none."""
        if not RUN_NAME.fullmatch(name):
            raise UnknownRun(f"no run {name!r}: not a run name")
        files = RunDir(self.root / name)
        if not self.is_run(files):
            raise UnknownRun(f"no run {name!r} under {self.root}")
        return files

    @staticmethod
    def is_run(files: RunDir) -> bool:
        """A real folder (no link) with a real worker.json, and none of the files that status,
        cancel and resume read is a link: what the driver prepared (it writes each of them under
        a temporary name and renames it, so none is ever a link)."""
        if not (own_dir(files.path) and own_file(files.spec)):
            return False
        control = (files.driver, files.state, files.address, files.secret, files.condor_jobs)
        if any(os.path.lexists(path) and not own_file(path) for path in control):
            return False
        lock = files.path / DRIVER_LOCK
        return not (os.path.lexists(lock) and not own_file(lock)) and not (
            os.path.lexists(files.condor) and not own_dir(files.condor)
        )

    def names(self) -> list[str]:
        try:
            entries = list(os.scandir(self.root))
        except FileNotFoundError:
            return []
        return sorted(
            entry.name
            for entry in entries
            if RUN_NAME.fullmatch(entry.name) and self.is_run(RunDir(self.root / entry.name))
        )

    def _spec_counts(self, name: str, files: RunDir) -> tuple[int, int, str, int]:
        if name not in self._shards:
            spec = json.loads(files.spec.read_text())
            settings = spec["settings"]
            self._shards[name] = (
                len(spec["manifest"]["shards"].get("train", [])),
                int(settings["epochs"]),
                str(settings["executor"]),
                int(settings["workers"]),
            )
        return self._shards[name]

    def summary(self, name: str) -> RunSummary:
        files = self.files(name)
        shards, epochs, executor, workers = self._spec_counts(name, files)
        history = read_history(files)
        done = sum(1 for record in history if record.get("type") == "shard")
        ended = [record for record in history if record.get("type") == "epoch"]
        last = ended[-1] if ended else {}
        current = phase(files)
        metrics = _read_json(files.metrics) or {}
        total = max(shards * epochs, 1)
        progress = Progress(
            epoch=len(ended),
            epochs=epochs,
            shards_done=done,
            shards_total=shards * epochs,
            fraction=1.0 if current == "finished" else min(done / total, 1.0),
            train_loss=last.get("train_loss"),
            val_loss=last.get("val_loss"),
            val_auc=last.get("val_auc"),
        )
        auc = metrics.get("auc")
        return RunSummary(
            name=name,
            phase=current,
            executor=executor,
            workers=workers,
            progress=progress,
            auc=auc if isinstance(auc, int | float) else None,
            created=files.spec.stat().st_mtime,
            files=self.downloads(files),
        )

    def summaries(self) -> list[RunSummary]:
        found = []
        for name in self.names():
            try:
                found.append(self.summary(name))
            except (UnknownRun, FileNotFoundError):  # removed while listing
                continue
        return sorted(found, key=lambda run: run.created, reverse=True)

    @staticmethod
    def downloads(files: RunDir) -> list[str]:
        present = []
        if own_file(files.model):
            present.append("model")
        if own_dir(files.path / EXPORT):
            present.append("export")
        if own_dir(files.plots):
            present.append("plots")
        return present

    @staticmethod
    def plots(files: RunDir) -> list[str]:
        if not own_dir(files.plots):
            return []
        return sorted(p.name for p in files.plots.iterdir() if p.suffix == ".png" and own_file(p))

    @staticmethod
    def export_files(files: RunDir) -> dict[str, Path]:
        """Every regular file under RUN_DIR/export, by its path relative to that folder; links,
        and what lies below a linked folder, are left out."""
        folder = files.path / EXPORT
        if not own_dir(folder):
            return {}
        found = {}
        for top, _, names in os.walk(folder):  # does not descend into linked folders
            for name in names:
                path = Path(top) / name
                if own_file(path):
                    found[path.relative_to(folder).as_posix()] = path
        return dict(sorted(found.items()))
