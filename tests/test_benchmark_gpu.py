"""benchmarks/gpu.py runs on the CPU as a check of the script (``--cpu --quick``): the GPU nodes it
is written for are not where the tests run, so every path it takes there is taken here too, on
the smallest sizes, and its figures come back as JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_benchmark_runs_on_the_cpu_and_reports_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    script = [sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--cpu", "--quick"]
    done = subprocess.run(
        [*script, "--backends", "torch", "--work", str(tmp_path / "work"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())["results"]["torch"]
    assert set(results["runs"]) == {"fit", "gridtrain-1"}  # the plain baseline and 1 worker
    for run in results["runs"].values():
        assert run["events_per_s"] > 0
        assert run["final_auc"] > 0.55  # both learn: the toy separates within one epoch
        assert run["gpu_util_mean"] is None  # no GPU sampled on the CPU
    assert results["runs"]["gridtrain-1"]["ps_share"] is not None
    assert results["pipeline"]["events_per_s"] > results["runs"]["gridtrain-1"]["events_per_s"]
    assert "fit / gridtrain-1 events/s:" in done.stdout
    assert "data pipeline alone" in done.stdout
