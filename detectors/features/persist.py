"""A head folder: ``head.skops`` (the fitted pipeline) and ``head.json`` (what it needs and what it scored).

skops, never pickle: loading runs no code from the file. Before loading, the
types the file names are checked with ``skops.io.get_untrusted_types``: the
ones skops does not trust by default must all be in :data:`TRUSTED_TYPES`
(our own estimators and the few numpy/scikit-learn internals the heads use).
Anything else is refused in one line naming the file and the first such type.

``head.json`` records the backbone spec and its description (model, processor,
weights), the transform the training features went through, the feature cache
key, the head and reduction, the class names, the metrics on the test split,
and the library versions.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import sklearn
import skops
import skops.io as sio
from sklearn.pipeline import Pipeline

from explainer.errors import UsageError
from explainer.safe_io import atomic_write_bytes, atomic_write_text, check_regular_file, read_bytes_capped, read_text_capped

FORMAT = "explainer-feature-head"
VERSION = 1
HEAD_FILE, META_FILE = "head.skops", "head.json"
# A cosine bank of 100k CLIP-L features is ~300 MB; nothing legitimate is bigger.
MAX_HEAD_BYTES = 1024**3
# Types outside skops' default trust list that our heads legitimately contain.
TRUSTED_TYPES = frozenset({
    "detectors.features.heads.CosineBank",
    "detectors.features.reduce.AutoencoderReducer",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn._loss.link.Interval",
    "sklearn._loss.link.LogitLink",
    "sklearn._loss.link.MultinomialLogit",
    "sklearn._loss.link.IdentityLink",
    "sklearn._loss.loss.HalfBinomialLoss",
    "sklearn._loss.loss.HalfMultinomialLoss",
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.tree._tree.Tree",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
    "sklearn.neighbors._ball_tree.BallTree",
    "numpy.dtype",
    "builtins.slice",
})


def is_head_dir(path: str | Path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / META_FILE).is_file()


def save_head(out_dir: str | Path, pipe: Pipeline, meta: dict[str, Any]) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = sio.dumps(pipe)
    untrusted = sorted(set(sio.get_untrusted_types(data=data)) - TRUSTED_TYPES)
    if untrusted:  # our own save must load again: catch a new internal type here, not at the user's
        raise RuntimeError(f"head contains types outside the trusted list: {', '.join(untrusted)}")
    record = {
        "format": FORMAT, "version": VERSION, **meta,
        "versions": {"sklearn": sklearn.__version__, "skops": skops.__version__, "numpy": np.__version__},
    }
    atomic_write_bytes(out / HEAD_FILE, data)
    atomic_write_text(out / META_FILE, json.dumps(record, indent=2, sort_keys=True, default=_json_default) + "\n")
    return out


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def load_meta(head_dir: str | Path) -> dict[str, Any]:
    path = Path(head_dir) / META_FILE
    text = read_text_capped(path, what="head metadata")
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON (line {exc.lineno})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UsageError(f"{path}: not a feature head (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != VERSION:
        raise UsageError(f"{path}: feature head version {meta.get('version')!r}; this explain reads version {VERSION}")
    for key, kind in (("backbone", str), ("classes", list), ("head", str)):
        if not isinstance(meta.get(key), kind):
            raise UsageError(f"{path}: missing or malformed '{key}'")
    if not 2 <= len(meta["classes"]) <= 1000 or not all(isinstance(c, str) for c in meta["classes"]):
        raise UsageError(f"{path}: 'classes' must be 2 to 1000 names")
    return meta


def load_pipeline(head_dir: str | Path) -> Pipeline:
    path = check_regular_file(Path(head_dir) / HEAD_FILE, "head")
    data = read_bytes_capped(path, MAX_HEAD_BYTES, "head")
    try:
        types = sio.get_untrusted_types(data=data)
    except Exception as exc:  # a corrupt archive raises zipfile/JSON/KeyError alike
        raise UsageError(f"{path}: not a readable skops file ({type(exc).__name__})") from None
    refused = sorted(set(types) - TRUSTED_TYPES)
    if refused:
        raise UsageError(f"{path}: refusing to load: untrusted type {refused[0]}" + (f" (+{len(refused) - 1} more)" if len(refused) > 1 else ""))
    try:
        pipe = sio.loads(data, trusted=list(types))
    except Exception as exc:
        raise UsageError(f"{path}: cannot load the head ({type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''})") from None
    if not isinstance(pipe, Pipeline) or not hasattr(pipe, "predict_proba"):
        raise UsageError(f"{path}: not a scikit-learn pipeline with predict_proba")
    return pipe
