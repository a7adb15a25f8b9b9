"""Snakemake script of rule train: the workflow's config -> a trained model in train.run_dir.

An interrupted run in the run directory (Ctrl-C, a lost login session) is resumed; any other
earlier run there is replaced, since Snakemake only runs this rule when its outputs are missing
or out of date. Plots are rule report's job.
"""

import logging
import os
import shutil
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from gridtrain.train.driver import RunDir, resumable, resume, train

snakemake = globals()["snakemake"]  # injected by Snakemake

logging.basicConfig(
    filename=snakemake.log[0],
    level=logging.INFO,
    format="%(asctime)s %(name)s %(levelname)s: %(message)s",
)
run_dir = Path(snakemake.output.model).parent
if resumable(run_dir):
    code = resume(run_dir, plots=False)
else:
    if RunDir(run_dir).spec.exists():
        shutil.rmtree(run_dir)
    code = train(dict(snakemake.config), run_dir, plots=False)
if code:
    raise SystemExit(f"training stopped with exit code {code}; see {snakemake.log[0]}")
