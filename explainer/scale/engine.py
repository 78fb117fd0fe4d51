"""``--engine ray``: the pipeline on a Ray cluster with Ray Data; the driver alone writes results.

The images are a dataset of paths; ``map_batches`` sends batches to a pool of
:class:`ExplainActor` actors, each of which loads the detector, the masks and
the VLM once and then runs exactly the local engine's per-batch code on every
batch it gets. Reports come back to the driver as they finish.

Exactly once: Ray re-runs a batch whose actor died (a restarted actor, up to
``max_task_retries`` times), so a report may arrive twice; the driver yields
the first and drops the rest, and drops anything it did not ask for. A run
that cannot finish (the cluster lost, retries spent) raises after everything
that did finish was handed over, so ``--resume`` continues from there.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from explainer.errors import ExplainerError, RuntimeFailure, UsageError
from explainer.pipeline import ImageReport, PipelineOptions
from explainer.scale.cluster import ClusterInfo, ray_cluster
from explainer.scale.wire import decode_artifacts, decode_record, encode_artifacts, encode_record

BLOCKS_PER_WORKER = 4  # small blocks keep every actor busy and make a retried batch cheap


@dataclass
class RaySettings:
    address: str | None = None  # None: a private local cluster on 127.0.0.1 for this run
    workers: int = 2  # actors, each with its own copy of the models
    worker_cpus: float | None = None  # None: share the cluster's CPUs, at most 1 per actor
    worker_gpus: float = 0.0
    batch_size: int = 32  # images per actor call
    max_task_retries: int = 3  # a batch whose actor died is tried again this many times
    local_cpus: int | None = None  # CPUs of the local cluster (None: what Ray detects)
    verbose: bool = False  # Ray's own logs and the actors' output on stderr

    def check(self) -> None:
        if self.workers < 1:
            raise UsageError(f"--workers must be at least 1, not {self.workers}")
        if self.worker_cpus is not None and not (0 < self.worker_cpus <= 1024):
            raise UsageError(f"--worker-cpus must be above 0 (fractions allowed), not {self.worker_cpus}")
        if not (0 <= self.worker_gpus <= 64):
            raise UsageError(f"--worker-gpus must be 0 or more (fractions allowed), not {self.worker_gpus}")


class ExplainActor:
    """One worker: the pipeline loaded once, then the local engine's batch code on every batch."""

    def __init__(self, options: PipelineOptions, with_artifacts: bool, cwd: str | None = None) -> None:
        from explainer.pipeline import Pipeline

        # Relative image and model paths mean what they meant on the driver, where that folder exists here too.
        if cwd and os.path.isdir(cwd):
            os.chdir(cwd)
        self.notes: list[str] = []
        self.pipeline = Pipeline.load(options, on_note=self.notes.append)
        self.with_artifacts = with_artifacts

    def __call__(self, batch: dict) -> dict[str, list]:
        from explainer.cli.explain import _explain_batch

        reports = _explain_batch(self.pipeline, [Path(str(p)) for p in batch["path"]], debug=False)
        notes, self.notes = json.dumps(self.notes), []  # an actor's load notes ride on its first batch
        return {"path": [str(p) for p in batch["path"]],
                "record": [encode_record(r) for r in reports],
                "artifacts": [encode_artifacts(r.artifacts) if self.with_artifacts else b"" for r in reports],
                "notes": [notes] + ["[]"] * (len(reports) - 1)}


def actor_env(options: PipelineOptions) -> dict | None:
    """With ``--vlm-server``, the API key the driver has, for actors on nodes that do not.

    The key travels in the actors' runtime environment, which the cluster's
    administrators can read (as they can read the actors' memory anyway).
    """
    server = getattr(options, "server", None)
    if server is None:
        return None
    name = getattr(server, "api_key_env", None) or "OPENAI_API_KEY"
    return {"env_vars": {name: os.environ[name]}} if os.environ.get(name) else None


def actor_cpus(settings: RaySettings, cluster: ClusterInfo) -> float:
    """Per-actor CPUs. Whole CPUs for every actor can starve Ray Data's own tasks and hang the run, so by
    default the actors share the cluster's CPUs with a share left over, and never ask for more than one each."""
    if settings.worker_cpus is not None:
        return settings.worker_cpus
    if cluster.cpus <= 0:
        return 1.0
    return round(min(1.0, cluster.cpus / (settings.workers + 1)), 3)


