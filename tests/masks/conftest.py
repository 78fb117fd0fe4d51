"""Shared fixtures: synthetic data sets written to disk and one short C-GAN training reused by several tests."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch

from masks.config import ModelConfig, TrainConfig
from masks.synthetic import write_dataset
from masks.train import TrainResult, train

# One thread: on a shared 2-core machine, 2 OpenMP threads competing with other
# processes ran >10x slower than one in our measurements.
torch.set_num_threads(1)

NARROW = ModelConfig(ngf=8, ndf=8)
# lr 2e-3 rather than pix2pix's 2e-4: the narrow net must converge in ~15 CPU
# epochs for the default test run (the slow test uses the defaults).
QUICK = TrainConfig(model=NARROW, epochs=15, batch_size=4, lr=2e-3, seed=0, threads=1)


@pytest.fixture(scope="session")
def quick() -> TrainConfig:
    """The short training recipe (a fixture: two conftest modules cannot both be imported as `conftest`)."""
    return QUICK


@pytest.fixture(scope="session")
def salient_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("salient") / "data", 40, seed=3, style="salient")


@pytest.fixture(scope="session")
def trained(salient_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[TrainResult, Path, str]:
    out = tmp_path_factory.mktemp("run") / "out"
    log = io.StringIO()
    result = train(salient_dir, out, QUICK, progress=False, out=log)
    return result, out, log.getvalue()
