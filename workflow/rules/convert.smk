# dataset.files_per_job null: one job converts every file. A number: one job per group of input
# files (rule convert_group, the jobs that profiles/htcondor sends to HTCondor), each into its own
# folder groups/gNNNN/, and rule gather writes the one manifest naming the shards of all groups.
if config["dataset"]["files_per_job"] is None:

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

else:

    rule convert_group:
        input:
            group_inputs,
        output:
            manifest=f"{config['dataset']['outdir']}/groups/g{{group}}/manifest.json",
        params:
            group=lambda wildcards: int(wildcards.group),
        wildcard_constraints:
            group=r"\d{4}",
        log:
            "logs/convert/g{group}.log",
        threads: 2
        conda:
            "../../envs/gridtrain.yaml"
        script:
            "../scripts/convert.py"

    rule gather:
        input:
            expand(
                "{outdir}/groups/g{group}/manifest.json",
                outdir=config["dataset"]["outdir"],
                group=conversion_groups(),
            ),
        output:
            manifest=dataset_manifest(),
        log:
            "logs/gather.log",
        localrule: True
        conda:
            "../../envs/gridtrain.yaml"
        script:
            "../scripts/gather.py"
