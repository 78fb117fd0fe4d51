"""Classical heads on frozen features (scikit-learn), the UnivFD cosine bank, and their torch twins.

A head is a scikit-learn Pipeline: ``scale`` (StandardScaler, or passthrough for
the cosine heads, which compare directions of the raw features as UnivFD does),
``reduce`` (passthrough, PCA or the autoencoder) and ``head``. Every head gives
``predict_proba``; linear SVMs are wrapped in a sigmoid calibration so that
their P(fake) is a probability like the others'.

:func:`torch_logit` rebuilds the pipeline's fake-vs-real logit in torch for the
heads that are differentiable (logistic, LDA, linear SVM, MLP, with scaling,
PCA or the autoencoder in front), so the detector stage can take the gradient of
the head's score on the backbone's patch tokens. Other heads (trees, forests,
boosting, KNN, RBF SVM, naive Bayes, the cosine bank) have no useful gradient:
the stage gives no box for them and says why.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.decomposition import PCA
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.ensemble import BaggingClassifier, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import GaussianNB
from sklearn.neighbors import KNeighborsClassifier
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC
from sklearn.tree import DecisionTreeClassifier

from detectors.features.reduce import AutoencoderReducer, make_reduction
from explainer.errors import UsageError


class CosineBank(ClassifierMixin, BaseEstimator):
    """UnivFD's nearest neighbour: the class of the most cosine-similar feature in a bank of labelled features.

    ``predict_proba`` is a softmax over each class's best similarity divided by
    ``temperature``, so the argmax is exactly the nearest neighbour's class. The
    bank keeps at most ``max_per_class`` features per class (a seeded sample).
    """

    def __init__(self, temperature: float = 0.05, max_per_class: int = 50_000, random_state: int = 0) -> None:
        self.temperature = temperature
        self.max_per_class = max_per_class
        self.random_state = random_state

    def fit(self, X, y):
        X = np.asarray(X, dtype=np.float32)
        y = np.asarray(y)
        self.classes_ = np.unique(y)
        rng = np.random.default_rng(self.random_state)
        keep = []
        for c in self.classes_:
            idx = np.flatnonzero(y == c)
            if len(idx) > self.max_per_class:
                idx = rng.choice(idx, self.max_per_class, replace=False)
            keep.append(idx)
        keep = np.concatenate(keep)
        self.bank_ = _l2(X[keep])
        self.bank_labels_ = y[keep]
        self.n_features_in_ = X.shape[1]
        return self

    def best_similarity(self, X) -> np.ndarray:
        q = _l2(np.asarray(X, dtype=np.float32))
        out = np.full((len(q), len(self.classes_)), -1.0, dtype=np.float32)
        for start in range(0, len(q), 1024):  # bounded memory: 1024 x bank at a time
            sims = q[start : start + 1024] @ self.bank_.T
            for k, c in enumerate(self.classes_):
                mask = self.bank_labels_ == c
                out[start : start + 1024, k] = sims[:, mask].max(axis=1)
        return out

    def predict_proba(self, X) -> np.ndarray:
        s = self.best_similarity(X) / self.temperature
        s -= s.max(axis=1, keepdims=True)
        e = np.exp(s)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        return self.classes_[np.argmax(self.best_similarity(X), axis=1)]


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _linear_svm(seed: int):
    # ensemble=False: one SVM on all the data, sigmoid fitted on cross-validated decisions.
    return CalibratedClassifierCV(LinearSVC(C=1.0, random_state=seed, max_iter=5000), method="sigmoid", cv=3, ensemble=False)


# name -> (factory(seed), differentiable, uses the scaler). Data, not code paths: the grid and the CLI list these.
HEADS: dict[str, tuple[Callable[[int], BaseEstimator], bool, bool]] = {
    "logreg": (lambda s: LogisticRegression(max_iter=5000, C=1.0, random_state=s), True, True),
    "lda": (lambda s: LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto"), True, True),
    "linear-svm": (_linear_svm, True, True),
    "rbf-svm": (lambda s: SVC(kernel="rbf", probability=True, random_state=s), False, True),
    "knn1": (lambda s: KNeighborsClassifier(1, metric="cosine"), False, True),
    "knn3": (lambda s: KNeighborsClassifier(3, metric="cosine"), False, True),
    "knn5": (lambda s: KNeighborsClassifier(5, metric="cosine"), False, True),
    "naive-bayes": (lambda s: GaussianNB(), False, True),
    "tree": (lambda s: DecisionTreeClassifier(random_state=s), False, True),
    "forest": (lambda s: RandomForestClassifier(100, random_state=s, n_jobs=1), False, True),
    "bagging": (lambda s: BaggingClassifier(n_estimators=20, random_state=s), False, True),
    "gboost": (lambda s: HistGradientBoostingClassifier(random_state=s), False, True),
    "mlp": (lambda s: MLPClassifier((512,), max_iter=500, early_stopping=False, random_state=s), True, True),
    "cosine-nn": (lambda s: CosineBank(random_state=s), False, False),
}
NOT_DIFFERENTIABLE_WHY = "its score is not a differentiable function of the features (trees, neighbours, kernels or votes)"


def check_head(name: str) -> str:
    if name not in HEADS:
        raise UsageError(f"--head {name!r}: unknown; choose from {', '.join(HEADS)}")
    return name


def build_head(name: str, reduction: str, n_samples: int, n_features: int, seed: int = 0) -> Pipeline:
    factory, _, scaled = HEADS[check_head(name)]
    return Pipeline([
        ("scale", StandardScaler() if scaled else "passthrough"),
        ("reduce", make_reduction(reduction, n_samples, n_features, seed)),
        ("head", factory(seed)),
    ])


def fit_head(name: str, reduction: str, X: np.ndarray, y: np.ndarray, seed: int = 0) -> Pipeline:
    if len(np.unique(y)) < 2:
        raise UsageError("the training features hold a single class; a head needs at least two")
    return build_head(name, reduction, len(X), X.shape[1], seed).fit(X, y)


# ----------------------------------------------------------------------------- torch twins


def torch_logit(pipe: Pipeline, positive: int = 1) -> tuple[Callable[[torch.Tensor], torch.Tensor] | None, str]:
    """(f, "") with f(features) = the head's logit for class index ``positive`` against the rest, or (None, why).

    Binary heads only: the logit is exactly what sklearn's ``predict_proba`` turns
    into P(positive) (tested against it), so the gradient is the gradient of P(fake).
    """
    steps = [s for _, s in pipe.steps]
    head = steps[-1]
    classes = getattr(head, "classes_", None)
    if classes is None or len(classes) != 2:
        return None, "the head separates more than two classes; the box needs a binary real/fake head"
    if positive != 1:
        return None, "the positive class is not the second class"
    pre: list[Callable[[torch.Tensor], torch.Tensor]] = []
    for step in steps[:-1]:
        if step == "passthrough" or step is None:
            continue
        fn = _torch_transform(step)
        if fn is None:
            return None, f"the {type(step).__name__} step has no torch twin"
        pre.append(fn)
    last = _torch_head(head)
    if last is None:
        return None, NOT_DIFFERENTIABLE_WHY

    def f(x: torch.Tensor) -> torch.Tensor:
        for fn in pre:
            x = fn(x)
        return last(x)

    return f, ""


def _t(a, like: torch.Tensor | None = None) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float32))


def _torch_transform(step) -> Callable[[torch.Tensor], torch.Tensor] | None:
    if isinstance(step, StandardScaler):
        mean = _t(step.mean_ if step.with_mean else np.zeros(step.n_features_in_))
        scale = _t(step.scale_ if step.with_std else np.ones(step.n_features_in_))
        return lambda x: (x - mean) / scale
    if isinstance(step, PCA):
        mean, comp = _t(step.mean_), _t(step.components_)
        var = _t(np.sqrt(step.explained_variance_)) if step.whiten else None
        return lambda x: ((x - mean) @ comp.T) / var if var is not None else (x - mean) @ comp.T
    if isinstance(step, AutoencoderReducer):
        w1, b1, w2, b2 = _t(step.w1_), _t(step.b1_), _t(step.w2_), _t(step.b2_)
        return lambda x: torch.relu(x @ w1 + b1) @ w2 + b2
    return None


def _torch_head(head) -> Callable[[torch.Tensor], torch.Tensor] | None:
    if isinstance(head, (LogisticRegression, LinearDiscriminantAnalysis)):
        w, b = _t(head.coef_).reshape(-1), _t(head.intercept_).reshape(-1)[0]
        return lambda x: x @ w + b
    if isinstance(head, CalibratedClassifierCV):
        cal = head.calibrated_classifiers_
        if len(cal) != 1 or not isinstance(cal[0].estimator, LinearSVC) or len(cal[0].calibrators) != 1:
            return None
        svm, sig = cal[0].estimator, cal[0].calibrators[0]
        w, b = _t(svm.coef_).reshape(-1), float(svm.intercept_.reshape(-1)[0])
        a, c = float(sig.a_), float(sig.b_)
        # sklearn's sigmoid calibration: P = 1 / (1 + exp(a * f + c)), i.e. logit = -(a * f + c).
        return lambda x: -(a * (x @ w + b) + c)
    if isinstance(head, MLPClassifier):
        acts = {"relu": torch.relu, "tanh": torch.tanh, "logistic": torch.sigmoid, "identity": lambda t: t}
        act = acts[head.activation]
        layers = [(_t(W), _t(b)) for W, b in zip(head.coefs_, head.intercepts_)]

        def mlp(x: torch.Tensor) -> torch.Tensor:
            for i, (W, b) in enumerate(layers):
                x = x @ W + b
                if i < len(layers) - 1:
                    x = act(x)
            return x.reshape(-1)

        return mlp
    return None


def proba(pipe: Pipeline, X: np.ndarray) -> np.ndarray:
    return np.asarray(pipe.predict_proba(X), dtype=np.float64)
