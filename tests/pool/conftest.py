"""A real one-machine HTCondor pool for the tests in this folder (tests/pool/pool.sh).

Started once per session (built on first use, about a minute; reused afterwards) and stopped,
its mounts removed, at the end. Outside CI, a machine without root or apt-get skips these tests
with the reason; in CI (``CI=true``) they fail instead, as does a pool that does not start.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest
from pool_helpers import Pool, PoolError, pool_unavailable

from tests.conftest import in_ci
from tests.stage.conftest import area, xrootd_server  # noqa: F401 (fixtures for the workflow test)


@pytest.fixture(scope="session")
def pool() -> Iterator[Pool]:
    reason = pool_unavailable()
    if reason is not None:
        if in_ci():
            pytest.fail(f"CI must run the HTCondor pool tests, but {reason}")
        pytest.skip(reason)
    pool = Pool()
    try:
        pool.start()
    except PoolError as err:
        pool.stop()
        pytest.fail(f"the HTCondor test pool did not start: {err}")
    try:
        yield pool
    finally:
        for run in pool.runs.glob(f"*-{os.getpid()}-*"):
            shutil.rmtree(run, ignore_errors=True)
        pool.stop()
