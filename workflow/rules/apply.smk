# Scores on the analysis's own files (not in rule all): `snakemake --profile profiles/local apply`
# scores every file of apply.files with the run in train.run_dir, one job per file, each writing
# apply.out/<stem>_scores.root (a friend tree of its input). With the ONNX engine the export comes
# first (rule export) and the jobs need no TensorFlow.


rule apply:
    input:
        expand("{out}/{stem}_scores.root", out=config["apply"]["out"], stem=apply_stems()),
    localrule: True


rule apply_file:
    input:
        model=apply_model(),
        data=apply_input,
    output:
        scores=f"{config['apply']['out']}/{{stem}}_scores.root",
    params:
        path=lambda wildcards: apply_stems()[wildcards.stem],
    log:
        "logs/apply/{stem}.log",
    threads: 1
    conda:
        "../../envs/gridtrain.yaml"
    script:
        "../scripts/apply.py"
