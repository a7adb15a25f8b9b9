"""``gridtrain apply --executor condor`` without a pool: the file groups, the jobs' command and
the submit description (golden text per built-in profile, parsed by the htcondor2 bindings).

Set GRIDTRAIN_UPDATE_GOLDEN=1 to rewrite the golden files after an intended change, then review
the diff. The cluster itself runs on the test pool (tests/pool/test_pool_apply.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import Counter
from pathlib import Path

import pytest

from gridtrain.apply.engines import ModelRef, RunModels
from gridtrain.apply.grid import GridSummary, JobsProgress, job_command, job_environment
from gridtrain.apply.scoring import ApplySettings
from gridtrain.condor.apply_jobs import (
    ApplyJobs,
    file_groups,
    render_apply_description,
    write_group_lists,
)
from gridtrain.condor.site import builtin_profiles, load_profile
from gridtrain.condor.submit import htcondor
from gridtrain.errors import ConfigError
from gridtrain.jobstate import JobState

GOLDEN = Path(__file__).with_name("golden")
RUN = Path("/data/runs/example")
OUT = Path("/data/scores")
FILES = [f"/data/nano/file{k}.root" for k in range(5)]


def settings(**changes: object) -> ApplySettings:
    model = RunModels("onnx", RUN, (ModelRef("onnx", RUN, RUN / "export/model.onnx", "0" * 64),))
    return dataclasses.replace(ApplySettings(model=model, out=OUT), **changes)  # type: ignore[arg-type]


def example_jobs() -> ApplyJobs:
    return ApplyJobs(
        log_dir=OUT / "condor",
        groups=file_groups(FILES, 2),
        command=job_command(settings(), None, 1),
        label=str(OUT),
        environment={"KERAS_BACKEND": "jax"},
        venv=Path("/opt/gridtrain/.venv"),
        wheel=OUT / "condor" / "gridtrain-0.1.0-py3-none-any.whl",  # profiles that ship it
        wrapper=Path("/opt/gridtrain/jobs/worker.sh"),
    )


def test_file_groups_deal_the_files_as_grouped_conversion_does() -> None:
    assert file_groups(FILES, 2) == [FILES[0::3], FILES[1::3], FILES[2::3]]
    assert file_groups(FILES, 1) == [[f] for f in FILES]
    assert file_groups(FILES, 10) == [FILES]
    for per_job in range(1, 7):
        groups = file_groups(FILES, per_job)
        assert sorted(f for g in groups for f in g) == FILES  # each file in one group
        assert max(map(len, groups)) <= per_job
    with pytest.raises(ConfigError, match="--files-per-job 0: give 1 or more"):
        file_groups(FILES, 0)


def test_the_jobs_run_this_apply_on_their_group() -> None:
    plain = job_command(settings(), None, 4)
    assert plain == [
        "python3", "-m", "gridtrain", "apply", str(RUN), "--files-from", "group-$(ProcId).txt",
        "--out", str(OUT), "--engine", "onnx", "--format", "ttree", "--threads", "4",
    ]  # fmt: skip
    every = job_command(
        settings(tree="Jets", selection=True, keep=("nJet", "MET_pt"), format="rntuple"),
        Path("/data/exports/v2"),
        1,
    )
    assert every[len(plain) :] == [
        "--export-dir", "/data/exports/v2", "--tree", "Jets", "--selection",
        "--keep", "nJet", "MET_pt",  # last: it takes every name after it
    ]  # fmt: skip
    assert every[every.index("--format") + 1] == "rntuple"
    with pytest.raises(ConfigError, match="a space or a quote cannot go into a job's arguments"):
        job_command(settings(out=Path("/data/my scores")), None, 1)


def test_keras_jobs_get_the_runs_backend_and_onnx_jobs_no_keras(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "worker.json").write_text(json.dumps({"settings": {"backend": "jax"}}))
    model = ModelRef("keras", run, run / "model.keras", "0" * 64)
    keras = ApplySettings(model=RunModels("keras", run, (model,)), out=OUT)
    assert job_environment(keras) == {"KERAS_BACKEND": "jax"}
    assert job_environment(settings()) == {}  # ONNX


@pytest.mark.parametrize("name", builtin_profiles())
def test_rendered_description_matches_golden_and_parses(name: str) -> None:
    profile = load_profile(name)
    jobs = example_jobs()
    text = render_apply_description(profile, jobs)
    golden = GOLDEN / f"apply-{name}.sub"
    if os.environ.get("GRIDTRAIN_UPDATE_GOLDEN"):
        golden.write_text(text)
        pytest.fail(f"rewrote {golden}: review the diff, then run again without the variable")
    assert text == golden.read_text()

    submit = htcondor().Submit(text)
    assert submit.getQArgs().strip() == "3"  # ONE cluster: queue 3, $(ProcId) picks the group
    arguments = submit["arguments"].split()
    assert arguments[:4] == ["apply-g$(ProcId)", "$(ProcId)", "--", "python3"]
    assert "group-$(ProcId).txt" in arguments
    inputs = submit["transfer_input_files"].split(", ")
    assert inputs[0] == str(OUT / "condor" / "group-$(ProcId).txt")
    assert inputs[1:] == profile.environment.files(jobs.wheel)
    assert submit["log"] == str(OUT / "condor" / "apply.log")
    assert submit["checkpoint_exit_code"] == "85"  # the wrapper's exit after an eviction
    assert submit["max_retries"] == str(profile.max_retries)
    assert submit["request_cpus"] == str(profile.request_cpus)
    assert submit.get("request_gpus") is None  # scoring asks for no GPU, whatever training does
    assert "CUDACapability" not in submit.get("requirements", "")
    assert "KERAS_BACKEND=jax" in submit["environment"]
    assert submit["MY.GridtrainApply"] == f'"{OUT}"'


def test_group_lists_are_written_one_file_per_line(tmp_path: Path) -> None:
    jobs = ApplyJobs(tmp_path / "condor", file_groups(FILES, 2), ["true"])
    written = write_group_lists(jobs)
    assert [p.name for p in written] == ["group-0.txt", "group-1.txt", "group-2.txt"]
    assert written[1].read_text().splitlines() == [FILES[1], FILES[4]]


def test_progress_and_summary_lines() -> None:
    states = Counter({JobState.DONE: 2, JobState.RUNNING: 1, JobState.IDLE: 1})
    progress = JobsProgress(17, 4, states, evicted=1, files=8, written=5)
    assert progress.line() == (
        "cluster 17: 4 jobs: 1 idle, 1 running, 2 done (1 run again); 5/8 files written"
    )
    summary = GridSummary(8, 2, events=600, seconds=3.0, cluster_id=17, jobs=4, evicted=1)
    assert summary.line() == (
        "8 files (2 finished already, skipped), 600 events scored in 3.0 s (200 events/s) by "
        "cluster 17 (4 jobs, 1 run again), every output verified"
    )
    nothing_left = GridSummary(1, 1).line()  # every output verified before: nothing submitted
    assert nothing_left == (
        "1 files (1 finished already, skipped), 0 events scored in 0.0 s (0 events/s), every "
        "output verified"
    )
