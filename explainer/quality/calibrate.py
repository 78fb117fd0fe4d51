"""Fitting calibration files: supervised (labelled walks) and contextual (content-free images).

Supervised: every yes/no answer of a labelled run is a sample (P(yes), truth),
where the truth is whether the question's yes-branch leads to a labelled
artifact of the image (what the oracle would answer). Per node: Platt or
isotonic scaling (scikit-learn), then the threshold on the scaled value that
maximises the node's F1, or the lowest that reaches a target precision.
Images are split: the held-out share measures ECE and F1 before and after, and
the file written is then fitted on every image.

Contextual ("calibrate before use", Zhao et al. 2021): each question is asked
about content-free images (blank, noise); its mean P(yes) there is its prior,
divided out in log-odds. No labels needed.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from explainer.answerers.base import Answerer, ImageContext, YesNoQuery
from explainer.errors import UsageError
from explainer.quality.calibration import Calibration, NodeCalibration, logit
from explainer.quality.gold import Gold
from explainer.quality.paths import TreePaths
from explainer.quality.runs import Run
from explainer.safe_io import atomic_write_text
from explainer.trees.compiler import CompiledTree
from explainer.trees.templates import render

ECE_BINS = 10
CONTENT_FREE = ("blank", "noise", "black", "white")
ROI_CONTENT_FREE = "the whole image"


@dataclasses.dataclass(frozen=True)
class Sample:
    image: int
    node_id: str
    p: float
    label: bool


def labelled_samples(gold: Gold, run: Run, paths: TreePaths) -> tuple[list[Sample], Counter]:
    """Every yes/no answer with a P(yes) in the run, labelled from gold."""
    out, skipped = [], Counter()
    for index, record in sorted(run.images.items()):
        scope = {k: v for k, v in (("obj", record.obj), ("region", record.region)) if v}
        truth = gold.images[index].artifacts
        for q in record.questions:
            if q.get("kind") != "yes_no" or q.get("p_yes") is None:
                continue
            label = paths.question_truth(q.get("node_id", ""), scope, truth)
            if label is None:
                skipped["question not in the tree"] += 1
                continue
            out.append(Sample(index, q["node_id"], float(q["p_yes"]), label))
    return out, skipped


def ece(p: np.ndarray, y: np.ndarray, bins: int = ECE_BINS) -> float | None:
    """Expected calibration error over equal-width bins of P(yes)."""
    if not len(p):
        return None
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            total += sel.sum() / len(p) * abs(p[sel].mean() - y[sel].mean())
    return float(total)


def decision_f1(p: np.ndarray, y: np.ndarray, t: np.ndarray) -> float:
    pred = p >= t
    tp = int((pred & y).sum())
    denom = 2 * tp + int((pred & ~y).sum()) + int((~pred & y).sum())
    return 2 * tp / denom if denom else 0.0


def _pick_threshold(q: np.ndarray, y: np.ndarray, target_precision: float | None) -> tuple[float, bool]:
    """(threshold, target met). Thresholds lie halfway between neighbouring values, so they generalise."""
    values = np.unique(q)
    candidates = np.r_[(values[:-1] + values[1:]) / 2, values[-1] + 1e-9] if len(values) > 1 else values
    best, best_key, met = float(candidates[0]), None, False
    for t in candidates:
        pred = q >= t
        tp = int((pred & y).sum())
        fp = int((pred & ~y).sum())
        fn = int((~pred & y).sum())
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
        if target_precision is not None and precision >= target_precision and tp:
            key = (1, recall, f1)
        else:
            key = (0, f1, -abs(t - 0.5))
        if best_key is None or key > best_key:
            best, best_key = float(t), key
    met = target_precision is not None and best_key is not None and best_key[0] == 1
    return min(max(best, 0.0), 1.0), met


def fit_node(p: np.ndarray, y: np.ndarray, method: str, target_precision: float | None) -> tuple[NodeCalibration, bool]:
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        x = np.array([logit(v) for v in p]).reshape(-1, 1)
        lr = LogisticRegression(C=100.0).fit(x, y)
        node = NodeCalibration("platt", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))
    elif method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y.astype(float))
        node = NodeCalibration("isotonic", x=tuple(float(v) for v in iso.X_thresholds_),
                               y=tuple(float(v) for v in iso.y_thresholds_))
    else:
        node = NodeCalibration("none")
    q = np.array([node.apply(v) for v in p])
    threshold, met = _pick_threshold(q, y, target_precision)
    return dataclasses.replace(node, threshold=threshold), met


def _fit_all(samples: Sequence[Sample], method: str, target_precision: float | None,
             min_samples: int) -> tuple[dict[str, NodeCalibration], Counter]:
    by_node: dict[str, list[Sample]] = {}
    for s in samples:
        by_node.setdefault(s.node_id, []).append(s)
    nodes, kept = {}, Counter()
    for node_id, ss in sorted(by_node.items()):
        p = np.array([s.p for s in ss])
        y = np.array([s.label for s in ss])
        if len(ss) < min_samples:
            kept["fewer answers than --min-samples: left as it is"] += 1
            continue
        if y.all() or not y.any():
            kept["only one kind of truth (all yes or all no): left as it is"] += 1
            continue
        nodes[node_id], met = fit_node(p, y, method, target_precision)
        if target_precision is not None and not met:
            kept["target precision not reachable: best-F1 threshold used"] += 1
    return nodes, kept


def _measure(cal: Calibration, samples: Sequence[Sample], thresholds: dict[str, float]) -> dict[str, Any]:
    p = np.array([s.p for s in samples])
    y = np.array([s.label for s in samples], dtype=bool)
    t0 = np.array([thresholds.get(s.node_id, 0.5) for s in samples])
    q = np.array([cal.adjust(s.node_id, s.p) for s in samples])
    t1 = np.array([cal.threshold(s.node_id, thresholds.get(s.node_id, 0.5)) for s in samples])
    return {"answers": len(samples), "ece_before": ece(p, y), "ece_after": ece(q, y),
            "question_f1_before": decision_f1(p, y, t0) if len(p) else None,
            "question_f1_after": decision_f1(q, y, t1) if len(p) else None,
            "_p": p, "_q": q, "_y": y}


def _tree_thresholds(tree: CompiledTree) -> dict[str, float]:
    return {n.id: (n.threshold if n.threshold is not None else tree.spec.threshold)
            for n in tree.spec.nodes.values() if n.kind == "ask"}


def _finish(cal: Calibration, measured: dict[str, Any], output: Path, plot: Path | None, summary: dict[str, Any]) -> dict:
    atomic_write_text(output, cal.to_yaml())
    summary["output"] = str(output)
    p, q, y = measured.pop("_p"), measured.pop("_q"), measured.pop("_y")
    summary.update(measured)
    if len(p):
        plot = plot or output.with_suffix(".reliability.png")
        summary["plot"] = str(reliability_diagram(p, q, y, plot))
    return summary


def fit_supervised(gold: Gold, run: Run, paths: TreePaths, *, method: str = "platt",
                   target_precision: float | None = None, min_samples: int = 8, holdout: float = 0.3, seed: int = 0,
                   output: Path, plot: Path | None = None) -> dict[str, Any]:
    samples, skipped = labelled_samples(gold, run, paths)
    if not samples:
        raise UsageError(f"{run.source}: no yes/no answer with a P(yes) on a gold image: nothing to calibrate from")
    images = sorted({s.image for s in samples})
    random.Random(seed).shuffle(images)
    n_out = int(round(holdout * len(images))) if len(images) >= 5 else 0
    held = set(images[:n_out])
    train = [s for s in samples if s.image not in held]
    test = [s for s in samples if s.image in held] or samples
    thresholds = _tree_thresholds(paths.tree)
    fitted, _ = _fit_all(train, method, target_precision, min_samples)
    measured = _measure(Calibration(fitted), test, thresholds)
    nodes, kept = _fit_all(samples, method, target_precision, min_samples)
    info = {"from": run.source, "gold": gold.source, "images": len(images), "answers": len(samples),
            "target_precision": target_precision, "seed": seed}
    cal = Calibration(nodes, paths.tree.name, f"supervised-{method}", info=info)
    summary = {"method": cal.method, "tree": cal.tree, "nodes_calibrated": len(nodes),
               "nodes_left_as_they_are": dict(kept), "skipped_answers": dict(skipped), "images": len(images),
               "measured_on": f"{len(held)} held-out image(s)" if held else "the fitting data (too few images to hold any out)"}
    return _finish(cal, measured, output, plot, summary)


def content_free_image(name: str, size: int = 128, seed: int = 0):
    from PIL import Image

    if name == "noise":
        rng = np.random.default_rng(seed)
        return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    fill = {"blank": 128, "black": 0, "white": 255}.get(name)
    if fill is None:
        raise UsageError(f"unknown content-free input '{name}'; choose from {', '.join(CONTENT_FREE)}")
    return Image.new("RGB", (size, size), (fill, fill, fill))


def content_free_priors(tree: CompiledTree, answerer: Answerer, classes: Sequence[str] | None = None,
                        inputs: Sequence[str] = ("blank", "noise"), seed: int = 0) -> dict[str, float]:
    """Mean P(yes) of every yes/no node of the tree on content-free images, over the classes."""
    paths = TreePaths(tree)
    if classes:
        bad = [c for c in classes if tree.classes and c not in tree.classes]
        if bad:
            raise UsageError(f"class(es) {', '.join(bad)} not in tree '{tree.name}' ({', '.join(tree.classes)})")
    todo_classes: list[str | None] = list(classes or tree.classes or [None])
    images = [(name, content_free_image(name, seed=seed)) for name in inputs]
    preamble = tree.templates.get(("(tree)", "preamble"))
    sums: dict[str, list[float]] = {}
    for name, image in images:
        for obj in todo_classes:
            scope = {"roi": ROI_CONTENT_FREE, **({"obj": obj} if obj else {})}
            queries, seen = [], set()
            for node_id, sc in paths.ask_nodes(scope):
                prompt = render(tree.templates[(node_id, "ask")], sc)
                if (node_id, prompt) not in seen:
                    seen.add((node_id, prompt))
                    queries.append(YesNoQuery(node_id, prompt))
            facts = {"content_free": name, **({"obj": obj} if obj else {})}
            context = ImageContext(image=image, image_id=f"content-free:{name}", facts=facts,
                                   preamble=render(preamble, {**tree.base_scope(), **scope}) if preamble else "")
            answerer.begin_image(context)
            try:
                answers = answerer.yes_no(queries)
            finally:
                answerer.end_image()
            for q, a in zip(queries, answers):
                sums.setdefault(q.node_id, []).append(a.p_yes)
    return {k: float(np.mean(v)) for k, v in sums.items()}


def fit_contextual(tree: CompiledTree, answerer: Answerer, *, classes: Sequence[str] | None = None,
                   inputs: Sequence[str] = ("blank", "noise"), seed: int = 0, output: Path, plot: Path | None = None,
                   labelled: tuple[Gold, Run, TreePaths] | None = None, model: str = "") -> dict[str, Any]:
    priors = content_free_priors(tree, answerer, classes, inputs, seed)
    nodes = {k: NodeCalibration("contextual", prior=min(max(v, 1e-6), 1 - 1e-6)) for k, v in priors.items()}
    info = {"inputs": list(inputs), "classes": list(classes or tree.classes), "model": model}
    cal = Calibration(nodes, tree.name, "contextual", info=info)
    summary: dict[str, Any] = {"method": "contextual", "tree": tree.name, "nodes_calibrated": len(nodes),
                               "inputs": list(inputs),
                               "prior_range": [min(priors.values()), max(priors.values())] if priors else None}
    measured: dict[str, Any] = {"_p": np.zeros(0), "_q": np.zeros(0), "_y": np.zeros(0, dtype=bool)}
    if labelled:
        samples, _ = labelled_samples(*labelled)
        measured = _measure(cal, samples, _tree_thresholds(tree))
        summary["measured_on"] = f"every answer of {labelled[1].source}"
    else:
        summary["measured_on"] = "nothing: no labelled run given (--gold and --run), so no ECE"
    return _finish(cal, measured, output, plot, summary)


def reliability_diagram(p: np.ndarray, q: np.ndarray, y: np.ndarray, path: Path, bins: int = ECE_BINS) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from explainer.quality.curves import save_figure

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k:", linewidth=1, label="perfectly calibrated")
    for values, name in ((p, "before"), (q, "after")):
        which = np.minimum((values * bins).astype(int), bins - 1)
        xs, ys = [], []
        for b in range(bins):
            sel = which == b
            if sel.any():
                xs.append(values[sel].mean())
                ys.append(y[sel].mean())
        ax.plot(xs, ys, marker="o", label=f"{name} (ECE {ece(values, y):.3f})")
    return save_figure(fig, ax, path, xlabel="P(yes), binned", ylabel="fraction of questions whose true answer is yes",
                       title="Reliability of the yes/no answers", limit=1.0, legend_size=8)


def summary_text(summary: dict[str, Any]) -> str:
    lines = [f"{summary['method']} calibration of tree '{summary['tree']}': {summary['nodes_calibrated']} node(s) "
             f"-> {summary['output']}"]
    for k, v in (summary.get("nodes_left_as_they_are") or {}).items():
        lines.append(f"  {v} node(s): {k}")
    for k, v in (summary.get("skipped_answers") or {}).items():
        lines.append(f"  {v} answer(s) skipped: {k}")
    if summary.get("ece_before") is not None:
        lines.append(f"measured on {summary['measured_on']} ({summary['answers']} answers): "
                     f"ECE {summary['ece_before']:.3f} -> {summary['ece_after']:.3f}, "
                     f"question F1 {summary['question_f1_before']:.3f} -> {summary['question_f1_after']:.3f}")
    else:
        lines.append(f"measured on {summary['measured_on']}")
    if summary.get("plot"):
        lines.append(f"reliability diagram: {summary['plot']}")
    return "\n".join(lines)
