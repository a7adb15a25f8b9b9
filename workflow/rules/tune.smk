# Hyper-parameter search over the train section (config's tune section): every trial a training,
# best.yaml the config to train the best with. Not part of rule all: `snakemake tune`.
rule tune:
    input:
        manifest=dataset_manifest(),
    output:
        best=f"{config.get('tune', {}).get('run_dir', 'results/tune')}/best.yaml",
        trials=f"{config.get('tune', {}).get('run_dir', 'results/tune')}/trials.csv",
    log:
        "logs/tune.log",
    threads: workflow.cores
    localrule: True
    conda:
        "../../envs/gridtrain.yaml"
    script:
        "../scripts/tune.py"
