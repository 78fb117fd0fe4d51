"""The whole pipeline for a batch of images: detector stage, mask, tree walk with the VLM.

Each stage that cannot run (no classifier checkpoint, no VLM) says so in the
image's notes and the rest still runs; nothing is made up to fill the gap.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from explainer.answerers.base import Answerer, AnswererError, ImageContext
from explainer.engine import TreeRunner
from explainer.engine.events import RoundFinished
from explainer.engine.runner import DEFAULT_MAX_STEPS, WalkResult, explain_finding, probe_says_yes
from explainer.errors import UsageError
from explainer.images import LoadedImage, image_index
from explainer.outputs.names import printable
from explainer.trees import compile_tree
from explainer.trees.compiler import CompiledTree, default_tree_path
from explainer.trees.templates import ROI_WITH_BOX, ROI_WITHOUT_BOX  # one wording for `explain` and `tree walk`

STRATEGY_TREES = {"tree": "cifake.yaml", "direct": "direct.yaml"}
# Images walked together (--batch-images) when not given, per device. CPU 1, measured and chosen: on this
# project's 2-core CPU (`explain bench throughput --arch smolvlm-256m`, quiet, 2026-12-02) K = 2 to 8 were flat
# against K = 1 (0.96-0.98x) and K = 16 gave 1.10x and 1.16x images/s, but in bf16 (the CPU default dtype) an
# image's P(yes) then depends on which images share its batch (padding and batched matmuls round differently:
# 0.0014 on the tiny Idefics3 test model, 6 images, K = 3 and 6 against 1), so a record would change with the
# folder around it, with --resume, or between --engine local and ray; it also costs ~0.6 GB and makes the
# first record wait. A 10-16% gain does not pay for that by default: `--batch-images 16` opts in. GPU 16: not yet measured (bench/gpu.sh); there many images' questions at once
# are what keeps the device busy.
DEFAULT_BATCH_IMAGES = {"cpu": 1, "cuda": 16}
MAX_BATCH_IMAGES = 256


@dataclass
class PipelineOptions:
    tree: str | None = None  # a tree file; None: the strategy's shipped tree
    strategy: str = "tree"  # tree | direct (all 70 catalogue artifacts)
    vlm: str | None = None  # HF id or folder; None: the device's default model
    use_vlm: bool = True
    detector: str | None = None
    sr: str | None = None
    mask: str | None = None
    device: str = "auto"
    quantize: str | None = None
    vlm_mode: str = "cached"
    obj: str | None = None  # the class, when the user knows it
    max_steps: int = DEFAULT_MAX_STEPS
    explain_with_vlm: bool = False  # a free sentence from the VLM per finding instead of the tree's template
    calibration: str | None = None  # a calibration YAML from `explain calibrate` (per-node P(yes) rescaling)
    ask_all: bool = False  # also ask (and record) the questions the gates skipped
    include_paths: tuple[str, ...] = ()  # folders besides the tree's own that its includes may come from
    batch_images: int | None = None  # images walked together; None: DEFAULT_BATCH_IMAGES of the device
    server: Any = None  # ServerSettings: answer through an OpenAI-compatible server instead of loading --vlm
    packing: str = "rows"  # rows | exact: how the in-process VLM lays out a round's yes/no questions


@dataclass
class ImageReport:
    file: str
    index: int | None
    verdict: str | None = None
    p_fake: float | None = None
    obj: str | None = None
    region: str | None = None
    roi_box: list[int] | None = None
    # the tree's declared regions the walk needed: name -> {locate, located, used, box, wording[, answer]}
    regions: dict[str, dict[str, Any]] = field(default_factory=dict)
    sr_method: str | None = None
    mask_method: str | None = None
    findings: list[dict[str, Any]] = field(default_factory=list)
    questions: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None  # why the VLM questions did not run
    rounds: list[dict[str, Any]] = field(default_factory=list)  # per round: seconds, questions, tokens
    server: dict[str, Any] | None = None  # --vlm-server: the server's token counts and calls for this image
    error: str | None = None
    tree: str | None = None
    calibration: dict[str, Any] | None = None  # which calibration file the answers went through
    # kept in memory for reports, never serialised
    artifacts: dict[str, Any] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "artifacts"}
        return out


def tree_path_for(options: PipelineOptions) -> Path:
    if options.tree:
        return Path(options.tree)
    if options.strategy not in STRATEGY_TREES:
        raise UsageError(f"--strategy must be one of {', '.join(STRATEGY_TREES)}, not '{options.strategy}'")
    return default_tree_path().parent / STRATEGY_TREES[options.strategy]


class Pipeline:
    """Loads every stage once; :meth:`explain` runs a batch of loaded images."""

    def __init__(self, options: PipelineOptions, answerer: Answerer | None = None, vlm_note: str | None = None,
                 tree: CompiledTree | None = None, stages: tuple[Any, Any] | None = None) -> None:
        self.options = options
        self.tree = tree or compile_tree(tree_path_for(options), include_paths=options.include_paths)
        self.detector, self.masker = stages or load_stages(options)
        self.answerer = answerer
        self.vlm_note = vlm_note
        self.calibration = None
        if options.calibration:
            from explainer.quality.calibration import load_calibration

            self.calibration = load_calibration(options.calibration)
            self.calibration.check_tree(self.tree)
        if hasattr(answerer, "max_batch"):  # room in one forward for the questions of K images (1-8 each per round)
            answerer.max_batch = max(answerer.max_batch, 8 * self.batch_images)

    @classmethod
    def load(cls, options: PipelineOptions, on_note: Callable[[str], None] = lambda s: None) -> "Pipeline":
        """Load every stage. An explicit --vlm that fails is a usage error; the default model may be missing."""
        tree = check_tree_inputs(options)
        # detector, super-resolution and mask files before the VLM: a bad checkpoint is refused in seconds,
        # not after minutes of loading a VLM
        stages = load_stages(options)
        answerer, note = None, None
        if not options.use_vlm:
            note = "VLM questions skipped: --no-vlm was given"
        elif options.server is not None:
            from explainer.answerers.server import connect

            answerer = connect(options.server)
            try:
                answerer.check_tree(tree)  # options sharing a first token: refused before any image
            except UsageError:
                answerer.close()
                raise
            for line in answerer.notes:
                on_note(line)
        else:
            from explainer.answerers.hf import load_vlm

            try:
                answerer = load_vlm(options.vlm, device=options.device, quantize=options.quantize, mode=options.vlm_mode,
                                    packing=options.packing)
            except UsageError as exc:
                if options.vlm is not None:
                    raise
                note = f"VLM questions skipped: {exc}"
        if note:
            on_note(note)
        return cls(options, answerer, note, tree, stages)

    @property
    def batch_images(self) -> int:
        if self.options.batch_images is not None:
            return self.options.batch_images
        if getattr(self.answerer, "default_batch_images", None):  # a served VLM: --vlm-images
            return int(self.answerer.default_batch_images)
        device = getattr(getattr(self.answerer, "model", None), "device", None)
        return DEFAULT_BATCH_IMAGES["cuda" if getattr(device, "type", "cpu") == "cuda" else "cpu"]

    def explain(self, images: list[LoadedImage]) -> list[ImageReport]:
        reports = [ImageReport(file=str(li.path), index=image_index(li.path), notes=list(li.notes), tree=self.tree.name,
                               calibration=self.calibration.describe() if self.calibration else None)
                   for li in images]
        if not images:
            return reports
        t0 = time.perf_counter()
        detections = self.detector.run([li.image for li in images])
        t_det = (time.perf_counter() - t0) / len(images)
        masks = self.masker.predict([d.sr_image for d in detections])
        from masks import region_of_box

        walks: list[tuple[int, ImageContext, dict[str, str]]] = []
        for i, (li, report, det, mask) in enumerate(zip(images, reports, detections, masks)):
            report.verdict, report.p_fake, report.sr_method = det.verdict, det.p_fake, det.sr_method
            report.roi_box = list(det.roi_box) if det.roi_box else None
            report.mask_method = mask.method
            report.notes += det.notes + mask.notes
            report.timings.update({f"detector_{k}": v for k, v in det.timings.items()})
            report.timings["detector"] = t_det
            report.timings["mask"] = mask.seconds
            report.artifacts = {"original": li.image, "sr": det.sr_image, "boxed": det.boxed_image, "overlay": det.overlay,
                                "heatmap": det.heatmap, "mask": mask.mask}
            scope: dict[str, str] = {"roi": ROI_WITH_BOX if det.roi_box else ROI_WITHOUT_BOX}
            if self.options.obj:
                scope["obj"] = self.options.obj
            if det.roi_box is not None:
                where = region_of_box(mask.mask, det.roi_box)
                report.notes.append(f"the Grad-CAM box lies on the {where} (mask: {mask.method})")
                if where == "background":
                    scope["region"] = "background"  # on the object, face vs body is left to the VLM
            context = ImageContext(image=det.boxed_image, image_id=report.file, pixels=li.image, mask=mask.mask,
                                   roi_box=tuple(det.roi_box) if det.roi_box else None)
            if self.answerer is None:
                report.skipped = self.vlm_note or "VLM questions skipped: no model"
                report.region = scope.get("region")
                self._probes_only(report, context)
                continue
            walks.append((i, context, scope))
        if walks:
            # K images walked together; each image's walk is the one it gets alone (tests/test_multi_image_walk.py)
            runner = TreeRunner(self.tree, self.answerer, self.options.max_steps, self.calibration)
            items = [(context, scope) for _, context, scope in walks]
            done: set[int] = set()
            try:
                for k, walk in runner.run_many(items, batch_images=self.batch_images):
                    i, context, scope = walks[k]
                    report = reports[i]
                    self._fill(report, walk)
                    done.add(i)
                    # What the model answerer decided on its own (splitting off, a fall-back path, token choices):
                    # every record says it, so a record read alone is not misread.
                    report.notes += [f"VLM: {n}" for n in getattr(self.answerer, "notes", [])]
                    if self.options.ask_all:
                        from explainer.quality.askall import ask_skipped

                        extra = ask_skipped(self.tree, self.answerer, context, walk, scope, self.calibration)
                        report.questions += extra
                        report.counts["asked_beyond_walk"] = len(extra)
            except AnswererError as exc:  # e.g. a VLM server failed: the images not finished fail in one line
                line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                for i, _, _ in walks:
                    if i not in done:
                        reports[i].error = f"{reports[i].file}: failed: {line}"
                walks = [w for w in walks if w[0] in done]
            for i, context, _ in walks:
                if self.options.explain_with_vlm and reports[i].findings:
                    self._vlm_sentences(reports[i], context)
        return reports

    def close(self) -> None:
        close = getattr(self.answerer, "close", None)
        if close is not None:
            close()

    def _vlm_sentences(self, report: ImageReport, context: ImageContext) -> None:
        """Ask the model for one free sentence per finding (one batch on a fresh image encoding)."""
        from explainer.answerers.base import FollowUpQuery

        obj = report.obj or "object"
        queries = []
        for f in report.findings:
            description = self.tree.catalogue[f["artifact"]].description
            queries.append(FollowUpQuery(
                f["node_id"], f"This image of a {obj} may be AI-generated and shows this artifact: {f['artifact']} "
                f"({description}). In one sentence, say where in the image it shows and what it looks like.",
                max_new_tokens=48, artifact=f["artifact"], free_text=True))
        self.answerer.begin_image(context)
        try:
            answers = self.answerer.follow_up(queries)
        finally:
            self.answerer.end_image()
        for f, a in zip(report.findings, answers):
            if a.text.strip():
                f["template_explanation"] = f["explanation"]
                f["explanation"] = a.text.strip()
            else:
                report.notes.append(f"the VLM gave no sentence for {f['artifact']}: kept the tree's explanation")

    def _probes_only(self, report: ImageReport, context: ImageContext) -> None:
        """No VLM: still take every measurement the tree defines that needs no class, and say so."""
        from explainer.probes import measure

        for node in self.tree.spec.nodes.values():
            if node.kind != "probe" or node.applies_to is not None:
                continue
            value, note = measure(node.probe, context.pixels, context.mask, node.on)
            yes = probe_says_yes(node, value)
            report.questions.append({"round": 0, "node_id": node.id, "kind": "probe", "prompt": f"{node.probe} on the {node.on}",
                                     "answer": "unknown" if yes is None else ("yes" if yes else "no"), "p_yes": None,
                                     "value": value, "note": note})
            if yes and node.artifact:
                text = explain_finding(self.tree, node, self.tree.base_scope(), value=value)
                report.findings.append({"artifact": node.artifact, "explanation": text, "node_id": node.id,
                                        "region": node.on, "detail": None, "p_yes": None, "round": 0, "value": value})
        report.counts = {"yes_no": 0, "choices": 0, "follow_ups": 0, "inferred": 0,
                         "probes": sum(1 for q in report.questions if q["kind"] == "probe")}

    def _fill(self, report: ImageReport, walk: WalkResult) -> None:
        report.obj = walk.scope.get("obj")
        report.region = walk.scope.get("region")
        report.findings = [f.to_dict() for f in walk.findings]
        report.regions = walk.regions
        report.notes += walk.notes
        report.questions += question_records(walk)
        report.counts = {"yes_no": walk.yes_no, "choices": walk.choices, "follow_ups": walk.follow_ups,
                         "inferred": walk.inferred, "probes": walk.probes, "rounds": walk.rounds}
        report.rounds = _rounds(walk)
        # this image's counters (a multi-image walk reads them per image)
        stats = walk.stats if walk.stats is not None else getattr(self.answerer, "stats", None)
        report.timings["questions"] = walk.seconds
        if stats is not None:
            report.timings["vlm_prefix"] = stats.prefix_seconds
            report.counts["forward_passes"] = stats.forward_passes
            report.counts["tokens"] = stats.tokens + stats.prefix_tokens
        if hasattr(stats, "record"):  # a served VLM: the server's token counts and calls, and its notes
            report.server = stats.record()
            report.notes += stats.image_notes()
        if walk.truncated:
            report.notes.append(f"the walk stopped at the step limit ({self.options.max_steps})")


def question_records(walk: WalkResult) -> list[dict[str, Any]]:
    """The walk's questions as results.jsonl records them (asked, inferred, measured)."""
    from explainer.engine import AnswerInferred, ProbeMeasured, QuestionAnswered

    out: list[dict[str, Any]] = []
    for e in walk.events:
        if isinstance(e, QuestionAnswered):
            record = {"round": e.round, "node_id": e.node_id, "kind": e.kind, "prompt": e.prompt, "answer": e.answer,
                      "p_yes": e.p_yes, "probs": e.probs, "mass": e.mass, "tokens": e.tokens, "seconds": e.seconds}
            if e.p_calibrated is not None:
                record["p_calibrated"] = e.p_calibrated
            out.append(record)
        elif isinstance(e, AnswerInferred):
            out.append({"round": e.round, "node_id": e.node_id, "kind": "inferred", "prompt": e.prompt,
                        "answer": e.answer, "p_yes": None})
        elif isinstance(e, ProbeMeasured):
            out.append({"round": e.round, "node_id": e.node_id, "kind": "probe", "prompt": f"{e.probe} on the {e.region}",
                        "answer": e.answer, "p_yes": None, "value": e.value, "note": e.note})
    return out


