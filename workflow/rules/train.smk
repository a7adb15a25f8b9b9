# With stage.url set, the workers read the shards pushed there (rule stage runs first): what
# worker jobs on a pool without this host's file system need.
rule train:
    input:
        manifest=dataset_manifest(),
        staged=staged_dataset(),
    output:
        model=f"{run_dir()}/model.keras",
        metrics=f"{run_dir()}/metrics.json",
    log:
        "logs/train.log",
    threads: workflow.cores
    localrule: True
    conda:
        "../../envs/gridtrain.yaml"
    script:
        "../scripts/train.py"


rule report:
    input:
        metrics=f"{run_dir()}/metrics.json",
    output:
        plots=[f"{run_dir()}/plots/{name}.png" for name in REPORT_PLOTS],
    log:
        "logs/report.log",
    localrule: True
    conda:
        "../../envs/gridtrain.yaml"
    script:
        "../scripts/report.py"
