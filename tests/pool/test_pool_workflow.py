"""The whole chain with the condor profile: toy, convert, stage to XRootD, train on pool jobs.

``snakemake --profile profiles/local-pool`` on the toy dataset: the rules run here, the
parameter server in rule train, and the two workers are GPU-requesting jobs on the one-machine
pool that read their shards from the local xrootd server, not from this host's disk.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml
from pool_helpers import Pool

from gridtrain.condor.record import JobsRecord
from gridtrain.rundir import RunDir

pytestmark = [pytest.mark.htcondor, pytest.mark.xrootd, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def test_snakemake_with_the_condor_profile_trains_on_pool_jobs_from_xrootd(
    pool: Pool, xrootd_server, area
) -> None:
    work = pool.runs / f"workflow-{os.getpid()}-0"
    shutil.rmtree(work, ignore_errors=True)
    (work / "config").mkdir(parents=True)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["toy"]["events"] = 6000
    config["dataset"]["shard_events"] = 1000
    config["stage"] = {"url": xrootd_server.url(area), "timeout": 5}
    config["train"].update(epochs=2, batch_size=128)
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    shutil.copytree(REPO / "profiles", work / "profiles")

    command = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(work)]
    run = subprocess.run(
        [*command, "--profile", "profiles/local-pool"],
        cwd=work, capture_output=True, text=True, timeout=900, check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    train_log = work / "logs" / "train.log"
    assert run.returncode == 0, run.stderr[-4000:] + (
        train_log.read_text()[-3000:] if train_log.exists() else ""
    )
    for rule in ("toy", "convert", "stage", "train", "report"):
        assert f"rule {rule}:" in run.stdout + run.stderr

    run_dir = work / config["train"]["run_dir"]
    assert (run_dir / "model.keras").is_file()
    assert all((run_dir / "plots" / f"{name}.png").is_file() for name in ("roc", "staleness"))
    spec = json.loads((run_dir / "worker.json").read_text())
    assert spec["settings"]["executor"] == "condor"  # from the profile's config
    assert all(url.startswith(xrootd_server.url(area)) for url in spec["locations"].values())

    [cluster] = JobsRecord.load(RunDir(run_dir).condor_jobs).clusters  # one cluster, both workers
    assert cluster.count == 2
    for index in range(2):
        out = (run_dir / "condor" / f"{run_dir.name}-w{index}.out").read_text()
        assert f"as {pool.user} " in out  # a job on the pool, not a local process
        assert "CUDA_VISIBLE_DEVICES=GPU-" in out  # it asked for, and got, a (simulated) GPU
        assert "worker exited 0" in out

    leases = [json.loads(line) for line in (run_dir / "leases.jsonl").read_text().splitlines()]
    trained = Counter(
        (r["epoch"], r["shard"])
        for r in leases
        if r["event"] == "completed" and r["kind"] == "train"
    )
    train_shards = [entry["path"] for entry in spec["manifest"]["shards"]["train"]]
    assert trained == Counter((epoch, shard) for epoch in range(2) for shard in train_shards)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["auc"] > 0.75
