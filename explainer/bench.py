"""Latency of the tree engine against direct 70-artifact prompting, per image.

The strategies run on the same images with the same model weights in one run:

* ``direct-naive``: the seed's baseline: all 70 artifacts, each a separate
  generation that encodes the image again;
* ``direct-cached``: the 70 questions with our prefix cache and batching;
* ``tree-naive``: the question tree asked the seed's way: one generation per
  question, no cache, no batching;
* ``tree``: the engine as shipped: logit scoring, prefix cache, frontier batches;
* ``tree-packed``: the same with each round's yes/no questions packed exactly
  (one sequence after the prefix, a 4D mask keeping them apart: ``--packing exact``);
* peers (``explainer/benchmarks/peers.py``) and ``tree-server`` (the tree
  through an OpenAI-compatible server, with ``--vlm-server``).

With a random-weight model the answers are noise, so by default an oracle
decides which branches open (each applicable artifact present with the tree's
default p, 2.4 per image on average) while the model still does every forward
pass: the question counts then match a realistic image.
"""

from __future__ import annotations

import copy
import dataclasses
import platform
import random
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from explainer.answerers.base import (
    AnswererBase,
    ChoiceAnswer,
    ChoiceQuery,
    FollowUpAnswer,
    FollowUpQuery,
    ImageContext,
    YesNoAnswer,
    YesNoQuery,
)
from explainer.answerers.oracle import OracleAnswerer
from explainer.engine import TreeRunner
from explainer.trees import compile_tree
from explainer.trees.templates import ROI_WITH_BOX, ROI_WITHOUT_BOX
from explainer.trees.compiler import CompiledTree, default_tree_path
from explainer.stats.tree_cost import default_p, situations

STRATEGIES: dict[str, tuple[str, str]] = {  # name -> (tree, how it is answered)
    "direct-naive": ("direct", "generate"),
    "direct-cached": ("direct", "cached"),
    "tree-naive": ("tree", "generate"),
    "tree": ("tree", "cached"),
    "tree-packed": ("tree", "cached-exact"),  # the same, each round's questions packed in one sequence (4D mask)
    # peers (explainer/benchmarks/peers.py): what users would run instead
    "decision-pipeline": ("tree", "decision"),  # transformers' pipeline("decision"), one call per question
    "direct-decision-pipeline": ("direct", "decision"),
    "direct-packed": ("direct", "packed"),  # the 70 questions in one sequence, one forward pass
    "tree-server": ("tree", "server"),  # the tree through an OpenAI-compatible server (--vlm-server URL)
}
# `explain bench` without --strategies: all but direct-decision-pipeline (70 pipeline calls per image: opt in);
# tree-server runs when a server is given and is listed as not available otherwise
DEFAULT_STRATEGIES = ("direct-naive", "direct-cached", "tree-naive", "tree", "tree-packed", "decision-pipeline",
                      "direct-packed", "tree-server")


class OracleDriven(AnswererBase):
    """The model computes every answer (that is what is timed); the oracle's answer is used."""

    name = "oracle-driven"

    def __init__(self, model: Any, oracle: OracleAnswerer) -> None:
        super().__init__()
        self.model = model
        self.oracle = oracle

    @property
    def stats(self):  # type: ignore[override]
        return self.model.stats

    @stats.setter
    def stats(self, value) -> None:  # AnswererBase.__init__ assigns one; the model's is the real one
        pass

    def begin_image(self, context: ImageContext) -> None:
        self.model.begin_image(context)
        self.oracle.begin_image(context)

    def end_image(self) -> None:
        self.model.end_image()
        self.oracle.end_image()

    def yes_no(self, queries: Sequence[YesNoQuery]) -> list[YesNoAnswer]:
        computed = self.model.yes_no(queries)
        return [YesNoAnswer(o.p_yes, c.mass, c.tokens, c.seconds) for o, c in zip(self.oracle.yes_no(queries), computed)]

    def choose(self, queries: Sequence[ChoiceQuery]) -> list[ChoiceAnswer]:
        computed = self.model.choose(queries)
        return [ChoiceAnswer(o.probs, c.tokens, c.seconds) for o, c in zip(self.oracle.choose(queries), computed)]

    def follow_up(self, queries: Sequence[FollowUpQuery]) -> list[FollowUpAnswer]:
        computed = self.model.follow_up(queries)
        return [FollowUpAnswer(o.text, c.tokens, c.seconds) for o, c in zip(self.oracle.follow_up(queries), computed)]


