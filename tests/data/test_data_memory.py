"""Memory is bounded by the step, not by the input: 4x the events, about the same peak RSS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gridtrain.data.toy import write_toy_dataset
from tests.conftest import toy_section

# VmHWM belongs to the process's own address space; ru_maxrss would carry the parent's peak
# across exec and report pytest's memory instead of the conversion's.
PEAK_RSS = """
import sys
from gridtrain.config import load_config, DatasetConfig
from gridtrain.data.convert import convert
convert(DatasetConfig.from_dict(load_config(sys.argv[1])["dataset"]))
status = open("/proc/self/status").read().split("VmHWM:")[1]
print(int(status.split()[0]))
"""


def peak_rss_mib(toy: Path, out: Path, config: Path) -> float:
    section = toy_section(toy, out, step_events=4096, shard_events=4096, chunk_events=1024)
    config.write_text(yaml.safe_dump({"dataset": section}))
    result = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, str(config)], capture_output=True, text=True, check=True
    )
    return int(result.stdout.split()[-1]) / 1024


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_the_input(tmp_path):
    sizes = {}
    for events in (40_000, 160_000):
        toy = tmp_path / f"toy{events}"
        write_toy_dataset(toy, events, seed=3)
        sizes[events] = peak_rss_mib(toy, tmp_path / f"out{events}", tmp_path / f"{events}.yaml")
    assert sizes[160_000] < sizes[40_000] + 60, sizes
