"""``gridtrain doctor`` on the real pool: all green, then the failing checks named when it stops."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pool_helpers import Pool

pytestmark = [pytest.mark.htcondor, pytest.mark.xrootd]

REPO = Path(__file__).resolve().parents[2]


def doctor(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gridtrain", "doctor", "-c", str(config), "--profile", "local-pool"],
        capture_output=True, text=True, timeout=120, check=False, env=dict(os.environ),
    )  # fmt: skip


def test_doctor_is_green_on_the_pool_and_names_what_fails_when_it_stops(
    pool: Pool, xrootd_server, area, tmp_path: Path
) -> None:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["stage"] = {"url": xrootd_server.url(area), "timeout": 3}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))

    green = doctor(path)
    assert green.returncode == 0, green.stdout + green.stderr
    assert "7 of 7 checks passed" in green.stdout
    lines = {line.split()[1]: line for line in green.stdout.splitlines()[1:-1]}
    assert "has tensorflow and keras (train.backend: tensorflow)" in lines["backend"]
    assert "adler32 on" in lines["xrootd"]
    assert "1 of 1 slots can run a worker" in green.stdout  # the two simulated V100s
    assert "reachable as 127.0.0.1:" in lines["ps"]

    pool.stop()
    try:
        red = doctor(path)
    finally:
        pool.start()
    assert red.returncode == 1
    failing = [line.split()[1] for line in red.stdout.splitlines() if "FAIL" in line]
    assert failing == ["schedd", "gpu"]  # the rest does not need the pool
    assert "failing: schedd, gpu match" in red.stdout
    assert "tests/pool/pool.sh start" in red.stdout
