from snakemake.utils import min_version, validate

min_version("8.0")


validate(config, "../schemas/config.schema.yaml")


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
        if "://" not in path
    ]


REPORT_PLOTS = ["training_vs_time", "training_vs_updates", "roc", "staleness", "throughput"]


def run_dir():
    return config["train"]["run_dir"]
