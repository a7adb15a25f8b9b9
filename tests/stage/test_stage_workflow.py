"""Rule stage: asked for by name, it pushes the converted dataset to stage.url."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gridtrain.data.manifest import load_manifest, verify_local

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def workdir(tmp_path: Path, url: str | None) -> Path:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["toy"]["events"] = 2000
    config["dataset"]["shard_events"] = 500
    config["stage"] = {"url": url, "timeout": 3, "retries": 1}
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    shutil.copytree(REPO / "profiles", tmp_path / "profiles")
    return tmp_path


def snakemake(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(work)]
    command += ["--profile", "profiles/local", *args]
    return subprocess.run(
        command, cwd=work, capture_output=True, text=True, timeout=300, check=False
    )


def test_default_target_does_not_stage(tmp_path):
    dry = snakemake(workdir(tmp_path, None), "-n")
    assert dry.returncode == 0, dry.stderr
    assert "rule stage" not in dry.stdout


@pytest.mark.xrootd
@pytest.mark.slow
def test_rule_stage_pushes_the_dataset_to_the_server(xrootd_server, area, tmp_path):
    work = workdir(tmp_path, xrootd_server.url(area))
    run = snakemake(work, "stage")
    assert run.returncode == 0, run.stderr[-3000:]
    remote = xrootd_server.local(area)
    manifest = load_manifest(remote)
    assert manifest.events("train") + manifest.events("validation") == 2000
    assert verify_local(manifest, remote) == []
    assert "pushed" in (work / "logs" / "stage.log").read_text()


def test_rule_stage_without_a_url_fails_with_the_way_out(tmp_path):
    work = workdir(tmp_path, None)
    run = snakemake(work, "stage")
    assert run.returncode != 0
    assert "rule stage needs stage.url" in (work / "logs" / "stage.log").read_text() + run.stderr
    assert (work / "results" / "toy" / "dataset" / "manifest.json").exists()  # convert ran
