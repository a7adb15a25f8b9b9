rule toy:
    output:
        signal=f"{config['toy']['outdir']}/signal.root",
        background=f"{config['toy']['outdir']}/background.root",
    params:
        events=config["toy"]["events"],
        seed=config["toy"]["seed"],
        file_format=config["toy"]["format"],
        image_size=config["toy"]["image_size"],
    log:
        "logs/toy.log",
    localrule: True
    conda:
        "../../envs/gridtrain.yaml"
    script:
        "../scripts/toy.py"
