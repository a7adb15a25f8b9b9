"""Fixtures shared across layers: a small toy dataset written once per session."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest

# The XRootD client (gridtrain.stage) and the htcondor2 bindings (gridtrain.condor.submit) must be
# loaded before TensorFlow, which tests load too: each package loads its client on import.
import gridtrain.condor.submit
import gridtrain.stage  # noqa: F401
from gridtrain.config import DatasetConfig
from gridtrain.data.toy import JET_FEATURES

TOY_EVENTS = 12_000
POOL_NODES = "tests/pool/"  # node ids start at the repository root
POOL_UNIT = "the HTCondor pool"


# Folders whose modules share a session fixture that trains (tests/apply: the runs it scores):
# one unit each, so that the runs are trained once, not once in each process.
SHARED_FOLDERS = ("tests/apply/",)


def unit_of_work(nodeid: str) -> str:
    """The unit a test is scheduled in under ``make test``: the pool's tests share one, each of
    ``SHARED_FOLDERS`` is one; any other test goes with its module, so a module's fixtures (a
    trained run, a converted dataset) are made once, not once in each process that drew one of
    its tests."""
    if nodeid.startswith(POOL_NODES):
        return POOL_UNIT
    shared = [folder for folder in SHARED_FOLDERS if nodeid.startswith(folder)]
    return shared[0] if shared else nodeid.partition("::")[0]


# Folders whose modules train, score or serve in processes of their own: long units, sent out
# before the quick unit tests, which then fill the workers' gaps at the end.
LONG_UNITS = ("tests/train/", "tests/apply/", "tests/export/", "tests/tune/", "tests/workflow/",
              "tests/serve/", "tests/stage/")  # fmt: skip


def first_out(unit: str) -> int:
    """The order units go out under ``make test``: the pool's, then the long ones, then the rest
    (most tests first within each, as xdist sorts them)."""
    return 2 if unit == POOL_UNIT else 1 if unit.startswith(LONG_UNITS) else 0


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """Under pytest-xdist's ``--dist loadgroup`` (``make test`` runs ``-n 3 --dist loadgroup``):
    every test under tests/pool is one unit of work, run by one worker, since they share one
    HTCondor pool (a chroot whose daemons own fixed ports; one test stops and restarts it), and
    every other module is one unit. The pool's goes out first (its tests take the longest), then
    the modules that train (``first_out``), then the rest.
    (A scheduler, not xdist_group marks: xdist 3.8 renames node ids for those, which pytest 9 no
    longer honours, and the pool tests ran side by side.) Checked by tests/test_suite.py."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class PoolAsOneUnit(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of_work(nodeid)

        def _assign_work_unit(self, node: Any) -> None:
            if not getattr(self, "_reordered", False):  # once, before the first unit goes out
                self._reordered = True
                ordered = sorted(self.workqueue.items(), key=lambda item: -first_out(item[0]))
                self.workqueue.clear()
                self.workqueue.update(ordered)  # stable: most tests first within a kind
            if POOL_UNIT in self.assigned_work.get(node, {}) and len(self.workqueue) > 1:
                # the pool's worker is busy for long: what it queues is quick, from the end
                last = next(reversed(self.workqueue))
                self.workqueue.move_to_end(last, last=False)
            super()._assign_work_unit(node)

    return PoolAsOneUnit(config, log)


def in_ci() -> bool:
    """In CI a test that needs a real server (xrootd, the HTCondor pool) must run, never skip."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gridtrain.data.toy import write_toy_dataset

    out = tmp_path_factory.mktemp("toy")
    write_toy_dataset(out, TOY_EVENTS, seed=7)
    return out


def toy_section(toy_dir: Path, outdir: Path, **overrides: Any) -> dict[str, Any]:
    """A ``dataset`` config section over the toy files; keyword arguments override keys."""
    section: dict[str, Any] = {
        "name": "toy-test",
        "tree": "events",
        "samples": [
            {"name": "signal", "files": [str(toy_dir / "signal.root")], "label": 1},
            {"name": "background", "files": [str(toy_dir / "background.root")], "label": 0},
        ],
        "features": list(JET_FEATURES),
        "jagged": {
            "constituents": {
                "branches": ["part_pt", "part_deta", "part_dphi", "part_charge", "part_pid"],
                "length": 40,
                "fill": 0.0,
            }
        },
        "weight": "weight",
        "event_id": ["run", "luminosityBlock", "event"],
        "validation_fraction": 0.25,
        "shard_events": 2000,
        "step_events": 1500,
        "chunk_events": 256,
        "outdir": str(outdir),
    }
    section.update(copy.deepcopy(overrides))
    return section


def toy_config(toy_dir: Path, outdir: Path, **overrides: Any) -> DatasetConfig:
    return DatasetConfig.from_dict(toy_section(toy_dir, outdir, **overrides))


def split_toy(toy_dir: Path, out: Path, files: int) -> dict[str, list[str]]:
    """The toy samples cut into ``files`` ROOT files each, same events (and ids), same branches.

    What a real dataset looks like to a grouped conversion: many files per sample.
    """
    import awkward as ak
    import uproot

    from gridtrain.data.toy import CONSTITUENT_FIELDS, SAMPLES, TREE_NAME

    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, list[str]] = {}
    for name in SAMPLES:
        arrays = uproot.open(toy_dir / f"{name}.root")[TREE_NAME].arrays()
        part = ak.zip({f: arrays[f"part_{f}"] for f in CONSTITUENT_FIELDS})
        flat = {k: arrays[k] for k in arrays.fields if not k.startswith("part") and k != "npart"}
        types = {k: ak.to_numpy(v).dtype for k, v in flat.items()}
        types["part"] = part.type.content
        bounds = [len(part) * i // files for i in range(files + 1)]
        paths[name] = []
        for i in range(files):
            path = out / f"{name}-{i}.root"
            with uproot.recreate(path) as f:
                tree = f.mktree(TREE_NAME, types)
                for start in range(bounds[i], bounds[i + 1], 500):  # several baskets per file
                    stop = min(start + 500, bounds[i + 1])
                    chunk = {k: ak.to_numpy(v[start:stop]) for k, v in flat.items()}
                    tree.extend({**chunk, "part": part[start:stop]})
            paths[name].append(str(path))
    return paths


def convert_cli_line(config: Path) -> str:
    """``gridtrain convert -c CONFIG`` as a user runs it: it must exit 2 with one line on stderr,
    which is returned."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "gridtrain", "convert", "-c", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def read_all(out: Path, manifest: Any) -> dict[str, Any]:
    """Every event of a converted dataset (a ``Manifest`` in ``out``), both splits, shard by
    shard as the manifest lists them."""
    import numpy as np

    from gridtrain.data.shards import ShardReader

    parts = []
    for split in ("train", "validation"):
        for entry in manifest.shards[split]:
            with ShardReader(out / entry.path) as reader:
                parts.append(reader.read())
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