@dataclass
class ImageRun:
    strategy: str
    image: int
    seconds: float  # detector stage + walk
    detector_seconds: float
    encode_seconds: float
    question_seconds: float  # walk time outside the image encoding
    model_seconds: float  # inside the model's forward passes / generation, the image encoding included
    overhead_seconds: float  # everything else in the walk: the engine, templates, the processor's image preparation
    yes_no: int
    follow_ups: int
    choices: int
    rounds: int
    forward_passes: int
    tokens: int
    artifacts_true: int
    # direct-packed only: |P(yes) packed - P(yes) asked alone in the same format|, mean, and the share flipped at 0.5
    packed_mean_abs: float | None = None
    packed_flipped: float | None = None


@dataclass
class StrategySummary:
    strategy: str
    images: int
    median_seconds: float
    min_seconds: float
    max_seconds: float
    iqr_seconds: float
    yes_no: float
    follow_ups: float
    choices: float
    rounds: float
    forward_passes: float
    tokens: float
    detector_seconds: float
    encode_seconds: float
    question_seconds: float
    overhead_fraction: float  # engine overhead / per-image time
    speedup_of_tree: float = 0.0  # this strategy's median / tree's median
    ms_per_question: float = 0.0  # (median s / image - detector s) / questions asked: the image encoding included
    packed_mean_abs: float | None = None
    packed_flipped: float | None = None


@dataclass
class BenchReport:
    machine: dict[str, Any]
    model: dict[str, Any]
    settings: dict[str, Any]
    runs: list[ImageRun] = field(default_factory=list)
    summaries: list[StrategySummary] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"machine": self.machine, "model": self.model, "settings": self.settings,
                "summaries": [asdict(s) for s in self.summaries], "runs": [asdict(r) for r in self.runs]}


def machine_info(device: str) -> dict[str, Any]:
    import torch
    import transformers

    info = {"platform": platform.platform(), "python": platform.python_version(), "processor": platform.processor(),
            "cpu_threads": torch.get_num_threads(), "torch": torch.__version__, "transformers": transformers.__version__,
            "device": device}
    if device == "cuda" and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def synthetic_images(n: int, seed: int = 0):
    """Small pictures of a centred blob on a noisy background (what CIFAR-sized inputs look like)."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        bg = rng.integers(20, 230, 3)
        arr = np.clip(bg + rng.normal(0, 14, (32, 32, 3)), 0, 255).astype("uint8")
        img = Image.fromarray(arr)
        ImageDraw.Draw(img).ellipse((7, 8, 25, 26), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        out.append(img)
    return out


def _truths(tree: CompiledTree, n: int, seed: int) -> list[tuple[dict[str, str], set[str]]]:
    sits = situations(tree)
    p = default_p(sits)
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        sit = rng.choice(sits)
        out.append((sit.vars, {a for a in sit.artifacts if rng.random() < p}))
    return out


def full_detector_stage(device: str):
    """The seed's detector stage with random weights: RRDBNet ×4, DenseNet121, Grad-CAM (latency only)."""
    import torch

    from detectors import DetectorStage, RRDBNet, SuperResolver
    from detectors.classifier import ClassifierConfig, build_classifier

    torch.manual_seed(0)
    sr = SuperResolver(method="rrdbnet", net=RRDBNet().eval(), reason=None)
    classifier = build_classifier(ClassifierConfig(backbone="densenet121"))
    return DetectorStage(sr, classifier, device=device)


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def _answerer_for(mode: str, base: Any, server: Any = None):
    """The answerer a strategy's mode uses, on the already loaded model (``server``: a connected ServerAnswerer)."""
    from explainer.answerers.base import AnswererError
    from explainer.answerers.hf import VLMAnswerer

    if mode == "cached":
        return base
    if mode == "cached-exact":  # refused (ValueError) where exact packing is not verified: listed as not available
        return VLMAnswerer(base.model, base.processor, mode="cached", model_id=base.model_id,
                           max_batch=base.max_batch, packing="exact")
    if mode == "server":
        if server is None:
            raise AnswererError("no server given (--vlm-server URL)")
        return server
    if mode == "decision":
        from explainer.benchmarks.peers import DecisionPipelineAnswerer

        return DecisionPipelineAnswerer(base)
    if mode == "packed":
        from explainer.benchmarks.peers import PackedAnswerer

        return PackedAnswerer(base)
    return VLMAnswerer(base.model, base.processor, mode=mode, model_id=base.model_id)


