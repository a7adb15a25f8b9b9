"""Snakemake script of rule export: ``gridtrain export`` of the run in train.run_dir."""

import logging
from pathlib import Path

from gridtrain.export.run import export_run

snakemake = globals()["snakemake"]  # injected by Snakemake

logging.basicConfig(
    filename=snakemake.log[0],
    level=logging.INFO,
    format="%(asctime)s %(name)s %(levelname)s: %(message)s",
)
result = export_run(Path(snakemake.input.model).parent)
for check in result.checks:
    logging.info("%s", check.line())
