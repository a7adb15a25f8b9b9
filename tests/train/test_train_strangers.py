"""A training whose parameter server strangers hammer: 300 connections that drip a byte every 2 s
or stall after HELLO, reconnecting when dropped, from two other addresses (tests/ps/strangers.py,
in its own process), already at the PS when the four workers start. The workers must not notice:
every shard done, no lost update, and each worker connected exactly once (never refused, never
restarted).

Against the server before the pre-authentication budget (one limit of 256 for all connections),
the strangers held the slots and this test failed: a worker was refused ("parameter server is at
its connection limit") and restarted by the driver. The wall time against an undisturbed run
(the issue asks for 1.5x) is measured by benchmarks/ps_strangers.py: two 4-worker trainings do
not fit this test's time budget on a shared 2-core machine, and their ratio is noise there.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_helpers import completions, lost_lease_updates, train_shards, write_config

from gridtrain.config import load_config
from gridtrain.train.driver import TrainingRun, prepare
from gridtrain.train.executor import Launch
from gridtrain.train.local_executor import LocalExecutor

pytestmark = [
    pytest.mark.slow,
    # keras' model.save in the in-process driver, under numpy 2
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]

STRANGERS = Path(__file__).parents[1] / "ps" / "strangers.py"


class HammeredExecutor(LocalExecutor):
    """Local workers, started once the strangers are already at the parameter server."""

    def __init__(self, *stranger_options: str) -> None:
        super().__init__()
        self.options = stranger_options
        self.strangers: subprocess.Popen[str] | None = None

    def start(self, launch: Launch, count: int) -> None:
        if self.strangers is None:
            self.strangers = subprocess.Popen(
                [sys.executable, str(STRANGERS), launch.address, *self.options],
                stdout=subprocess.PIPE,
                text=True,
            )
            assert self.strangers.stdout is not None
            assert self.strangers.stdout.readline().strip() == "started"
            time.sleep(2.5)  # every dripper has connected once, the budget is full
        super().start(launch, count)

    def stop_strangers(self) -> dict[str, int]:
        """Stop the strangers; their counts (connections, refusals, drops at the deadline)."""
        if self.strangers is None:
            return {}
        self.strangers.terminate()
        try:
            out, _ = self.strangers.communicate(timeout=30)
        finally:
            if self.strangers.poll() is None:
                self.strangers.kill()
                self.strangers.communicate()
        return json.loads(out.strip().splitlines()[-1])


def test_strangers_hammering_the_ps_do_not_disturb_four_workers(
    tmp_path: Path, toy_dir: Path, toy_dataset: Path
) -> None:
    config_path = write_config(
        tmp_path / "hammered.yaml",
        toy_dir,
        toy_dataset,
        epochs=1,
        workers=4,
        early_stopping={"patience": None},
    )
    run_dir = tmp_path / "hammered"
    files = prepare(load_config(config_path), run_dir, 4)
    executor = HammeredExecutor("--drippers", "280", "--stallers", "20")
    try:
        assert TrainingRun(files, executor, plots=False).execute() == 0
    finally:
        counts = executor.stop_strangers()
    assert completions(run_dir) == {0: train_shards(toy_dataset)}  # every shard, once
    assert lost_lease_updates(run_dir) == 0
    final = json.loads((run_dir / "ps-metrics.jsonl").read_text().splitlines()[-1])
    assert {w["name"]: w["connections"] for w in final["workers"]} == {
        f"hammered-w{i}": 1 for i in range(4)
    }  # no worker was refused, restarted or had to reconnect
    assert counts["connects"] > 600  # the strangers really kept at it
    assert counts["challenges"] >= 20  # and the stallers got as far as the CHALLENGE
    dropped = final["dropped"]
    assert dropped["PreauthPerSource"] > 300
    assert dropped["HandshakeDeadlineError"] >= 16  # each stranger's slot held 5 s at most
