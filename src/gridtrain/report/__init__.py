"""Reports of a training run: PNG plots and a summary, regenerated from the run directory alone.

Layer: report. It reads what training wrote (``metrics.json``, ``history.jsonl``, ``roc.npz``,
``validation.npz``, ``config.yaml``)
and draws; it never imports TensorFlow, so ``gridtrain report`` runs on a head node without it.
"""

from gridtrain.report.drawing import MissingData
from gridtrain.report.plots import PLOTS, plots_for, save_png, write_report
from gridtrain.report.run import (
    EpochRecord,
    RocCurve,
    Run,
    RunDirError,
    ShardRecord,
    Validation,
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
    "Validation",
    "load_run",
    "plots_for",
    "read_history",
    "save_png",
    "summary_lines",
    "write_report",
]
