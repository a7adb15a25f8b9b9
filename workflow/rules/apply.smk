# Scores on the analysis's own files (not in rule all): `snakemake --profile profiles/local apply`
# scores every file of apply.files with the run in train.run_dir, one job per file, each writing
# apply.out/<stem>_scores.root (a friend tree of its input). With the ONNX engine the export comes
# first (rule export) and the jobs need no TensorFlow.


def apply_model():
    """What the scoring jobs read: the run's model.keras, or its export."""
    if config["apply"]["engine"] == "onnx":
        return f"{run_dir()}/export/export.json"
    return f"{run_dir()}/model.keras"


def apply_stems():
    """Each input file by the stem of its scores file (two inputs may not share one)."""
    from gridtrain.apply.outputs import check_names, input_stem

    check_names(config["apply"]["files"])
    return {input_stem(path): path for path in config["apply"]["files"]}


def apply_input(wildcards):
    """The input file of one scores file; root:// inputs are read in place."""
    path = apply_stems()[wildcards.stem]
    return [] if is_url(path) else [path]


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
