"""Snakemake script of rule report: plots of the run in train.run_dir (``gridtrain report``)."""

import logging
from pathlib import Path

from gridtrain.report import write_report

snakemake = globals()["snakemake"]  # injected by Snakemake

logging.basicConfig(
    filename=snakemake.log[0],
    level=logging.INFO,
    format="%(asctime)s %(name)s %(levelname)s: %(message)s",
)
for path in write_report(Path(snakemake.input.metrics).parent):
    logging.info("wrote %s", path)
