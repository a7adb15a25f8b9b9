"""Snakemake script of rule convert: the dataset section of the workflow's config -> shards."""

import logging
from pathlib import Path

from gridtrain.config import DatasetConfig
from gridtrain.data.convert import convert

snakemake = globals()["snakemake"]  # injected by Snakemake

logging.basicConfig(
    filename=snakemake.log[0],
    level=logging.INFO,
    format="%(asctime)s %(name)s %(levelname)s: %(message)s",
)
dataset = DatasetConfig.from_dict(snakemake.config["dataset"])
convert(dataset, Path(snakemake.output.manifest).parent, threads=snakemake.threads)
