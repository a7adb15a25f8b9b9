"""The Snakemake chain, run for real on a tiny toy dataset in a scratch folder."""

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


def workdir_with_config(tmp_path: Path, events: int) -> Path:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["toy"]["events"] = events
    config["dataset"]["shard_events"] = 1000
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    shutil.copytree(REPO / "profiles", tmp_path / "profiles")
    return tmp_path


def snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir)]
    command += ["--profile", "profiles/local", *args]
    return subprocess.run(
        command, cwd=workdir, capture_output=True, text=True, timeout=600, check=False
    )


def test_lint_and_dry_run(tmp_path):
    workdir = workdir_with_config(tmp_path, 2000)
    lint = snakemake(workdir, "--lint")
    assert lint.returncode == 0, lint.stderr
    assert "good condition" in lint.stdout + lint.stderr
    dry = snakemake(workdir, "-n")
    assert dry.returncode == 0, dry.stderr
    assert "toy" in dry.stdout
    assert "convert" in dry.stdout


@pytest.mark.slow
def test_the_chain_runs_from_toy_to_a_verified_dataset(tmp_path):
    workdir = workdir_with_config(tmp_path, 4000)
    run = snakemake(workdir)
    assert run.returncode == 0, run.stderr[-3000:]
    dataset = workdir / "results" / "toy" / "dataset"
    manifest = load_manifest(dataset)
    assert manifest.events("train") + manifest.events("validation") == 4000
    assert verify_local(manifest, dataset) == []
    assert "wrote" in (workdir / "logs" / "convert.log").read_text()
    again = snakemake(workdir)  # nothing to do the second time
    assert again.returncode == 0
    assert "Nothing to be done" in again.stdout + again.stderr
