"""Scores of one or several runs: computed once as data, rendered as Markdown or JSON."""

from __future__ import annotations

from typing import Any, Sequence

from explainer.outputs.tables import Table
from explainer.quality.curves import pr_curve
from explainer.quality.gating import gating_loss
from explainer.quality.gold import Gold
from explainer.quality.metrics import evaluate, paired_bootstrap
from explainer.quality.paths import TreePaths
from explainer.quality.runs import Run


def score_runs(gold: Gold, runs: Sequence[Run], paths_of: Sequence[TreePaths], bootstrap: int = 2000,
               seed: int = 0, groups: dict[str, str] | None = None) -> dict[str, Any]:
    """Every table for every run; runs after the first are compared with it (paired bootstrap on micro F1).

    Groups come from one tree for every run (the shipped tree's gates unless told
    otherwise), so that a direct run and a tree run are grouped alike.
    """
    evaluations = []
    for run, paths in zip(runs, paths_of):
        ev = evaluate(gold, run, groups if groups is not None else paths.groups)
        ev["gating_loss"] = gating_loss(gold, run, paths)
        ev["pr_curve"] = pr_curve(gold, run, paths)
        evaluations.append(ev)
    if len(runs) == 1:
        return {"gold": gold.source, **evaluations[0]}
    comparisons = [paired_bootstrap(gold, runs[0], other, bootstrap, seed) for other in runs[1:]]
    return {"gold": gold.source, "runs": evaluations, "comparisons": comparisons}


def _f(x: float | None) -> str:
    return "" if x is None else f"{x:.3f}"


def _runs(result: dict[str, Any]) -> list[dict[str, Any]]:
    return result["runs"] if "runs" in result else [result]


def tables(result: dict[str, Any], top: int = 0) -> list[Table]:
    evs = _runs(result)
    out = []
    summary = Table("Explanations against the gold labels",
                    ["run", "images", "micro P", "micro R", "micro F1", "macro P", "macro R", "macro F1",
                     "false-alarm rate (no-artifact images)", "skipped"])
    for ev in evs:
        fa = ev["no_artifact_images"]
        skipped = "; ".join(f"{v} {k}" for k, v in ev["skipped"].items()) or "0"
        summary.add(ev["run"], ev["images"], _f(ev["micro"]["precision"]), _f(ev["micro"]["recall"]),
                    _f(ev["micro"]["f1"]), _f(ev["macro"]["precision"]), _f(ev["macro"]["recall"]),
                    _f(ev["macro"]["f1"]),
                    f"{_f(fa['false_alarm_rate'])} of {fa['images']}" if fa["images"] else "no such image", skipped)
    summary.footer = " ".join(n for ev in evs for n in ev["notes"])
    out.append(summary)
    if result.get("comparisons"):
        comp = Table("Paired bootstrap on the micro-F1 difference",
                     ["baseline", "other", "images", "F1 difference (other − baseline)", "95% CI", "P(other ≤ baseline)"])
        for c in result["comparisons"]:
            ci = "" if c["ci_low"] is None else f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]"
            comp.add(c["baseline"], c["other"], c["images"],
                     "" if c["f1_difference"] is None else f"{c['f1_difference']:+.3f}", ci,
                     _f(c.get("p_b_not_better")))
        comp.footer = f"{result['comparisons'][0]['samples']} resamples of the images both runs cover, seed " \
                      f"{result['comparisons'][0]['seed']}."
        out.append(comp)
    for ev in evs:
        name = ev["run"]
        art = Table(f"Per artifact: {name}", ["artifact", "group", "support", "predicted", "precision", "recall", "F1"])
        rows = ev["per_artifact"][:top] if top else ev["per_artifact"]
        for row in rows:
            art.add(row["artifact"], row["group"], row["support"], row["predicted"], _f(row["precision"]),
                    _f(row["recall"]), _f(row["f1"]))
        out.append(art)
        reg = Table(f"Per region: {name}", ["region", "support", "tp", "fp", "fn", "precision", "recall", "F1"])
        for row in ev["per_region"]:
            reg.add(row["region"], row["support"], row["tp"], row["fp"], row["fn"], _f(row["precision"]),
                    _f(row["recall"]), _f(row["f1"]))
        out.append(reg)
        grp = Table(f"Per group (the tree's gate): {name}",
                    ["group", "support", "tp", "fp", "fn", "precision", "recall", "F1"])
        for row in ev["per_group"]:
            grp.add(row["group"], row["support"], row["tp"], row["fp"], row["fn"], _f(row["precision"]),
                    _f(row["recall"]), _f(row["f1"]))
        out.append(grp)
        loss = ev.get("gating_loss")
        if loss and loss["by_cause"]:
            gl = Table(f"Gating loss: {name} ({loss['missed']} labelled artifacts missed)",
                       ["what lost them", "node", "label", "missed", "share", "artifacts"])
            for row in loss["by_cause"]:
                arts = ", ".join(f"{a} ×{n}" for a, n in list(row["artifacts"].items())[:4])
                gl.add(row["kind"], row["node_id"], row["label"], row["missed"], f"{row['share']:.0%}", arts)
            out.append(gl)
    return out


def markdown(result: dict[str, Any], top: int = 0) -> str:
    return "\n\n".join(f"### {t.title}\n\n{t.markdown()}" for t in tables(result, top)) + "\n"