def _check_strategies(strategies: Sequence[str]) -> None:
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        from explainer.errors import UsageError

        raise UsageError(f"unknown strategy {', '.join(unknown)}; choose from {', '.join(STRATEGIES)}")


def connect_server(settings: Any, strategies: Sequence[str]):
    """Connect to and check the server tree-server uses (ServerSettings), before any model is built or loaded:
    an unreachable server, an unknown model or a tree it cannot score is a UsageError now."""
    from explainer.errors import UsageError

    _check_strategies(strategies)
    if "tree-server" not in strategies:
        raise UsageError("--vlm-server is used by the tree-server strategy only: add tree-server to --strategies")
    from explainer.answerers.server import connect

    served = connect(settings)
    try:
        served.check_tree(compile_tree(default_tree_path()))
    except BaseException:
        served.close()
        raise
    return served


def run_bench(vlm_path: str, *, strategies: Sequence[str] = DEFAULT_STRATEGIES, n_images: int = 3,
              oracle: bool = True, device: str = "cpu", seed: int = 0, detector: Any = None,
              dtype: Any = None, quantize: str | None = None, detector_stage: str = "default",
              server: Any = None, on_progress=lambda msg: None) -> BenchReport:
    """Run every strategy on the same images with one loaded model (weights shared between modes).

    ``server``: a connected ServerAnswerer (:func:`connect_server`) that ``tree-server`` walks the tree
    through; the caller closes it. Without one, tree-server is listed as not available.
    """
    _check_strategies(strategies)
    strategies = list(dict.fromkeys(strategies))  # a strategy named twice runs once
    from detectors import DetectorStage
    from explainer.answerers.base import AnswererError
    from explainer.answerers.hf import load_vlm

    trees = {"tree": compile_tree(default_tree_path()), "direct": compile_tree(default_tree_path().parent / "direct.yaml")}
    base = load_vlm(vlm_path, device=device, dtype=dtype, quantize=quantize, mode="cached")
    if detector is None:
        detector = full_detector_stage(device) if detector_stage == "full" else DetectorStage.from_paths(device=device)
    images = synthetic_images(n_images, seed)
    truths = _truths(trees["tree"], n_images, seed)
    # the detector stage is the same for every strategy: run it once per image, count it in each
    detections, det_seconds = [], []
    for img in images:
        _sync(device)
        t0 = time.perf_counter()
        detections.append(detector.run([img])[0])
        _sync(device)
        det_seconds.append(time.perf_counter() - t0)
    report = BenchReport(
        machine=machine_info(device),
        model={"path": str(vlm_path), "model_type": base.model_type,
               "parameters": sum(p.numel() for p in base.model.parameters()),
               "dtype": str(next(base.model.parameters()).dtype).replace("torch.", ""), "notes": list(base.notes)},
        settings={"strategies": list(strategies), "images": n_images, "oracle": oracle, "seed": seed,
                  "detector_stage": detector_stage,
                  "p_artifact": default_p(situations(trees["tree"])), "unavailable": {}, "notes": {}},
    )
    ran = []
    for name in strategies:
        tree_name, mode = STRATEGIES[name]
        try:
            vlm = _answerer_for(mode, base, server)
        except (AnswererError, ValueError, NotImplementedError) as exc:  # e.g. the pipeline refuses this model
            report.settings["unavailable"][name] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
            on_progress(f"{name}: not available here ({report.settings['unavailable'][name]})")
            continue
        if getattr(vlm, "notes", None) and vlm is not base:
            report.settings["notes"][name] = list(vlm.notes)
        if mode == "server":
            report.settings["notes"].setdefault(name, []).insert(0, f"model {vlm.model_id} at {vlm.connection.url}")
        ran.append(name)
        for i, (det, (facts, truth)) in enumerate(zip(detections, truths)):
            on_progress(f"{name}: image {i + 1}/{n_images}")
            answerer = OracleDriven(vlm, OracleAnswerer(truth, facts=facts)) if oracle else vlm
            scope = {"roi": ROI_WITH_BOX if det.roi_box else ROI_WITHOUT_BOX}
            context = ImageContext(image=det.boxed_image)
            _sync(device)
            t0 = time.perf_counter()
            try:
                walk = TreeRunner(trees[tree_name], answerer).run(context, scope=scope)
            except (AnswererError, ValueError, NotImplementedError) as exc:
                report.settings["unavailable"][name] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
                on_progress(f"{name}: failed ({report.settings['unavailable'][name]})")
                ran.remove(name)
                report.runs = [r for r in report.runs if r.strategy != name]
                break
            _sync(device)
            wall = time.perf_counter() - t0
            st = copy.copy(vlm.stats)
            packed = {}
            if mode == "packed":  # after the clock: the same questions asked alone, same format
                from explainer.benchmarks.peers import packed_difference

                diff = packed_difference(vlm, dataclasses.replace(context, preamble=walk.events[0].preamble))
                packed = {"packed_mean_abs": diff["mean_abs"], "packed_flipped": diff["flipped"]}
            report.runs.append(ImageRun(
                strategy=name, image=i, seconds=wall + det_seconds[i], detector_seconds=det_seconds[i],
                encode_seconds=st.prefix_seconds, question_seconds=wall - st.prefix_seconds,
                # the answerer's model_seconds, forward_passes and tokens already include the prefix
                model_seconds=st.model_seconds, overhead_seconds=wall - st.model_seconds,
                yes_no=walk.yes_no, follow_ups=walk.follow_ups, choices=walk.choices, rounds=walk.rounds,
                forward_passes=st.forward_passes, tokens=st.tokens, artifacts_true=len(truth), **packed))
    report.summaries = summarise(report.runs, ran)
    return report


