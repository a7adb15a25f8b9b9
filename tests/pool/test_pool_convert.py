"""Grid-parallel conversion on the pool: `snakemake --profile profiles/htcondor`.

The toy samples, cut into 3 files each, are converted with ``dataset.files_per_job: 2``: two
groups, each a job that snakemake-executor-plugin-htcondor submits to the one-machine pool, where
it runs as the pool's user; rule gather then writes the dataset's manifest here. This process
runs as root and the jobs as the pool user, so files the jobs wrote belong to that user: proof
that they ran on the pool. The run folder is created with umask 0, so both can write in it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pool_helpers import Pool

from gridtrain.data.manifest import load_manifest, verify_local
from gridtrain.data.toy import write_toy_dataset
from tests.conftest import split_toy

pytestmark = [pytest.mark.htcondor, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))
EVENTS = 6000


def test_conversion_groups_run_as_pool_jobs_and_gather_into_one_manifest(pool: Pool) -> None:
    import htcondor2

    work = pool.runs / f"convert-{os.getpid()}-0"
    shutil.rmtree(work, ignore_errors=True)
    old_umask = os.umask(0)
    try:
        (work / "config").mkdir(parents=True)
        files = split_toy(write_toy_dataset(work / "toy", EVENTS, seed=3)[0].parent, work / "in", 3)
    finally:
        os.umask(old_umask)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for sample in config["dataset"]["samples"]:
        sample["files"] = files[sample["name"]]
    config["dataset"].update(files_per_job=2, shard_events=1000)  # groups: files 0, 2 | file 1
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    shutil.copytree(REPO / "profiles", work / "profiles")

    manifest_path = work / config["dataset"]["outdir"] / "manifest.json"
    run = subprocess.run(
        [
            SNAKEMAKE, str(manifest_path.relative_to(work)),
            "-s", str(REPO / "Snakefile"), "-d", str(work),
            "--profile", "profiles/htcondor", "--seconds-between-status-checks", "1",
            "--set-threads", "convert_group=1",  # both groups at once on the pool's 2 cores
        ],
        cwd=work, capture_output=True, text=True, timeout=300, check=False, umask=0,
    )  # fmt: skip
    jobdir = work / ".snakemake" / "htcondor"
    assert run.returncode == 0, run.stderr[-4000:] + "".join(
        p.read_text()[-2000:] for p in jobdir.glob("convert_group/*.err")
    )
    output = run.stdout + run.stderr
    assert output.count("rule convert_group:") == 2
    assert "rule gather:" in output

    # The group jobs ran on the pool, as its user: the plugin's event log saw two clusters
    # terminate normally, each group's files belong to the pool user, and so says its log.
    events = htcondor2.JobEventLog(str(jobdir / "snakemake-rules.log")).events(stop_after=0)
    ends = {e.cluster: e for e in events if e.type == htcondor2.JobEventType.JOB_TERMINATED}
    assert len(ends) == 2
    assert all(e["TerminatedNormally"] and e["ReturnValue"] == 0 for e in ends.values())
    assert len(list(jobdir.glob("convert_group/convert_group-*.out"))) == 2
    for k in range(2):
        group = manifest_path.parent / "groups" / f"g000{k}"
        assert (group / "manifest.json").stat().st_uid == pool.uid
        assert all(shard.stat().st_uid == pool.uid for shard in group.glob("*.h5"))
        assert f"as uid {pool.uid}" in (work / "logs" / "convert" / f"g000{k}.log").read_text()
    assert manifest_path.stat().st_uid == 0  # gather is a local rule: it ran here

    manifest = load_manifest(manifest_path)
    assert manifest.events("train") + manifest.events("validation") == EVENTS
    assert verify_local(manifest, manifest_path.parent) == []
    shard_groups = {e.path.split("/")[1] for v in manifest.shards.values() for e in v}
    assert shard_groups == {"g0000", "g0001"}
    assert sorted(s.path for s in manifest.sources) == sorted(p for v in files.values() for p in v)
