"""The hostile suite's own runner: each case is a process of its own, with its limits, and a hang fails.

The cases of this folder are forked from a server that preloaded explain's modules
(see conftest.py); these tests check what that process gets, that a hang is caught,
and that a case gives the same answer as a fresh ``python -m explainer.cli``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def image(tmp_path):
    p = tmp_path / "1.png"
    Image.new("RGB", (32, 32), (120, 80, 40)).save(p)
    return p


def test_a_case_runs_in_its_own_process_session_folder_and_address_space_limit(start_cli, image, tmp_path):
    proc = start_cli([image, "--no-vlm", "--out", tmp_path / "out"], mem_limit_mb=5000, cwd=tmp_path,
                     env={"EXPLAIN_BATCH_SIZE": "3"}, stop=("explainer.cli.main:main", 1, "before"))
    try:
        assert proc.wait_stopped(120), proc.result()
        assert proc.pid != os.getpid()
        limits = open(f"/proc/{proc.pid}/limits").read()
        line = next(ln for ln in limits.splitlines() if ln.startswith("Max address space"))
        assert proc.mem_limit_mb >= 5000
        assert line.split()[3:5] == [str(proc.mem_limit_mb * 2**20)] * 2, line
        stat = open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()
        assert int(stat[3]) == proc.pid  # session id: it leads its own session (a timeout kills its group)
        assert os.readlink(f"/proc/{proc.pid}/cwd") == str(tmp_path)
    finally:
        proc.kill()
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def test_a_hang_is_killed_and_fails_the_test(run_cli, image, tmp_path):
    # a case that stops itself never ends: run_cli must kill it at the timeout and fail, not wait forever
    with pytest.raises(pytest.fail.Exception, match="did not finish in 1s"):
        run_cli([image, "--no-vlm", "--out", tmp_path / "out"], timeout=1, stop=("explainer.cli.main:main", 1, "before"))


def test_fork_and_fresh_python_give_the_same_answer(run_cli, image, tmp_path):
    config = tmp_path / "explain.yaml"
    config.write_text("device: 7\n")
    forked = run_cli([image, "--config", config, "--no-vlm"], timeout=60)
    fresh = subprocess.run([sys.executable, "-m", "explainer.cli", str(image), "--config", str(config), "--no-vlm"],
                           capture_output=True, text=True, timeout=120, cwd=ROOT,
                           env={**{k: v for k, v in os.environ.items() if not k.startswith("EXPLAIN_")},
                                "PYTHONPATH": ROOT, "COLUMNS": "200"})
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    forked.assert_one_line_error(2, str(config), "device: must be one of")
