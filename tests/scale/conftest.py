"""Fixtures of the Ray tests: leaving no process of ours behind (the tiny models come from tests/conftest.py)."""

from __future__ import annotations

import sys

import pytest

from scale_helpers import kill_pids, our_descendants


@pytest.fixture
def no_leftover_ray():
    """Kill, by pid, any process this test started and left behind (a Ray cluster of ours)."""
    yield
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    kill_pids(our_descendants())
