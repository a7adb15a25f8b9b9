"""Submission and removal of worker-job clusters.

Layer: batch-system edge, the only module that changes a schedd's queue. It submits through the
``htcondor2`` bindings (PyPI ``htcondor``) and falls back to the ``condor_submit`` command where
the bindings cannot be imported; every command goes through ``run_command``, which logs it and
raises ``CondorError`` with its exit code and output. It never renders or reads event logs.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from gridtrain.errors import CondorError

log = logging.getLogger(__name__)

SUBMIT_COMMAND = ("condor_submit",)
REMOVE_COMMAND = ("condor_rm",)
_TERSE = re.compile(r"^(\d+)\.(\d+)\s*-\s*(\d+)\.(\d+)\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Cluster:
    """One submitted cluster: its id, the number of jobs, and where it was submitted."""

    cluster_id: int
    count: int
    event_log: str
    schedd: str | None = None
    collector: str | None = None
    submitted: float = 0.0
    via: str = "bindings"


def _load_bindings() -> tuple[ModuleType | None, bool]:
    after_tensorflow = "tensorflow" in sys.modules
    try:
        with warnings.catch_warnings():
            # Without CONDOR_CONFIG the bindings warn and use /dev/null: fine for parsing only;
            # whoever sets CONDOR_CONFIG later calls htcondor2.reload_config().
            warnings.filterwarnings("ignore", message=".*CONDOR_CONFIG.*", category=UserWarning)
            import htcondor2
    except ImportError:
        return None, after_tensorflow
    return htcondor2, after_tensorflow


# Loaded at import, like the XRootD client in gridtrain.stage: loaded after TensorFlow, the
# bindings no longer find the local schedd ("Unable to locate local daemon"). Import
# gridtrain.condor.submit before TensorFlow.
_BINDINGS, _AFTER_TENSORFLOW = _load_bindings()


def htcondor() -> ModuleType:
    """The ``htcondor2`` bindings; ImportError when they are not installed."""
    if _BINDINGS is None:
        raise ImportError("htcondor2 is not installed: pip install 'htcondor>=24.5.1,<25'")
    return _BINDINGS


_NONE_FLOOR = 50_000


def keep_none_alive() -> None:
    """Top up the references to ``None`` that the bindings drop; call before each bindings call.

    ``htcondor2`` (seen with 24.12.24 and 25.14.1) releases references to ``None`` that it never
    took: about one per ``Schedd.submit`` and some per ``act``. Before Python 3.12, whose
    ``None`` is immortal, a few thousand submissions take its count to zero and the interpreter
    aborts ("Fatal Python error: none_dealloc"), at the latest when it exits. An extra reference
    to ``None`` is harmless, a missing one is fatal: below a floor, add enough for a hundred
    thousand more calls. They are taken with ``Py_IncRef`` rather than held in a container, so
    that they outlive the interpreter's own clean-up at exit.
    """
    if sys.version_info >= (3, 12) or sys.getrefcount(None) >= _NONE_FLOOR:
        return
    incref = ctypes.pythonapi.Py_IncRef
    incref.argtypes, incref.restype = [ctypes.py_object], None
    for _ in range(2 * _NONE_FLOOR):
        incref(None)


def run_command(command: Sequence[str], *, timeout: float = 120) -> str:
    """Run an HTCondor command; its stdout, or ``CondorError`` with code, stdout and stderr."""
    log.debug("running %s", " ".join(command))
    try:
        done = subprocess.run(
            list(command), capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError:
        raise CondorError(
            f"{command[0]}: not found; install HTCondor's tools or the bindings "
            "(pip install 'htcondor>=24.5.1,<25')"
        ) from None
    except subprocess.TimeoutExpired:
        raise CondorError(f"{' '.join(command)}: no answer within {timeout:g} s") from None
    if done.returncode != 0:
        raise CondorError(
            f"{' '.join(command)} exited {done.returncode}: {done.stderr.strip() or done.stdout}"
            f"\nstdout: {done.stdout}"
        )
    return done.stdout


LOCATE_RETRIES = (0.5, 1.0, 2.0, 4.0)  # seconds between tries to find the local schedd


def _schedd(schedd: str | None, collector: str | None) -> object:
    htcondor2 = htcondor()
    if schedd is None and collector is None:
        # The local schedd is found through its address file, which is missing while the schedd
        # restarts (a reconfiguration, condor_master restarting it): ask again for a few seconds.
        for pause in LOCATE_RETRIES:
            try:
                return htcondor2.Schedd()
            except Exception:
                time.sleep(pause)
        try:
            return htcondor2.Schedd()
        except Exception as err:
            hint = (
                "; the bindings were loaded after TensorFlow: import gridtrain.condor.submit first"
                if _AFTER_TENSORFLOW
                else ""
            )
            raise CondorError(f"the local schedd: {err}{hint}") from None
    try:
        ad = htcondor2.Collector(collector).locate(htcondor2.DaemonType.Schedd, schedd)
    except Exception as err:  # the bindings raise HTCondorException, a bare Exception
        where = f"schedd {schedd or '(local)'} via {collector or 'CONDOR_HOST'}"
        raise CondorError(f"{where}: {err}") from None
    return htcondor2.Schedd(ad)


def submit_cluster(
    description: str,
    event_log: Path,
    *,
    schedd: str | None = None,
    collector: str | None = None,
    hold: bool = False,
    use_bindings: bool = True,
    submit_command: Sequence[str] = SUBMIT_COMMAND,
) -> Cluster:
    """Submit one rendered description (its queue statement makes the jobs) as ONE cluster."""
    event_log.parent.mkdir(parents=True, exist_ok=True)
    if hold:
        description = f"hold = True\n{description}"
    started = time.time()
    if use_bindings:
        try:
            htcondor2 = htcondor()
        except ImportError as err:
            log.warning("htcondor2 bindings unusable (%s); falling back to condor_submit", err)
        else:
            try:
                keep_none_alive()
                target = _schedd(schedd, collector)
                result = target.submit(htcondor2.Submit(description))  # type: ignore[attr-defined]
                cluster_id, count = int(result.cluster()), int(result.num_procs())
            except CondorError:
                raise
            except Exception as err:
                where = schedd or "the local schedd"
                raise CondorError(f"submission to {where} failed: {err}") from None
            _reschedule(target)
            cluster = Cluster(
                cluster_id,
                count,
                str(event_log),
                schedd,
                collector,
                started,
                "bindings",
            )
            log.info("submitted %d jobs as cluster %d", cluster.count, cluster.cluster_id)
            return cluster
    return _submit_with_command(description, event_log, schedd, collector, started, submit_command)


def _reschedule(schedd: object) -> None:
    """Ask the schedd for a negotiation cycle now, as condor_submit does after a submission (the
    bindings' submit does not): the jobs start without waiting for the pool's next cycle."""
    try:
        schedd.reschedule()  # type: ignore[attr-defined]
    except Exception as err:  # a hint to the pool, never a reason to fail a submission
        log.debug("reschedule after submission: %s", err)


def _submit_with_command(
    description: str,
    event_log: Path,
    schedd: str | None,
    collector: str | None,
    started: float,
    submit_command: Sequence[str],
) -> Cluster:
    command = [*submit_command, "-terse"]
    if schedd is not None:
        command += ["-name", schedd]
    if collector is not None:
        command += ["-pool", collector]
    with tempfile.NamedTemporaryFile(
        "w", dir=event_log.parent, prefix=".submit-", suffix=".sub", delete=False
    ) as file:
        file.write(description)
    os.chmod(file.name, 0o644)  # condor_submit may run as the job user (tests: inside the pool)
    try:
        out = run_command([*command, file.name])
    finally:
        os.unlink(file.name)
    match = _TERSE.search(out)
    if match is None:
        raise CondorError(f"{' '.join(command)}: no cluster id in its output: {out!r}")
    cluster_id, first, last = int(match[1]), int(match[2]), int(match[4])
    log.info("submitted %d jobs as cluster %d (condor_submit)", last - first + 1, cluster_id)
    return Cluster(
        cluster_id, last - first + 1, str(event_log), schedd, collector, started, "condor_submit"
    )


def remove_cluster(
    cluster: Cluster | int,
    *,
    schedd: str | None = None,
    collector: str | None = None,
    reason: str = "removed by gridtrain",
) -> None:
    """Remove every job of a cluster (running ones get SIGTERM, then SIGKILL)."""
    if isinstance(cluster, Cluster):
        schedd, collector, cluster_id = cluster.schedd, cluster.collector, cluster.cluster_id
    else:
        cluster_id = cluster
    remove_jobs(f"ClusterId == {cluster_id}", schedd=schedd, collector=collector, reason=reason)


def remove_jobs(
    constraint: str,
    *,
    schedd: str | None = None,
    collector: str | None = None,
    reason: str = "removed by gridtrain",
) -> None:
    """Remove the jobs matching a ClassAd constraint (without bindings: condor_rm -constraint)."""
    try:
        htcondor2 = htcondor()
    except ImportError:
        pool = ["-pool", collector] if collector else []
        name = ["-name", schedd] if schedd else []
        run_command([*REMOVE_COMMAND, *pool, *name, "-constraint", constraint])
        return
    try:
        keep_none_alive()
        _schedd(schedd, collector).act(  # type: ignore[attr-defined]
            htcondor2.JobAction.Remove, constraint, reason
        )
    except Exception as err:
        raise CondorError(f"removing the jobs {constraint!r}: {err}") from None


def edit_jobs(
    constraint: str,
    attribute: str,
    value: str,
    *,
    schedd: str | None = None,
    collector: str | None = None,
) -> None:
    """Set ``attribute`` (a ClassAd expression, e.g. a quoted string) on the matching jobs."""
    try:
        keep_none_alive()
        getattr(_schedd(schedd, collector), "edit")(constraint, attribute, value)  # noqa: B009
    except Exception as err:
        raise CondorError(f"edit {attribute} of {constraint!r}: {err}") from None


def query_jobs(
    constraint: str,
    projection: Sequence[str] = (),
    *,
    schedd: str | None = None,
    collector: str | None = None,
    history: bool = False,
) -> list[dict[str, object]]:
    """Job ClassAds matching ``constraint`` as plain dicts: in the queue, or with ``history``
    those that left it (the schedd's history)."""
    where = "history" if history else "query"
    try:
        keep_none_alive()
        ads = getattr(_schedd(schedd, collector), where)(constraint, list(projection))
    except Exception as err:
        raise CondorError(f"{where} {constraint!r}: {err}") from None
    return [{key: ad[key] for key in ad} for ad in ads]
