"""Snakemake script of rule toy: write the toy ROOT files of config toy.task."""

import logging
from pathlib import Path

from gridtrain.data.toy import write_toy_dataset

snakemake = globals()["snakemake"]  # injected by Snakemake

logging.basicConfig(
    filename=snakemake.log[0],
    level=logging.INFO,
    format="%(asctime)s %(name)s %(levelname)s: %(message)s",
)
write_toy_dataset(
    Path(snakemake.output[0]).parent,
    snakemake.params.events,
    snakemake.params.seed,
    snakemake.params.file_format,
    snakemake.params.image_size,
    snakemake.params.task,
    snakemake.params.negative_weight_fraction,
)