def _mean_or_none(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def summarise(runs: list[ImageRun], strategies: Sequence[str]) -> list[StrategySummary]:
    out = []
    for name in strategies:
        mine = [r for r in runs if r.strategy == name]
        secs = sorted(r.seconds for r in mine)
        q = statistics.quantiles(secs, n=4) if len(secs) >= 2 else [secs[0]] * 3

        def mean(attr: str) -> float:
            return statistics.fmean(getattr(r, attr) for r in mine)

        out.append(StrategySummary(
            strategy=name, images=len(mine), median_seconds=statistics.median(secs), min_seconds=secs[0],
            max_seconds=secs[-1], iqr_seconds=q[2] - q[0], yes_no=mean("yes_no"), follow_ups=mean("follow_ups"),
            choices=mean("choices"), rounds=mean("rounds"), forward_passes=mean("forward_passes"), tokens=mean("tokens"),
            detector_seconds=mean("detector_seconds"), encode_seconds=mean("encode_seconds"),
            question_seconds=mean("question_seconds"),
            overhead_fraction=mean("overhead_seconds") / mean("seconds") if mean("seconds") else 0.0,
            ms_per_question=1000 * (statistics.median(secs) - mean("detector_seconds"))
            / max(1e-9, mean("yes_no") + mean("choices") + mean("follow_ups")),
            packed_mean_abs=_mean_or_none([r.packed_mean_abs for r in mine]),
            packed_flipped=_mean_or_none([r.packed_flipped for r in mine])))
    tree = next((s for s in out if s.strategy == "tree"), None)
    for s in out:
        s.speedup_of_tree = s.median_seconds / tree.median_seconds if tree else 0.0
    return out
