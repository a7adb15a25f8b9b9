"""Helpers for gridtrain serve's tests: configs over the toy dataset, a service subprocess."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import toy_section


def toy_config(toy_dir: Path, dataset: Path, **train: Any) -> dict[str, Any]:
    """A config over the converted toy dataset: one worker, a tiny MLP, ``train`` overrides."""
    section: dict[str, Any] = {
        "epochs": 2,
        "workers": 1,
        "batch_size": 256,
        "seed": 3,
        "model": {"name": "mlp", "params": {"hidden": [16]}},
    }
    section.update(train)
    return {"dataset": toy_section(toy_dir, dataset), "train": section}


def toy_yaml(toy_dir: Path, dataset: Path, **train: Any) -> str:
    return yaml.safe_dump(toy_config(toy_dir, dataset, **train), sort_keys=False)


SERVE = [sys.executable, "-m", "gridtrain", "serve"]
# What the service prints once it listens: the login link on a terminal, otherwise its address
# (the link, which holds the token, is then in ROOT/.serve-login).
STARTED = re.compile(r"(?:open|listening on) (https?://[^/\s]+)/")


class Service:
    """``gridtrain serve --root ROOT --port 0`` as a subprocess; ``url`` once it listens."""

    def __init__(self, root: Path, *args: str) -> None:
        self.root = root
        self.args = args
        self.process: subprocess.Popen[str] | None = None
        self.url = ""
        self.log = root.parent / f"serve-{root.name}.log"

    @property
    def token(self) -> str:
        return (self.root / ".serve-token").read_text().strip()

    def start(self) -> Service:
        self.root.mkdir(parents=True, exist_ok=True)
        log = self.log
        with open(log, "w") as out:  # a file, not a pipe: a full pipe would block the service
            self.process = subprocess.Popen(
                [*SERVE, "--root", str(self.root), "--port", "0", *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.process.poll() is None:
            found = STARTED.search(log.read_text())
            if found:
                self.url = found.group(1)
                return self
            time.sleep(0.1)
        self.stop()
        raise AssertionError("gridtrain serve did not start:\n" + log.read_text())

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def cancel_all(self) -> None:
        """Stop every training still running under the root (the drivers outlive the service)."""
        from gridtrain.rundir import RunDir
        from gridtrain.train.driver import running_driver
        from gridtrain.train.status import cancel

        for path in self.root.iterdir():
            files = RunDir(path)
            if files.spec.exists() and running_driver(files) is not None:
                cancel(path, timeout=60)
