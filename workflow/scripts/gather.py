"""Snakemake script of rule gather: the groups' manifests -> the dataset's manifest."""

import logging
from pathlib import Path

from gridtrain.config import DatasetConfig
from gridtrain.data.gather import gather

snakemake = globals()["snakemake"]  # injected by Snakemake

logging.basicConfig(
    filename=snakemake.log[0],
    level=logging.INFO,
    format="%(asctime)s %(name)s %(levelname)s: %(message)s",
)
gather(DatasetConfig.from_config(snakemake.config), Path(snakemake.output.manifest).parent)
