"""Tree against direct prompting on explanation F1 and seconds per image, with a simulated answerer.

The answers come from :class:`FaultyAnswerer` (the oracle with a stated noise
level), so the F1 measures what the strategy's *structure* costs or saves
under that noise, not what any real model achieves: it is simulated and says
so. With a model (``--vlm`` or ``--arch``) the model computes every answer the
walk asks, on synthetic images, so the seconds are the real cost of those
questions; without one, the seconds are the engine's own time only.
"""

from __future__ import annotations

import statistics
from typing import Any, Callable

from explainer.quality.gold import Gold, GoldImage
from explainer.quality.metrics import evaluate
from explainer.quality.paths import TreePaths, shipped_trees
from explainer.quality.runs import records_to_run
from explainer.quality.simulate import FaultyAnswerer, sample_truths, simulate_run
from explainer.trees.catalogue import builtin_catalogue


def compare_strategies(n_images: int = 200, *, noise: float = 1.0, flip: float = 0.0, seed: int = 0,
                       vlm_path: str | None = None, device: str = "cpu",
                       on_progress: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    cifake, direct = shipped_trees()
    truths = sample_truths(cifake, n_images, seed)
    gold = Gold("simulated", {k: GoldImage(k, frozenset(t), {a: f["region"] for a in t} if f.get("region") else {})
                              for k, (f, t) in enumerate(truths, start=1)})
    model, images, model_info = None, None, None
    if vlm_path:
        from explainer.answerers.hf import load_vlm
        from explainer.bench import synthetic_images

        model = load_vlm(vlm_path, device=device)
        images = synthetic_images(n_images, seed)
        model_info = {"path": vlm_path, "model_type": model.model_type,
                      "parameters": sum(p.numel() for p in model.model.parameters())}
    groups = TreePaths(cifake).groups
    rows = []
    for name, tree in (("tree", cifake), ("direct", direct)):
        on_progress(f"{name}: {n_images} image(s)")
        faulty = FaultyAnswerer(noise=noise, flip=flip, seed=seed)
        walker = None
        if model is not None:
            from explainer.bench import OracleDriven

            walker = OracleDriven(model, faulty)
        records = simulate_run(tree, faulty, truths, images=images, walker=walker)
        ev = evaluate(gold, records_to_run(name, "simulated", enumerate(records, 1), gold, builtin_catalogue()), groups)
        seconds = [r["timings"]["questions"] for r in records]
        rows.append({"strategy": name, "micro": ev["micro"], "macro": ev["macro"],
                     "false_alarm_rate": ev["no_artifact_images"]["false_alarm_rate"],
                     "yes_no_per_image": statistics.mean(r["counts"]["yes_no"] for r in records),
                     "rounds_per_image": statistics.mean(r["counts"]["rounds"] for r in records),
                     "seconds_per_image_median": statistics.median(seconds),
                     "seconds_per_image_mean": statistics.mean(seconds)})
    return {"simulated": True, "images": n_images, "seed": seed,
            "answerer": {"noise_logit_sd": noise, "flip": flip, "confidence": 0.9,
                         "description": "the oracle's answer at P(yes) 0.9 / 0.1, plus Gaussian noise of this sd in "
                                        "log-odds, flipped with this probability"},
            "timed_by": model_info or "the engine only (no model: seconds exclude any model time)",
            "rows": rows}
