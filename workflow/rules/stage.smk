# Push the converted dataset to XRootD storage at stage.url, verified, manifest last. Not part
# of `rule all`, which runs without a server: ask for it by name,
#   snakemake --profile profiles/local stage


rule stage:
    input:
        manifest=dataset_manifest(),
    output:
        summary="results/stage/pushed.json",
    params:
        url=config["stage"]["url"],
    log:
        "logs/stage.log",
    localrule: True
    conda:
        "../../envs/gridtrain.yaml"
    script:
        "../scripts/stage.py"
