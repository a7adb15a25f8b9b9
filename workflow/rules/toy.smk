rule toy:
    output:
        signal=f"{config['toy']['outdir']}/signal.root",
        background=f"{config['toy']['outdir']}/background.root",
    params:
        events=config["toy"]["events"],
        seed=config["toy"]["seed"],
        outdir=lambda wildcards, output: Path(output.signal).parent,
    log:
        "logs/toy.log",
    conda:
        "../../envs/gridtrain.yaml"
    shell:
        "gridtrain toy --events {params.events} --seed {params.seed} --out {params.outdir} "
        "> {log} 2>&1"
