# gridtrain workflow: toy data -> HDF5 shards -> (optional stage) -> train -> report, export.
# Run with the embedded default profile:  snakemake --profile profiles/local
configfile: "config/config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/toy.smk"
include: "workflow/rules/convert.smk"
include: "workflow/rules/stage.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/export.smk"
include: "workflow/rules/tune.smk"
include: "workflow/rules/apply.smk"


rule all:
    input:
        model=f"{run_dir()}/model.keras",
        plots=[f"{run_dir()}/plots/{name}.png" for name in REPORT_PLOTS],
        export=f"{run_dir()}/export/export.json",
    default_target: True
