"""A training's wall time with strangers hammering its parameter server, against an undisturbed run.

The strangers (``tests/ps/strangers.py``, in their own process) are the attack the project was
shown from outside: connections that send one byte every 2 s, and others that send HELLO and
stall before AUTH, all reconnecting when dropped, from two addresses other than the workers'.
They start the moment the PS has written its address, before the workers have imported
TensorFlow. Each pair of runs is ``gridtrain train`` with 4 workers and 1 epoch of the toy, quiet
then hammered, alternating so that a change in the machine's load hits both sides alike.

Prints one line per run (wall seconds, the strangers' connections, the PS's refusals by reason),
and last the ratio of the median hammered wall time to the median undisturbed one (goal <= 1.5;
before the pre-authentication budget the hammered run did not finish at all).

    python benchmarks/ps_strangers.py                      # 2 pairs, about 3 min on 2 idle cores
    python benchmarks/ps_strangers.py --pairs 3 --strangers 300
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench_helpers import REPO, run_gridtrain, toy_dataset, train_section

STRANGERS = REPO / "tests" / "ps" / "strangers.py"


class Strangers:
    """Starts the strangers once ``run_dir/ps.address`` appears; ``stop`` returns their counts."""

    def __init__(self, run_dir: Path, drippers: int, stallers: int) -> None:
        self.run_dir = run_dir
        self.options = ["--drippers", str(drippers), "--stallers", str(stallers)]
        self.process: subprocess.Popen[str] | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        address = self.run_dir / "ps.address"
        while not self._done.is_set():
            if address.exists() and address.read_text().strip():
                command = [sys.executable, str(STRANGERS), address.read_text().strip()]
                self.process = subprocess.Popen(
                    [*command, *self.options], stdout=subprocess.PIPE, text=True
                )
                return
            time.sleep(0.02)

    def stop(self) -> dict[str, Any]:
        self._done.set()
        self._thread.join()
        if self.process is None:
            return {}
        self.process.terminate()
        out, _ = self.process.communicate(timeout=60)
        return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--strangers", type=int, default=300, help="in all; 20 of them stall")
    parser.add_argument("--events", type=int, default=16000)
    parser.add_argument("--work", type=Path, default=REPO / ".bench" / "ps-strangers")
    options = parser.parse_args()

    dataset = toy_dataset(options.work, options.events, shard_events=1000)
    train = train_section(
        "mlp", {"hidden": [64, 64]}, 1, 128, 1e-3, {"algorithm": "downpour", "every": 1}
    )
    walls: dict[str, list[float]] = {"quiet": [], "hammered": []}
    for pair in range(options.pairs):
        for kind in ("quiet", "hammered"):
            run_dir = options.work / f"{kind}-{pair}"
            strangers = (
                Strangers(run_dir, options.strangers - 20, 20) if kind == "hammered" else None
            )
            try:
                run = run_gridtrain(f"{kind}-{pair}", dataset, train, run_dir, options.workers)
            finally:
                counts = strangers.stop() if strangers is not None else {}
            walls[kind].append(run.wall)
            final = json.loads((run_dir / "ps-metrics.jsonl").read_text().splitlines()[-1])
            joins = {w["name"]: w["connections"] for w in final["workers"]}
            print(
                f"{kind:>8} {pair}: {run.wall:6.1f} s, AUC {run.final_auc:.4f}, worker "
                f"connections {sorted(joins.values())}, strangers {counts or '-'}, PS dropped "
                f"{final.get('dropped', {})}",
                flush=True,
            )
    quiet, hammered = statistics.median(walls["quiet"]), statistics.median(walls["hammered"])
    print(f"median wall: undisturbed {quiet:.1f} s, hammered {hammered:.1f} s")
    print(f"hammered / undisturbed wall time: {hammered / quiet:.2f}")


if __name__ == "__main__":
    main()
