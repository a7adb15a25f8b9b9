"""Snakemake script of rule apply_file: one input file scored with the run in train.run_dir."""

import logging
from pathlib import Path

from gridtrain.apply.engines import find_models
from gridtrain.apply.run import apply_files
from gridtrain.apply.scoring import ApplySettings

snakemake = globals()["snakemake"]  # injected by Snakemake

logging.basicConfig(
    filename=snakemake.log[0],
    level=logging.INFO,
    format="%(asctime)s %(name)s %(levelname)s: %(message)s",
)
section = snakemake.config["apply"]
settings = ApplySettings(
    model=find_models(Path(snakemake.config["train"]["run_dir"]), section["engine"]),
    out=Path(snakemake.output.scores).parent,
    tree=section["tree"],
    selection=section["selection"],
    keep=tuple(section["keep"]),
    format=section["format"],
    threads=snakemake.threads,
)
summary = apply_files(settings, [snakemake.params.path])
logging.info("%s", summary.line())
