# gridtrain workflow: toy data -> HDF5 shards (later: stage -> train -> report).
# Run with the embedded default profile:  snakemake --profile profiles/local
configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/toy.smk"
include: "workflow/rules/convert.smk"
include: "workflow/rules/stage.smk"


rule all:
    input:
        manifest=dataset_manifest(),
    default_target: True
