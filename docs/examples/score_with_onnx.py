"""Score the events of ROOT files with a gridtrain export, without gridtrain.

Only uproot, awkward, numpy and ONNX Runtime: what an analysis in Python, or the author of a
CMSSW/Athena producer reading this as a recipe, has. Every input tensor is filled from the ROOT
branches that export.json names, raw, exactly as they are in the file (a derived column is
computed from its expression first): the export itself standardises them and ignores padded
entries. The output is in physical units for every task (probabilities, or a regression's
targets as the dataset stored them).

    python score_with_onnx.py EXPORT_DIR SAMPLE=FILE.root [SAMPLE=FILE.root ...]
        [--validation] [--metrics METRICS.json] [--out SCORES.npz]

SAMPLE is a sample name of the dataset (export.json "samples" gives each its label and weight).
With --validation only the events of the validation split are scored (the split is a hash of
the event id, reproduced below; a k-fold export scores every event, each with the model of its
fold, the one that did not train on it, by the same hash) and the metrics are computed as the
run's report computes them (negative event weights counted as zero): the AUC (binary), each
class's one-vs-rest AUC, their mean and the accuracy (multi-class), or per target the RMSE, MAE,
bias, response and resolution (regression). They are the report's figures.
"""

from __future__ import annotations

import argparse
import ast
import json
import operator
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


# --8<-- [start:split]
def event_hash(ids: np.ndarray, seed: int) -> np.ndarray:
    """export.json's rule: h = seed; h = splitmix64(h ^ id) for each event-id branch (column)."""
    h = np.full(len(ids), np.uint64(seed & 0xFFFFFFFFFFFFFFFF), dtype=np.uint64)
    for column in ids.T:
        h = splitmix64(h ^ column.astype(np.uint64))
    return h


def in_validation(ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """The validation split ("validation_split"): h < fraction * 2**64."""
    return event_hash(ids, seed) < np.uint64(min(int(fraction * 2.0**64), 2**64 - 1))


def fold_of(ids: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A k-fold export's "folds": the fold whose model never trained on the event."""
    low = event_hash(ids, seed) & np.uint64(0xFFFFFFFF)
    return ((low * np.uint64(folds)) >> np.uint64(32)).astype(np.int64)


# --8<-- [end:split]


# --8<-- [start:evaluate]
# Expressions over branches, as the dataset's config writes them (derived features, targets,
# weights): arithmetic, comparisons, ROOT's && || !, the functions below, jagged[i] (an entry;
# [-1] the last), len/sum/max/min(jagged) (per event) and `quoted names` for branches that are no
# identifiers. An entry past the end of a list, or max/min of an empty one, is missing (None), and
# so is everything computed from it: a derived feature takes its "fill" there, as in conversion.
FUNCTIONS = {f: getattr(np, f) for f in ("abs", "sqrt", "log", "exp", "cos", "sin", "cosh", "sinh")}
FUNCTIONS.update(hypot=np.hypot, min=np.minimum, max=np.maximum)  # min/max of two: elementwise
REDUCTIONS = {"len": ak.num, "sum": ak.sum, "max": ak.max, "min": ak.min}  # of one jagged branch
OPERATORS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.Pow: operator.pow, ast.Mod: operator.mod,
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.And: np.logical_and, ast.Or: np.logical_or,
    ast.BitAnd: operator.and_, ast.BitOr: operator.or_,
}  # fmt: skip


def evaluate(expression: str, branch, fill: float | None = None) -> np.ndarray:
    """The expression's value per event; ``branch(name)`` reads a branch (an awkward array);
    missing values become ``fill``."""
    quoted: dict[str, str] = {}
    text = re.sub(r"`([^`]+)`", lambda m: quoted.setdefault(m[1], f"_q{len(quoted)}"), expression)
    text = re.sub(r"!(?!=)", " not ", text.replace("&&", " and ").replace("||", " or "))
    names = {identifier: name for name, identifier in quoted.items()}

    def value(node: ast.AST):
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.Name):
            return branch(names.get(node.id, node.id))
        if isinstance(node, ast.BinOp):
            return OPERATORS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp):
            operand = value(node.operand)
            return -operand if isinstance(node.op, ast.USub) else np.logical_not(operand)
        if isinstance(node, ast.BoolOp):
            result = value(node.values[0])
            for other in node.values[1:]:
                result = OPERATORS[type(node.op)](result, value(other))
            return result
        if isinstance(node, ast.Compare):  # a < b < c is (a < b) and (b < c)
            left, result = value(node.left), True
            for op, comparator in zip(node.ops, node.comparators, strict=True):
                right = value(comparator)
                result = np.logical_and(result, OPERATORS[type(op)](left, right))
                left = right
            return result
        if isinstance(node, ast.Subscript):  # entry i (-1: the last), missing where too short
            i = value(node.slice)
            return ak.firsts(value(node.value)[:, i : (i + 1) or None])
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
            function, args = node.func.id, node.args
            if function in REDUCTIONS and len(args) == 1:
                return REDUCTIONS[function](value(args[0]), axis=1)
            if function in FUNCTIONS:
                return FUNCTIONS[function](*(value(a) for a in args))
        raise ValueError(f"{expression!r}: {ast.unparse(node)!r} is not supported")

    with np.errstate(all="ignore"):
        result = value(ast.parse(text.strip(), mode="eval").body)
    if not isinstance(result, ak.Array):  # a number: the same for every event
        return np.asarray(result)
    return ak.to_numpy(result if fill is None else ak.fill_none(result, fill))


