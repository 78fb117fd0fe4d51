"""bench/gpu.sh, the GPU benchmark in one command: its plumbing end to end on a CPU (DRY_RUN=1, the tiny model),
and its refusal to pretend on a machine without CUDA."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "gpu.sh"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DRY_RUN"}
    env.update(MODELS=str(tmp_path / "models"), **extra)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # this venv's explain, python
    return env


def test_gpu_script_refuses_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    run = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], cwd=ROOT, env=_env(tmp_path),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    assert "no CUDA device" in run.stderr
    assert not (tmp_path / "out" / "summary.md").exists()


def test_gpu_script_dry_run_writes_every_table(tmp_path):
    out = tmp_path / "out"
    run = subprocess.run(["bash", str(SCRIPT), str(out)], cwd=ROOT, env=_env(tmp_path, DRY_RUN="1"),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    strategies = json.loads((out / "strategies-idefics3-float32.json").read_text())
    expected = ["tree", "tree-packed", "tree-naive", "direct-cached", "decision-pipeline"]
    if importlib.util.find_spec("transformers.decision") is None:  # transformers < 5.23: reported, not faked
        expected.remove("decision-pipeline")
        assert "decision-pipeline" in strategies["settings"]["unavailable"]
    assert [s["strategy"] for s in strategies["summaries"]] == expected
    assert all(s["median_seconds"] > 0 and s["images"] == 2 for s in strategies["summaries"])
    naive = json.loads((out / "direct-naive-idefics3-float32.json").read_text())
    assert {s["strategy"]: s["yes_no"] for s in naive["summaries"]}["direct-naive"] == 70  # the whole catalogue
    throughput = json.loads((out / "throughput-idefics3-float32" / "throughput.json").read_text())
    assert sorted(p["batch_images"] for p in throughput["points"]) == [1, 2]
    assert throughput["growth"] == []  # the GPU run skips the oracle-only growth table
    summary = (out / "summary.md").read_text()
    assert "device: cpu (dry run)" in summary
    for name in ("strategies-idefics3-float32", "direct-naive-idefics3-float32", "throughput-idefics3-float32"):
        assert f"## {name}" in summary
    assert not list(out.glob("*.tmp"))  # the summary was written whole
