"""Dimensionality reduction between the features and the head: PCA, or a small autoencoder (seed 002).

A reduction spec is ``none``, ``pca:K`` or ``ae:K`` (K components; ``pca`` and
``ae`` alone mean 64). The autoencoder is trained with torch but keeps its
weights as numpy arrays, so skops persists it as plain data and ``transform``
needs no torch.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.decomposition import PCA

from explainer.errors import UsageError

DEFAULT_COMPONENTS = 64


def parse_reduction(spec: str) -> tuple[str, int]:
    spec = spec.strip().lower()
    if spec in ("", "none"):
        return "none", 0
    kind, _, k = spec.partition(":")
    if kind not in ("pca", "ae"):
        raise UsageError(f"reduction {spec!r}: use none, pca:K or ae:K")
    try:
        n = int(k) if k else DEFAULT_COMPONENTS
    except ValueError:
        raise UsageError(f"reduction {spec!r}: {k!r} is not a whole number") from None
    if not 1 <= n <= 4096:
        raise UsageError(f"reduction {spec!r}: K must be in [1, 4096]")
    return kind, n


def make_reduction(spec: str, n_samples: int, n_features: int, seed: int = 0):
    kind, n = parse_reduction(spec)
    if kind == "none":
        return "passthrough"
    n = min(n, n_features, max(1, n_samples - 1))
    if kind == "pca":
        return PCA(n_components=n, random_state=seed)
    return AutoencoderReducer(n_components=n, random_state=seed)


class AutoencoderReducer(TransformerMixin, BaseEstimator):
    """x -> ReLU(x W1 + b1) W2 + b2 (the code), trained to reconstruct x through a mirrored decoder (MSE, Adam)."""

    def __init__(self, n_components: int = DEFAULT_COMPONENTS, hidden: int = 256, epochs: int = 200,
                 lr: float = 1e-3, batch_size: int = 256, random_state: int = 0) -> None:
        self.n_components = n_components
        self.hidden = hidden
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.random_state = random_state

    def fit(self, X, y=None):
        import torch
        from torch import nn

        X = np.asarray(X, dtype=np.float32)
        gen = torch.Generator().manual_seed(int(self.random_state))
        torch.manual_seed(int(self.random_state))
        d, h, k = X.shape[1], min(self.hidden, max(X.shape[1], self.n_components)), self.n_components
        enc = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, k))
        dec = nn.Sequential(nn.Linear(k, h), nn.ReLU(), nn.Linear(h, d))
        opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=self.lr)
        data = torch.from_numpy(X)
        for _ in range(self.epochs):
            order = torch.randperm(len(data), generator=gen)
            for i in range(0, len(data), self.batch_size):
                xb = data[order[i : i + self.batch_size]]
                loss = nn.functional.mse_loss(dec(enc(xb)), xb)
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            self.reconstruction_mse_ = float(nn.functional.mse_loss(dec(enc(data)), data))
        self.w1_, self.b1_ = enc[0].weight.detach().numpy().T.copy(), enc[0].bias.detach().numpy().copy()
        self.w2_, self.b2_ = enc[2].weight.detach().numpy().T.copy(), enc[2].bias.detach().numpy().copy()
        self.n_features_in_ = d
        return self

    def transform(self, X):
        X = np.asarray(X, dtype=np.float32)
        return np.maximum(X @ self.w1_ + self.b1_, 0.0) @ self.w2_ + self.b2_