# --8<-- [end:evaluate]


def column(tree: uproot.TTree, name: str) -> np.ndarray:
    """A flat branch, or one element of a fixed-size array branch (``name[i]``)."""
    match = re.fullmatch(r"(.+)\[(\d+)\]", name)
    if match:
        return np.asarray(tree[match[1]].array(library="np"))[:, int(match[2])]
    return np.asarray(tree[name].array(library="np"))


def per_event(tree: uproot.TTree, expression: str) -> np.ndarray:
    """A branch or an expression of branches, per event, in float32 as conversion stores it."""
    values = evaluate(expression, lambda name: tree[name].array(), fill=np.nan)
    return np.broadcast_to(values, (tree.num_entries,)).astype(np.float32)


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
        else:  # flat features (events, columns): a branch, or a derived column's expression
            derived = spec.get("derived", {})  # {column: {"expr": "Jet_pt[0]", "fill": -1.0}}
            columns = []
            for name in spec["columns"]:
                if name in derived:
                    how = derived[name]
                    columns.append(evaluate(how["expr"], lambda b: tree[b].array(), how["fill"]))
                else:
                    columns.append(column(tree, name))
            feed[spec["name"]] = np.stack(columns, axis=1).astype("float32")
    return feed


# --8<-- [end:fill_inputs]


# --8<-- [start:metrics]
# The report's metrics: every event of negative weight counts as weight 0 (export.json "metrics").
def weighted_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> float:
    """P(signal scores above background), weighted, ties counting one half."""
    order = np.argsort(-scores, kind="stable")
    scores, labels, weights = scores[order], labels[order], weights[order]
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]  # end of each run of ties
    signal = np.cumsum(np.where(labels, weights, 0.0))[last]
    background = np.cumsum(np.where(labels, 0.0, weights))[last]
    tpr = np.r_[0.0, signal / signal[-1]]
    fpr = np.r_[0.0, background / background[-1]]
    tpr[-1] = fpr[-1] = 1.0
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1])) / 2)


def weighted_quantile(values: np.ndarray, weights: np.ndarray, q: list[float]) -> np.ndarray:
    """Each event's weight spread around its value (the midpoint rule), events of weight 0 out."""
    keep = weights > 0
    order = np.argsort(values[keep], kind="stable")
    v, w = values[keep][order], weights[keep][order]
    return np.interp(q, (np.cumsum(w) - 0.5 * w) / np.sum(w), v)


def metrics(described: dict, labels, scores, truth, weights) -> dict:
    w = np.where(weights > 0, weights, 0.0)  # the report's rule for negative weights
    if described["task"] == "binary":
        p = scores[:, 0]
        return {"auc": weighted_auc(labels == 1, p, w),
                "accuracy": float(np.sum(w[(p > 0.5) == (labels == 1)]) / np.sum(w))}  # fmt: skip
    if described["task"] == "multiclass":
        names = described["class_names"]
        aucs = {c: weighted_auc(labels == k, scores[:, k], w) for k, c in enumerate(names)}
        right = np.argmax(scores, axis=1) == labels
        return {"class_auc": aucs, "macro_auc": float(np.mean(list(aucs.values()))),
                "accuracy": float(np.sum(w[right]) / np.sum(w))}  # fmt: skip
    targets = {}
    for k, target in enumerate(described["targets"]):
        t, residual = truth[:, k], scores[:, k] - truth[:, k]
        # the response is a ratio only where the truth has one sign and stays away from zero
        used = t[w > 0]
        ratio = bool(np.all(used > 0) or np.all(used < 0))
        ratio = ratio and np.abs(used).min() >= 0.01 * np.median(np.abs(used))
        response = scores[:, k] / t if ratio else residual
        q25, q50, q75 = weighted_quantile(response, w, [0.25, 0.5, 0.75])
        targets[target["name"]] = {
            "rmse": float(np.sqrt(np.sum(w * residual**2) / np.sum(w))),
            "mae": float(np.sum(w * np.abs(residual)) / np.sum(w)),
            "bias": float(np.sum(w * residual) / np.sum(w)),
            "response_kind": "ratio" if ratio else "difference",
            "response": float(q50),
            "resolution": float((q75 - q25) / 1.349),
        }
    return {"targets": targets}


