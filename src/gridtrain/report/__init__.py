"""Reports of a training run: PNG plots and a summary, regenerated from the run directory alone.

Layer: report. It reads what training wrote (``metrics.json``, ``history.jsonl``, ``roc.npz``)
and draws; it never imports TensorFlow, so ``gridtrain report`` runs on a head node without it.
"""

from gridtrain.report.plots import PLOTS, MissingData, save_png, write_report
from gridtrain.report.run import (
    EpochRecord,
    RocCurve,
    Run,
    RunDirError,
    ShardRecord,
    load_run,
    read_history,
)
from gridtrain.report.summary import summary_lines

__all__ = [
    "PLOTS",
    "EpochRecord",
    "MissingData",
    "RocCurve",
    "Run",
    "RunDirError",
    "ShardRecord",
    "load_run",
    "read_history",
    "save_png",
    "summary_lines",
    "write_report",
]