def check_stage_paths(options: PipelineOptions) -> None:
    """--detector, --sr and --mask must name something that exists: a typo is refused before the seconds of
    importing timm, torchvision and scikit-learn that loading them costs. Everything else about the files
    (format, caps, shapes) is checked by their loaders."""
    for flag, value in (("--detector", options.detector), ("--sr", options.sr), ("--mask", options.mask)):
        if value is None or os.path.lexists(value):
            continue
        # a mask checkpoint may be named by its stem (runs/masks/best -> best.safetensors + best.json)
        if flag == "--mask" and os.path.lexists(f"{value}.safetensors"):
            continue
        raise UsageError(f"{printable(str(value))}: no such file or folder ({flag})")


def load_stages(options: PipelineOptions) -> tuple[Any, Any]:
    """(detector stage, mask predictor) from --detector/--sr/--mask: every file checked against its caps as it loads."""
    check_stage_paths(options)
    from detectors import DetectorStage
    from masks import MaskPredictor

    device = "cuda" if options.device in ("auto", "cuda") and _cuda() else "cpu"
    detector = DetectorStage.from_paths(sr=options.sr, classifier=options.detector, device=device)
    return detector, MaskPredictor.from_checkpoint(options.mask, device=device)


def check_tree_inputs(options: PipelineOptions) -> CompiledTree:
    """The compiled tree, once the tree, ``--class`` and the calibration file are known to fit: before any model loads."""
    tree = compile_tree(tree_path_for(options), include_paths=options.include_paths)
    check_class(tree, options.obj)
    if options.calibration:
        from explainer.quality.calibration import load_calibration

        load_calibration(options.calibration).check_tree(tree)
    return tree


def check_class(tree: CompiledTree, obj: str | None) -> None:
    """``--class`` must be one of the tree's classes: a typo would otherwise fail every image after the models load."""
    if obj is None or not tree.classes or obj in tree.classes:
        return
    import difflib

    close = difflib.get_close_matches(obj, tree.classes, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise UsageError(f"--class '{obj}' is not a class of {tree.spec.file}{hint}; its classes: {', '.join(tree.classes)}")


def _rounds(walk: WalkResult) -> list[dict[str, Any]]:
    """Per round of the walk: its wall time, how many questions it asked and the tokens they took."""
    rounds: dict[int, dict[str, Any]] = {}
    for e in walk.events:
        if isinstance(e, RoundFinished):
            rounds[e.round] = {"round": e.round, "seconds": e.seconds, "questions": 0, "tokens": 0}
    for q in walk.questions:
        if q.round in rounds:
            rounds[q.round]["questions"] += 1
            rounds[q.round]["tokens"] += q.tokens or 0
    return [rounds[r] for r in sorted(rounds)]


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover - torch is a dependency
        return False


def batched(items: Iterable, size: int) -> Iterable[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
