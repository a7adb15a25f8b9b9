"""The suite's own machinery: the pool's tests stay together under pytest-xdist."""

from __future__ import annotations

import pytest

from tests.conftest import POOL_UNIT, first_out, pytest_xdist_make_scheduler, unit_of_work


def test_the_pool_tests_are_one_unit_of_work_and_the_rest_go_by_module() -> None:
    pool = [
        "tests/pool/test_pool_jobs.py::test_one_cluster_runs_as_the_job_user_and_reaches_done",
        "tests/pool/test_pool_doctor.py::test_doctor_is_green_on_the_pool_and_names_what_fails",
        "tests/pool/test_pool_training.py::test_evicted_workers_come_back[x]",
    ]
    assert {unit_of_work(nodeid) for nodeid in pool} == {POOL_UNIT}
    others = ["tests/ps/test_ps_wire.py::test_a", "tests/ps/test_ps_wire.py::test_b[pool]"]
    assert {unit_of_work(nodeid) for nodeid in others} == {"tests/ps/test_ps_wire.py"}
    assert unit_of_work("tests/ps/test_ps_server.py::test_a") == "tests/ps/test_ps_server.py"
    apply = ["tests/apply/test_apply.py::test_a", "tests/apply/test_apply_errors.py::test_b"]
    assert {unit_of_work(nodeid) for nodeid in apply} == {"tests/apply/"}  # trains its runs once
    units = ["tests/ps/test_ps_wire.py", "tests/train/test_train_runs.py", POOL_UNIT]
    assert sorted(units, key=first_out, reverse=True) == units[::-1]


def test_the_scheduler_is_ours_only_under_loadgroup(pytestconfig: pytest.Config) -> None:
    if pytestconfig.getvalue("dist") != "loadgroup":
        assert pytest_xdist_make_scheduler(pytestconfig, None) is None
    else:  # running under make test: the scheduler xdist uses is the pool-aware one
        assert pytestconfig.pluginmanager.hasplugin("xdist")
