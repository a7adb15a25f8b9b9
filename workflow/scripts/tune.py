"""Snakemake script of rule tune: the workflow's config -> a study in tune.run_dir.

A study already in the folder (a stopped or killed tuner) is resumed: finished trials are kept.
"""

import logging
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from gridtrain.tune.study import StudyDir
from gridtrain.tune.tuner import resume, tune

snakemake = globals()["snakemake"]  # injected by Snakemake

logging.basicConfig(
    filename=snakemake.log[0],
    level=logging.INFO,
    format="%(asctime)s %(name)s %(levelname)s: %(message)s",
)
run_dir = Path(snakemake.output.best).parent
if StudyDir(run_dir).journal.exists():
    code = resume(run_dir)
else:
    code = tune(dict(snakemake.config), run_dir)
if code:
    raise SystemExit(f"the study stopped with exit code {code}; see {snakemake.log[0]}")
