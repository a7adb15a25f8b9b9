#!/usr/bin/env bash
# Snakemake runs this inside the new conda environment of envs/gridtrain.yaml: gridtrain itself,
# from the checkout this file is in, without dependencies (they are pinned in the yaml).
set -euo pipefail
python -m pip install --no-deps -e "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
