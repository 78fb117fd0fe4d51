"""Hostile inputs through the real command line: every case runs ``explain`` in a subprocess
under an address-space limit (``resource.setrlimit``) and a timeout.

Use the ``run_cli`` fixture (it returns the function, so no test imports this
conftest; conftest modules of different folders collide when imported)::

    def test_fifo_as_tree(run_cli, tmp_path):
        r = run_cli(["tree", "validate", str(fifo)], mem_limit_mb=4096, timeout=30)
        r.assert_one_line_error(2, "not a regular file")

``mem_limit_mb`` caps the child's address space (RLIMIT_AS). Importing torch
alone maps about 3.2 GB of address space (little of it resident), so limits
are the baseline plus what a case may use: :data:`BASELINE_AS_MB` is that
baseline. A hang is a test failure (the child is killed), not a stuck suite.
The peak resident memory of the child comes back as ``peak_rss_mb``.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Address space `explain` maps before it does anything (torch, numpy, PIL, cv2 imported).
BASELINE_AS_MB = 4096
DEFAULT_MEM_LIMIT_MB = BASELINE_AS_MB + 2048


@dataclass
class CliResult:
    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    peak_rss_mb: float
    seconds: float  # wall clock
    cpu_seconds: float  # user + system of the child: what the case costs on a quiet machine

    def __str__(self) -> str:
        return (f"explain {' '.join(self.args)} -> exit {self.returncode} in {self.seconds:.1f}s "
                f"({self.cpu_seconds:.1f}s CPU), "
                f"peak RSS {self.peak_rss_mb:.0f} MB\n--- stdout ---\n{self.stdout[-3000:]}\n--- stderr ---\n{self.stderr[-3000:]}")

    def assert_one_line_error(self, code: int, *fragments: str) -> str:
        """Exit ``code``, no traceback, and an ``explain: error:`` line containing every fragment; returns that line."""
        assert self.returncode == code, str(self)
        assert "Traceback" not in self.stderr, str(self)
        lines = [ln for ln in self.stderr.splitlines() if ln.startswith("explain") and "error:" in ln]
        assert lines, f"no 'explain: error:' line\n{self}"
        line = lines[-1]
        for fragment in fragments:
            assert fragment in line, f"{fragment!r} not in {line!r}\n{self}"
        return line


def _limit(mem_limit_mb: int | None):
    def apply() -> None:
        os.setsid()  # its own process group: a timeout kills the child and anything it started
        if mem_limit_mb:
            limit = int(mem_limit_mb) * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    return apply


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a hostile case runs in: this checkout's code, offline, one thread, no EXPLAIN_* leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPLAIN_")}
    env.update({"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200"})
    env.update(extra or {})
    return env


def run_cli(args: Sequence[str], mem_limit_mb: int | None = DEFAULT_MEM_LIMIT_MB, timeout: float = 60,
            cwd: str | Path | None = None, env: dict[str, str] | None = None, stdin: str | None = None) -> CliResult:
    """Run ``python -m explainer.cli ARGS`` under the limits; fail the test on a hang."""
    argv = [str(a) for a in args]
    fd, rss_file = tempfile.mkstemp(prefix="hostile-rss-")
    os.close(fd)
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, *argv], cwd=cwd,
                            env={**cli_env(env), "HOSTILE_RSS_FILE": rss_file},
                            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_limit(mem_limit_mb))
    try:
        out, err = proc.communicate(stdin.encode() if stdin is not None else None, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"explain {' '.join(argv)} did not finish in {timeout}s (hang?)\n{err.decode(errors='replace')[-2000:]}")
    finally:
        seconds = time.monotonic() - t0
        try:
            peak_kb, cpu = (float(v) for v in Path(rss_file).read_text().split())
        except (OSError, ValueError):
            peak_kb, cpu = float("nan"), float("nan")
        os.unlink(rss_file)
    return CliResult(argv, proc.returncode, out.decode("utf-8", errors="replace"), err.decode("utf-8", errors="replace"),
                     peak_kb / 1024, seconds, cpu)


def start_cli(args: Sequence[str], mem_limit_mb: int | None = DEFAULT_MEM_LIMIT_MB, cwd: str | Path | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``explain ARGS`` in the background (own process group, same limits) for kill tests; stdout/stderr piped."""
    return subprocess.Popen([sys.executable, "-m", "explainer.cli", *map(str, args)], cwd=cwd, env=cli_env(env),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_limit(mem_limit_mb))


# The child: the real command line, reporting its own peak RSS at exit (RUSAGE_CHILDREN would give the
# maximum over every child this test process ever had, not this one's).
_CHILD = """
import atexit, os, resource, runpy, sys
_rss = os.environ.pop("HOSTILE_RSS_FILE")
def _report():
    with open(_rss, "w") as fh:
        u = resource.getrusage(resource.RUSAGE_SELF)
        fh.write(f"{u.ru_maxrss} {u.ru_utime + u.ru_stime}")
atexit.register(_report)
sys.argv = ["explain", *sys.argv[1:]]
runpy.run_module("explainer.cli", run_name="__main__", alter_sys=True)
"""


@pytest.fixture(name="run_cli")
def run_cli_fixture():
    """``run_cli(args, mem_limit_mb=..., timeout=..., cwd=..., env=..., stdin=...) -> CliResult``."""
    return run_cli


@pytest.fixture(name="start_cli")
def start_cli_fixture():
    """``start_cli(args, mem_limit_mb=..., cwd=..., env=...) -> Popen`` for tests that kill a run part-way."""
    return start_cli
