"""``explain bench throughput``: images per second when K images are walked together.

Every grid point walks the same synthetic images (the detector stage run once
beforehand, not timed: it is the same for every K) through the shipped tree with
``TreeRunner.run_many(batch_images=K)``. As in the strategy benchmark, an oracle
decides which branches open (random-weight models answer noise) while the model
computes every answer that is timed. Reported per point: images/s over the
whole run, p50/p95 seconds per image (an image's wall time from its encoding to
its last answer, other images' rows sharing its forwards), peak RSS and, on
CUDA, peak GPU memory. CUDA is synchronised before every clock read.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

from explainer.answerers.base import AnswererStats, ImageContext
from explainer.answerers.oracle import OracleAnswerer
from explainer.bench import _sync
from explainer.benchmarks.memory import PeakMemory
from explainer.engine import TreeRunner

DEFAULT_BATCHES = (1, 2, 4, 8, 16, 32)


class OracleDrivenMany:
    """MultiImageAnswerer: the model computes every answer (that is what is timed); per-image oracles decide."""

    name = "oracle-driven-many"

    def __init__(self, model: Any, truths: Mapping[str, tuple[dict, set]]) -> None:
        self.model = model
        self.truths = truths  # image_id -> (facts, true artifacts)
        self.max_images = model.max_images
        self.oracles: dict[int, OracleAnswerer] = {}

    def answerer(self, slot: int) -> OracleAnswerer:
        return self.oracles[slot]

    def begin_images(self, contexts) -> None:
        self.model.begin_images(contexts)
        for slot, ctx in contexts.items():
            facts, truth = self.truths[ctx.image_id]
            self.oracles[slot] = OracleAnswerer(truth, facts=facts)
            self.oracles[slot].begin_image(ctx)

    def _mix(self, kind: str, queries, keep):
        computed = getattr(self.model, f"{kind}_images")(queries)
        decided = []
        for (slot, q), c in zip(queries, computed):
            decided.append(keep(getattr(self.oracles[slot], kind)([q])[0], c))
        return decided

    def yes_no_images(self, queries):
        from explainer.answerers.base import YesNoAnswer

        return self._mix("yes_no", queries, lambda o, c: YesNoAnswer(o.p_yes, c.mass, c.tokens, c.seconds))

    def choose_images(self, queries):
        from explainer.answerers.base import ChoiceAnswer

        return self._mix("choose", queries, lambda o, c: ChoiceAnswer(o.probs, c.tokens, c.seconds))

    def follow_up_images(self, queries):
        from explainer.answerers.base import FollowUpAnswer

        return self._mix("follow_up", queries, lambda o, c: FollowUpAnswer(o.text, c.tokens, c.seconds))

    def image_stats(self, slot: int) -> AnswererStats:
        return self.model.image_stats(slot)

    def end_images(self, slots) -> None:
        self.model.end_images(slots)
        for slot in slots:
            self.oracles.pop(slot).end_image()


@dataclass
class ThroughputPoint:
    batch_images: int
    images: int
    seconds: float  # wall time for all the images
    images_per_second: float
    p50_seconds: float  # one image's wall time, encoding to last answer
    p95_seconds: float
    questions: float  # per image: yes/no + choices + follow-ups
    rounds: float
    model_seconds: float  # per image: its share of the forward passes it took part in
    overhead_fraction: float  # (wall - model time) / wall: the engine, templates, image preparation, cache copies
    peak_rss_mib: float
    peak_gpu_mib: float | None = None
    speedup: float = 1.0  # images/s over images/s at K=1 (same image count)


@dataclass
class ThroughputReport:
    machine: dict[str, Any]
    model: dict[str, Any]
    settings: dict[str, Any]
    points: list[ThroughputPoint] = field(default_factory=list)
    growth: list[Any] = field(default_factory=list)
    detector_seconds: float = 0.0

    @property
    def best(self) -> ThroughputPoint | None:
        top = max(self.settings["images"])
        mine = [p for p in self.points if p.images == top]
        return max(mine, key=lambda p: p.images_per_second) if mine else None

    def to_dict(self) -> dict[str, Any]:
        return {"machine": self.machine, "model": self.model, "settings": self.settings,
                "detector_seconds_per_image": self.detector_seconds,
                "best_batch_images": self.best.batch_images if self.best else None,
                "points": [asdict(p) for p in self.points], "growth": [asdict(g) for g in self.growth]}


def _quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    if len(values) == 1:
        return values[0]
    pos = q * (len(values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def measure_point(runner: TreeRunner, items: list, k: int, device: str) -> ThroughputPoint:
    """Walk ``items`` K at a time once; the numbers of one grid point."""
    with PeakMemory(device) as peak:
        _sync(device)
        start = time.perf_counter()
        walks = [w for _, w in runner.run_many(items, batch_images=k)]
        _sync(device)
        wall = time.perf_counter() - start
    n = len(walks)
    model = sum(w.stats.model_seconds for w in walks if w.stats is not None)
    return ThroughputPoint(
        batch_images=k, images=n, seconds=wall, images_per_second=n / wall,
        p50_seconds=_quantile([w.seconds for w in walks], 0.5), p95_seconds=_quantile([w.seconds for w in walks], 0.95),
        questions=statistics.fmean(w.yes_no + w.choices + w.follow_ups for w in walks),
        rounds=statistics.fmean(w.rounds for w in walks), model_seconds=model / n,
        overhead_fraction=max(0.0, (wall - model) / wall), peak_rss_mib=peak.rss / 2**20,
        peak_gpu_mib=None if peak.gpu is None else peak.gpu / 2**20)


def run_throughput(vlm_path: str, *, batch_images: Sequence[int] = DEFAULT_BATCHES, images: Sequence[int] = (16,),
                   device: str = "cpu", dtype: Any = None, quantize: str | None = None, seed: int = 0,
                   rows_per_image: int = 8, growth: Sequence[int] = (), growth_dir: str | None = None,
                   growth_samples: int = 400, growth_timed: int = 0, growth_shapes: Sequence[str] = ("wide", "cheapest"),
                   packing: str = "rows",
                   on_progress=lambda msg: None) -> ThroughputReport:
    """The grid (every K for every image count) on one loaded model; then the cost-growth rows, if asked."""
    from detectors import DetectorStage
    from explainer.answerers.hf import load_vlm
    from explainer.bench import _truths, machine_info, synthetic_images
    from explainer.trees import compile_tree
    from explainer.trees.compiler import default_tree_path
    from explainer.stats.tree_cost import default_p, situations
    from explainer.trees.templates import ROI_WITH_BOX, ROI_WITHOUT_BOX

    tree = compile_tree(default_tree_path())
    vlm = load_vlm(vlm_path, device=device, dtype=dtype, quantize=quantize, mode="cached", packing=packing)
    vlm.max_images = max(vlm.max_images, max(batch_images))
    # one forward may carry every ready question of K images (a round is 1-8 questions per image)
    vlm.max_batch = max(vlm.max_batch, rows_per_image * max(batch_images))
    n_max = max(images)
    detector = DetectorStage.from_paths(device=device)
    pictures = synthetic_images(n_max, seed)
    start = time.perf_counter()
    detections = detector.run(pictures)
    det_seconds = (time.perf_counter() - start) / n_max
    truths = {f"img{i}": t for i, t in enumerate(_truths(tree, n_max, seed))}
    items = []
    for i, det in enumerate(detections):
        scope = {"roi": ROI_WITH_BOX if det.roi_box else ROI_WITHOUT_BOX}
        items.append((ImageContext(image=det.boxed_image, image_id=f"img{i}"), scope))
    runner = TreeRunner(tree, OracleDrivenMany(vlm, truths))
    report = ThroughputReport(
        machine=machine_info(device),
        model={"path": str(vlm_path), "model_type": vlm.model_type,
               "parameters": sum(p.numel() for p in vlm.model.parameters()),
               "dtype": str(next(vlm.model.parameters()).dtype).replace("torch.", ""), "quantize": quantize},
        settings={"batch_images": list(batch_images), "images": list(images), "seed": seed, "oracle": True,
                  "p_artifact": default_p(situations(tree)), "tree": tree.name,
                  "packing": packing, "growth_samples": growth_samples, "growth_shapes": list(growth_shapes)},
        detector_seconds=det_seconds)
    on_progress("warm-up: one image")
    list(runner.run_many(items[:1], batch_images=1))  # first-call allocations are not anyone's cost
    for n in images:
        for k in batch_images:
            on_progress(f"{n} images, K={k}")
            report.points.append(measure_point(runner, items[:n], k, device))
    for p in report.points:
        one = next((q for q in report.points if q.images == p.images and q.batch_images == 1), None)
        p.speedup = p.images_per_second / one.images_per_second if one else 0.0
    if growth:
        from explainer.benchmarks.growth import run_growth

        report.growth = run_growth(growth_dir or "runs/generated-trees", growth, samples=growth_samples, seed=seed,
                                   vlm=vlm, timed_images=growth_timed, on_progress=on_progress, shapes=growth_shapes)
    return report


def plot_throughput(report: ThroughputReport, path) -> None:
    """images/s against K, one line per image count (matplotlib PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for n in report.settings["images"]:
        pts = sorted((p for p in report.points if p.images == n), key=lambda p: p.batch_images)
        ax.plot([p.batch_images for p in pts], [p.images_per_second for p in pts], marker="o", label=f"{n} images")
    ax.set_xscale("log", base=2)
    ks = sorted({p.batch_images for p in report.points})
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.minorticks_off()
    ax.set_xlabel("images walked together (--batch-images)")
    ax.set_ylabel("images / s")
    m = report.model
    ax.set_title(f"{m['model_type']} {m['parameters'] / 1e6:.1f}M {m['dtype']} on {report.machine['device']}", fontsize=9)
    ax.set_ylim(bottom=0)  # from zero: a 10% gain should look like one
    ax.grid(True, alpha=0.3)
    ax.legend()
    _save_png(fig, path)


def plot_growth(report: ThroughputReport, path) -> None:
    """Questions per image against catalogue size (log scale), one line per tree shape and the entropy floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    shapes = list(dict.fromkeys(g.shape for g in report.growth))
    for shape in shapes:
        rows = sorted((g for g in report.growth if g.shape == shape), key=lambda g: g.artifacts)
        ax.plot([g.artifacts for g in rows], [g.expected for g in rows], marker="o",
                label=f"{shape} ({rows[-1].ratio_to_smallest:.4f}x at {rows[-1].artifacts})")
    floor = sorted({(g.artifacts, g.floor) for g in report.growth if g.shape == shapes[0]})
    ax.plot([a for a, _ in floor], [f for _, f in floor], linestyle="--", color="gray",
            label=f"entropy floor ({floor[-1][1] / floor[0][1]:.4f}x)")
    sizes = [a for a, _ in floor]
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(n) for n in sizes])
    ax.minorticks_off()
    ax.set_xlabel("artifacts in the catalogue (2.4 per image at every size)")
    ax.set_ylabel("questions per image (exact expectation)")
    ax.set_title("cost growth of generated trees: a straight line on a log axis grows like the depth", fontsize=9)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend()
    _save_png(fig, path)


def _save_png(fig, path) -> None:
    import io

    import matplotlib.pyplot as plt

    from explainer.safe_io import atomic_write_bytes

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
