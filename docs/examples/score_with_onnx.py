"""Score the events of ROOT files with a gridtrain export, without gridtrain.

Only uproot, awkward, numpy and ONNX Runtime: what an analysis in Python, or the author of a
CMSSW/Athena producer reading this as a recipe, has. Every input tensor is filled from the ROOT
branches that export.json names, raw, exactly as they are in the file: the export itself
standardises them and ignores padded entries.

    python score_with_onnx.py EXPORT_DIR SAMPLE=FILE.root [SAMPLE=FILE.root ...] [--validation]

SAMPLE is a sample name of the dataset (export.json "classes" gives each its label). With
--validation only the events of the validation split are scored (the split is a hash of the
event id, reproduced below), and the weighted ROC AUC is printed: it is the AUC of the run's
report.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import awkward as ak
import numpy as np
import onnxruntime
import uproot

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def in_validation(ids: list[np.ndarray], fraction: float, seed: int) -> np.ndarray:
    """export.json "validation_split": h = seed; h = splitmix64(h ^ id) per id branch."""
    h = np.full(len(ids[0]), np.uint64(seed & 0xFFFFFFFFFFFFFFFF), dtype=np.uint64)
    for column in ids:
        h = splitmix64(h ^ column.astype(np.uint64))
    return h < np.uint64(min(int(fraction * 2.0**64), 2**64 - 1))


def column(tree: uproot.TTree, name: str) -> np.ndarray:
    """A flat branch, or one element of a fixed-size array branch (``name[i]``)."""
    match = re.fullmatch(r"(.+)\[(\d+)\]", name)
    if match:
        return np.asarray(tree[match[1]].array(library="np"))[:, int(match[2])]
    return np.asarray(tree[name].array(library="np"))


# --8<-- [start:fill_inputs]
def fill_inputs(tree: uproot.TTree, inputs: list[dict]) -> dict[str, np.ndarray]:
    """The raw input tensors of every event of ``tree``, as export.json describes them."""
    feed = {}
    for spec in inputs:
        if "counts" in spec:  # entries of the group before padding, at most its length
            group = next(i for i in inputs if i["name"] == spec["counts"])
            entries = ak.num(tree[group["columns"][0]].array(), axis=1)
            feed[spec["name"]] = np.minimum(ak.to_numpy(entries), group["length"]).astype("float32")
        elif "length" in spec:  # a jagged group: (events, length, channels), padded with fill
            channels = [
                ak.to_numpy(
                    ak.fill_none(
                        ak.pad_none(tree[branch].array(), spec["length"], clip=True), spec["fill"]
                    )
                )
                for branch in spec["columns"]
            ]
            feed[spec["name"]] = np.stack(channels, axis=-1).astype("float32")
        else:  # flat features: (events, columns)
            feed[spec["name"]] = np.stack(
                [column(tree, name) for name in spec["columns"]], axis=1
            ).astype("float32")
    return feed


# --8<-- [end:fill_inputs]


def weighted_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> float:
    """P(signal scores above background), weighted, ties counting one half."""
    order = np.argsort(-scores, kind="mergesort")
    scores, labels, weights = scores[order], labels[order], weights[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]  # end of each run of ties
    signal = np.cumsum(np.where(labels == 1, weights, 0.0))[last]
    background = np.cumsum(np.where(labels == 0, weights, 0.0))[last]
    tpr = np.r_[0.0, signal / signal[-1]]
    fpr = np.r_[0.0, background / background[-1]]
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path)
    parser.add_argument("samples", nargs="+", metavar="SAMPLE=FILE")
    parser.add_argument("--validation", action="store_true")
    args = parser.parse_args()

    described = json.loads((args.export / "export.json").read_text())
    selection = described["event_selection"]
    if selection.get("selection"):
        raise SystemExit(f"apply the dataset's selection first: {selection['selection']}")
    label_of = {s: int(label) for label, samples in described["classes"].items() for s in samples}
    session = onnxruntime.InferenceSession(str(args.export / described["files"]["onnx"]["path"]))

    labels, scores, weights = [], [], []
    for pair in args.samples:
        sample, _, path = pair.partition("=")
        tree = uproot.open(path)[selection["tree"]]
        feed = fill_inputs(tree, described["inputs"])
        keep = np.ones(tree.num_entries, dtype=bool)
        if args.validation:
            split = selection["validation_split"]
            ids = [column(tree, name) for name in selection["event_id"]]
            keep = in_validation(ids, split["validation_fraction"], split["seed"])
        score = session.run(["score"], {k: v[keep] for k, v in feed.items()})[0].reshape(-1)
        weight = column(tree, selection["weight"]) if selection["weight"] else np.ones(keep.size)
        scores.append(score)
        labels.append(np.full(score.size, label_of[sample]))
        weights.append(weight[keep].astype(np.float64))
        print(f"{sample}: {score.size} events scored from {path}")
    if args.validation:
        auc = weighted_auc(np.concatenate(labels), np.concatenate(scores), np.concatenate(weights))
        print(f"validation AUC {auc:.6f}")


if __name__ == "__main__":
    main()
