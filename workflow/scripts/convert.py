"""Snakemake script of rules convert and convert_group: the dataset section -> shards.

Rule convert_group passes ``params.group``: only that group of input files is converted.
"""

import logging
import os
import socket
from pathlib import Path

from gridtrain.config import DatasetConfig
from gridtrain.data.convert import convert
from gridtrain.data.groups import plan_group

snakemake = globals()["snakemake"]  # injected by Snakemake

logging.basicConfig(
    filename=snakemake.log[0],
    level=logging.INFO,
    format="%(asctime)s %(name)s %(levelname)s: %(message)s",
)
logging.getLogger(__name__).info("on %s as uid %d", socket.gethostname(), os.getuid())
dataset = DatasetConfig.from_config(snakemake.config)
group = snakemake.params.get("group")
convert(
    dataset,
    Path(snakemake.output.manifest).parent,
    threads=snakemake.threads,
    file_group=None if group is None else plan_group(dataset, group),
)