# --8<-- [end:metrics]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path)
    parser.add_argument("samples", nargs="+", metavar="SAMPLE=FILE")
    parser.add_argument("--validation", action="store_true", help="the validation split only")
    parser.add_argument("--metrics", type=Path, help="write the metrics as JSON (--validation)")
    parser.add_argument("--out", type=Path, help="write event ids, samples and scores (.npz)")
    args = parser.parse_args()

    described = json.loads((args.export / "export.json").read_text())
    selection = described["event_selection"]
    if selection.get("selection"):
        raise SystemExit(f"apply the dataset's selection first: {selection['selection']}")
    folds = described.get("folds")  # a k-fold export: one model per fold, chosen per event
    paths = (
        {k: m["onnx"]["path"] for k, m in folds["models"].items()}
        if folds
        else {"": described["files"]["onnx"]["path"]}
    )
    sessions = {k: onnxruntime.InferenceSession(str(args.export / p)) for k, p in paths.items()}
    output = described["outputs"][0]  # "score" (events, len(columns)): see its "columns"
    targets = [t["expression"] for t in described["targets"]]  # a regression's truth

    parts: dict[str, list] = {k: [] for k in ("ids", "sample", "label", "score", "truth", "w")}
    for pair in args.samples:
        name, _, path = pair.partition("=")
        sample = described["samples"][name]  # its label, and its weight as the shards store it
        tree = uproot.open(path)[selection["tree"]]
        feed = fill_inputs(tree, described["inputs"])
        ids = np.stack([column(tree, b) for b in selection["event_id"]], axis=1).astype(np.uint64)
        keep = np.ones(tree.num_entries, dtype=bool)
        model = np.full(tree.num_entries, "")  # which session scores each event
        if folds:  # each event by the model of its fold, which did not train on it
            model = np.array([f"fold-{k}" for k in fold_of(ids, folds["folds"], folds["seed"])])
        elif args.validation:  # (a k-fold run validates every event, each in its fold)
            split = selection["validation_split"]
            keep = in_validation(ids, split["validation_fraction"], split["seed"])
        score = np.full((int(keep.sum()), output["shape"][1]), np.nan, dtype=np.float32)
        for which, session in sessions.items():
            these = model[keep] == which
            if these.any():
                inputs = {k: v[keep][these] for k, v in feed.items()}
                score[these] = session.run([output["name"]], inputs)[0]
        weight = sample["weight"]
        weight = (
            per_event(tree, weight)
            if isinstance(weight, str)
            else np.full(keep.size, weight, "float32")
        )
        weight = (weight.astype(np.float64) * sample["factor"]).astype(np.float32)
        truth = [per_event(tree, expression)[keep] for expression in targets]
        label = -1 if sample["label"] is None else sample["label"]  # -1: a regression's
        parts["ids"].append(ids[keep])
        parts["sample"].append(np.full(score.shape[0], name))
        parts["label"].append(np.full(score.shape[0], label))
        parts["score"].append(score)
        parts["truth"].append(np.stack(truth, axis=1) if truth else score[:, :0])
        parts["w"].append(weight[keep].astype(np.float64))
        print(f"{name}: {score.shape[0]} events scored from {path}, {output['name']} {score.shape}")
    ids, sample, label, score, truth, w = (np.concatenate(parts[k]) for k in parts)
    if args.out:
        np.savez(args.out, event_id=ids, sample=sample, label=label, score=score,
                 columns=output["columns"])  # fmt: skip
    if args.validation:
        found = metrics(described, label, score.astype(np.float64), truth.astype(np.float64), w)
        print("validation metrics (negative weights counted as zero):", json.dumps(found))
        if args.metrics:
            args.metrics.write_text(json.dumps(found, indent=1) + "\n")


if __name__ == "__main__":
    main()
