"""Rendered submit descriptions: golden text per profile, parsed by the htcondor2 bindings.

Set GRIDTRAIN_UPDATE_GOLDEN=1 to rewrite the golden files after an intended change, then review
the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gridtrain.cli import main
from gridtrain.condor.render import WorkerJobs, job_items, render_submit_description
from gridtrain.condor.site import builtin_profiles, load_profile
from gridtrain.condor.submit import htcondor
from gridtrain.errors import ConfigError

GOLDEN = Path(__file__).with_name("golden")
RUN = Path("/data/runs/example")
SECRET = "0123456789abcdef-not-in-any-ad"


def example_jobs(count: int = 3) -> WorkerJobs:
    return WorkerJobs(
        run_dir=RUN,
        address="10.0.0.5:9600",
        count=count,
        spec=RUN / "worker.json",
        secret_file=RUN / "ps.secret",
        venv=Path("/opt/gridtrain/.venv"),
        wheel=RUN / "condor" / "gridtrain-0.1.0-py3-none-any.whl",  # profiles that ship it
        wrapper=Path("/opt/gridtrain/jobs/worker.sh"),
    )


PROFILE_NAMES = builtin_profiles()


@pytest.mark.parametrize("name", PROFILE_NAMES)
def test_rendered_description_matches_golden_and_parses(name: str) -> None:
    text = render_submit_description(load_profile(name), example_jobs())
    golden = GOLDEN / f"{name}.sub"
    if os.environ.get("GRIDTRAIN_UPDATE_GOLDEN"):
        golden.write_text(text)
        pytest.fail(f"rewrote {golden}: review the diff, then run again without the variable")
    assert text == golden.read_text()

    submit = htcondor().Submit(text)
    profile = load_profile(name)
    assert submit["request_gpus"] == str(profile.request_gpus)
    assert submit["gpus_minimum_capability"] == str(profile.gpus_minimum_capability)
    assert submit["checkpoint_exit_code"] == "85"
    assert submit["when_to_transfer_output"] == "ON_EXIT_OR_EVICT"
    assert submit["max_retries"] == str(profile.max_retries)
    assert "HoldReasonCode" in submit["periodic_release"]
    assert submit["log"] == str(RUN / "condor" / "workers.log")
    inputs = submit["transfer_input_files"].split(", ")
    assert inputs[:2] == [str(RUN / "worker.json"), str(RUN / "ps.secret")]
    assert inputs[2:] == profile.environment.files(example_jobs().wheel)
    assert "worker_index" in submit.getQArgs()
    items = list(submit.itemdata())
    assert [item["worker_index"] for item in items] == ["0", "1", "2"]
    assert [item["worker_name"] for item in items] == ["example-w0", "example-w1", "example-w2"]
    assert "secret" not in submit["environment"].lower()


def test_items_follow_the_worker_index() -> None:
    jobs = WorkerJobs(RUN, "h:1", 2, RUN / "w.json", RUN / "s", first_index=4)
    assert job_items(jobs) == [
        {"worker_index": "4", "worker_name": "example-w4"},
        {"worker_index": "5", "worker_name": "example-w5"},
    ]


def test_profile_errors_name_the_file_and_the_way_out(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="local-pool"):
        load_profile("no-such-profile")
    (tmp_path / "condor.yaml").write_text("request_gpu: 1\n")
    with pytest.raises(ConfigError, match=r"unknown key.*request_gpu"):
        load_profile(tmp_path)
    with pytest.raises(ConfigError, match="at least one worker"):
        render_submit_description(load_profile("local-pool"), example_jobs(count=0))


def test_dry_run_prints_the_description_and_the_job_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "ps.address").write_text("192.168.1.7:9650\n")
    (run / "ps.secret").write_text(SECRET)
    assert main(["submit", "--dry-run", str(run), "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "GRIDTRAIN_PS_ADDRESS=192.168.1.7:9650" in out
    assert "queue worker_index, worker_name from (" in out
    assert f"# 1     1             run-w1  {run / 'condor' / 'run-w1.out'}" in out
    assert SECRET not in out
    description = out.split("\n# 2 job(s)")[0]
    assert len(list(htcondor().Submit(description).itemdata())) == 2
    assert not (run / "condor").exists()  # nothing submitted, nothing written
