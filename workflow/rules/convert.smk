rule convert:
    input:
        dataset_inputs(),
    output:
        manifest=dataset_manifest(),
    log:
        "logs/convert.log",
    threads: 2
    conda:
        "../../envs/gridtrain.yaml"
    script:
        "../scripts/convert.py"
