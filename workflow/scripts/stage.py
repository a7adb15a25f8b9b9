"""Snakemake script of rule stage: push the dataset to stage.url, verified, manifest last."""

import json
import logging
from pathlib import Path

from gridtrain.config import StageConfig
from gridtrain.errors import ConfigError
from gridtrain.stage.dataset import push
from gridtrain.stage.transfer import TransferOptions

snakemake = globals()["snakemake"]  # injected by Snakemake

logging.basicConfig(
    filename=snakemake.log[0],
    level=logging.INFO,
    format="%(asctime)s %(name)s %(levelname)s: %(message)s",
)
if not snakemake.params.url:
    raise ConfigError(
        "rule stage needs stage.url in config/config.yaml, for example\n"
        "stage:\n  url: root://eos.example.org//store/user/me/toy-wtag"
    )
options = TransferOptions.from_config(StageConfig.from_dict(snakemake.config.get("stage", {})))
summary = push(Path(snakemake.input.manifest).parent, snakemake.params.url, options)
logging.getLogger("gridtrain.stage").info(summary.line("pushed"))
Path(snakemake.output.summary).write_text(json.dumps(summary.__dict__, indent=1) + "\n")
