from gridtrain.data.toy import toy_files


rule toy:
    output:
        expand(
            "{outdir}/{name}.root",
            outdir=config["toy"]["outdir"],
            name=toy_files(config["toy"]["task"]),
        ),
    params:
        events=config["toy"]["events"],
        seed=config["toy"]["seed"],
        file_format=config["toy"]["format"],
        image_size=config["toy"]["image_size"],
        task=config["toy"]["task"],
        negative_weight_fraction=config["toy"]["negative_weight_fraction"],
    log:
        "logs/toy.log",
    localrule: True
    conda:
        "../../envs/gridtrain.yaml"
    script:
        "../scripts/toy.py"
