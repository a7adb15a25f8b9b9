# The trained model for experiment software: ONNX, a SavedModel and a frozen graph that take the
# raw branch values, with export.json; each format verified against the Keras model first.
rule export:
    input:
        model=f"{run_dir()}/model.keras",
    output:
        described=f"{run_dir()}/export/export.json",
    log:
        "logs/export.log",
    localrule: True
    conda:
        "../../envs/gridtrain.yaml"
    script:
        "../scripts/export.py"