def plan_blocks(n: int, settings: RaySettings) -> tuple[int, int]:
    """(blocks, images per actor call): enough blocks that a small folder still reaches every actor."""
    blocks = max(1, min(n, max(settings.workers * BLOCKS_PER_WORKER, math.ceil(n / settings.batch_size))))
    return blocks, max(1, min(settings.batch_size, math.ceil(n / blocks)))


def explain_on_ray(paths: list[Path], options: PipelineOptions, settings: RaySettings, *, with_artifacts: bool = False,
                   on_note: Callable[[str], None] = lambda s: None) -> Iterator[ImageReport]:
    """Every path's report, each once, in the order they finish."""
    settings.check()
    if not paths:
        return
    from explainer.pipeline import check_tree_inputs

    check_tree_inputs(options)  # a broken tree, a wrong --class or calibration: refused before any cluster starts
    wanted = {str(p): p for p in paths}
    with ray_cluster(settings.address, settings.local_cpus, settings.verbose) as cluster:
        import ray.data

        if not settings.verbose:  # our progress bar and notes are enough; Ray Data's logs stay in its log folder
            logging.getLogger("ray.data").setLevel(logging.CRITICAL)
            context = ray.data.DataContext.get_current()
            context.enable_progress_bars = False
            context.print_on_execution_start = False
        cpus = actor_cpus(settings, cluster)
        if settings.worker_gpus > cluster.gpus:
            on_note(f"each actor asks for {settings.worker_gpus} GPU(s) and the cluster has {cluster.gpus:g} now: "
                    "actors wait until an autoscaler adds them")
        need = settings.workers * cpus
        pool = ray.data.ActorPoolStrategy(size=settings.workers) if need <= cluster.cpus else \
            ray.data.ActorPoolStrategy(min_size=1, max_size=settings.workers)
        if need > cluster.cpus:
            on_note(f"{settings.workers} actors × {cpus:g} CPU exceed the cluster's {cluster.cpus:g} CPUs: "
                    "starting with what fits, more as CPUs appear")
        blocks, per_call = plan_blocks(len(paths), settings)
        items = ray.data.from_items([{"path": key} for key in wanted], override_num_blocks=blocks)
        dataset = _map_with_retries(items, dict(
            fn=ExplainActor,
            fn_constructor_kwargs={"options": options, "with_artifacts": with_artifacts, "cwd": os.getcwd()},
            batch_size=per_call, batch_format="numpy", compute=pool, num_cpus=cpus,
            num_gpus=settings.worker_gpus or None, runtime_env=actor_env(options)),
            settings.max_task_retries, on_note)
        seen: set[str] = set()
        told: set[str] = set()
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
                for path, record, artifacts, notes in zip(batch["path"], batch["record"], batch["artifacts"],
                                                          batch["notes"]):
                    for note in json.loads(str(notes)):
                        if note not in told:
                            told.add(note)
                            on_note(note)
                    key = str(path)
                    if key not in wanted or key in seen:
                        continue  # a retried batch's second copy, or nothing we asked for
                    seen.add(key)
                    report = decode_record(str(record))
                    report.artifacts = decode_artifacts(bytes(artifacts))
                    yield report
        except ExplainerError:
            raise
        except Exception as exc:
            raise _failure(exc, len(seen), len(paths)) from exc
    if len(seen) < len(paths):  # Ray finished without them: never report success for images not done
        raise RuntimeFailure(f"the Ray run ended with {len(paths) - len(seen)} of {len(paths)} image(s) not explained; "
                          "run again with --resume to do them")


def _map_with_retries(items, kwargs: dict, retries: int, on_note: Callable[[str], None]):
    """``map_batches`` with a bound on retries of a batch whose actor died.

    Ray Data's default retries such a batch forever, so one image that kills
    its worker every time (out of memory, a crashing decoder) would stall the
    run for good. Ray 2.60 takes the bound only through the deprecated
    ``**ray_remote_args``; a Ray without it runs with its default and says so.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
        try:
            return items.map_batches(**kwargs, max_restarts=-1, max_task_retries=retries)
        except TypeError:
            on_note("this Ray version does not take a retry bound: a batch whose actor dies is retried without limit")
            return items.map_batches(**kwargs)


def _failure(exc: BaseException, done: int, total: int) -> ExplainerError:
    """One line for what went wrong on the cluster; a model that could not load is a usage error, as locally."""
    text = str(exc)
    for line in text.splitlines():
        if "UsageError:" in line:
            return UsageError(line.split("UsageError:", 1)[1].strip())
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)
    return RuntimeFailure(f"the Ray run failed after {done} of {total} image(s): {type(exc).__name__}: {first[:300]}; "
                       "finished images are kept; run again with --resume to do the rest")
