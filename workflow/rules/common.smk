from snakemake.utils import min_version, validate

from gridtrain.paths import is_url
from gridtrain.report.plots import PLOTS_BY_KIND

min_version("8.0")


validate(config, "../schemas/config.schema.yaml")

# With a batch-system executor (profiles/htcondor) only the conversion jobs leave this host: every
# other rule is a `localrule`, cheap (toy, gather, stage, report) or, like train, the driver and
# parameter server that the worker jobs connect back to.


def dataset_manifest():
    return f"{config['dataset']['outdir']}/manifest.json"


def staged_dataset():
    """The summary of rule stage when the workers read the dataset from stage.url, else none."""
    return ["results/stage/pushed.json"] if config["stage"]["url"] else []


def dataset_inputs():
    """Local input files of every sample; root:// inputs are read in place by the rule."""
    return [
        path
        for sample in config["dataset"]["samples"]
        for path in sample["files"]
        if not is_url(path)
    ]


def dataset_config():
    from gridtrain.config import DatasetConfig

    return DatasetConfig.from_config(config)


def conversion_groups():
    """The values of the group wildcard of convert_group (0000, 0001, ...): files_per_job."""
    from gridtrain.data.groups import group_count

    return [f"{k:04d}" for k in range(group_count(dataset_config()))]


def group_inputs(wildcards):
    """Local input files of one conversion group; root:// inputs are read in place."""
    from gridtrain.data.groups import plan_group

    group = plan_group(dataset_config(), int(wildcards.group))
    return [path for path in group.paths if not is_url(path)]


# the report's plots for the config's task (a regression has response and residuals, no ROC)
REPORT_PLOTS = [
    name.removesuffix(".png")
    for name in PLOTS_BY_KIND[(config.get("task") or {}).get("kind", "binary")]
]


def run_dir():
    return config["train"]["run_dir"]


# The scores of the files in apply.files (rules apply and apply_file)
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
