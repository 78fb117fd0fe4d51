"""Hostile inputs through the real command line: every case runs ``explain`` in a process of its own,
under an address-space limit (``resource.setrlimit``) and a timeout.

Use the ``run_cli`` fixture (it returns the function, so no test imports this
conftest; conftest modules of different folders collide when imported)::

    def test_fifo_as_tree(run_cli, tmp_path):
        r = run_cli(["tree", "validate", str(fifo)], mem_limit_mb=4096, timeout=30)
        r.assert_one_line_error(2, "not a regular file")

How a case runs (``HOSTILE_CLI``):

- ``fork`` (default): a fork server (``cli_server.py``) imports explain's heavy
  modules (torch, timm, torchvision, scikit-learn: 10-15 s of CPU) once per
  test session, then forks one process per case. That process gets its own
  session, ``RLIMIT_AS``, working folder, environment and stdin/stdout/stderr
  files and runs the real entry point (``runpy`` on ``explainer.cli``, what
  ``python -m explainer.cli`` does); the test kills it on a timeout.
- ``subprocess``: a fresh Python per case running the same code, imports
  included (``HOSTILE_CLI=subprocess python -m pytest tests/hostile``): slower,
  and it also checks that nothing depends on what the server preloaded.

``mem_limit_mb`` caps the case's address space (RLIMIT_AS). Importing torch
alone maps about 3.2 GB of address space (little of it resident), so limits
are that baseline plus what a case may use: :data:`BASELINE_AS_MB` is that
baseline. The server's preloaded modules map ~0.8 GB more than torch alone
(timm, torchvision, scikit-learn; a fresh ``explain train masks`` does not
import them): a forked case's limit is raised by exactly that much
(``_ForkServer.preloaded_extra_mb``), so it has the same room as a fresh one. A hang is a test failure
(the case is killed), not a stuck suite. The peak resident memory of the case
comes back as ``peak_rss_mb``.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER = Path(__file__).with_name("cli_server.py")
MODE = os.environ.get("HOSTILE_CLI", "fork")
# Address space `explain` maps before it does anything (torch, numpy, PIL, cv2 imported).
BASELINE_AS_MB = 4096
DEFAULT_MEM_LIMIT_MB = BASELINE_AS_MB + 2048
SERVER_START_TIMEOUT_S = 600  # the imports: ~20 s on a quiet machine, minutes on a loaded one


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


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment a hostile case runs in: this checkout's code, offline, one thread, no EXPLAIN_* leaking in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXPLAIN_")}
    env.update({"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200"})
    env.update(extra or {})
    return env


class _ForkServer:
    """The client side of ``cli_server.py``: start it once, submit cases, collect their exits."""

    def __init__(self) -> None:
        self._log = tempfile.TemporaryFile()
        # one BLAS/OpenMP thread and no jemalloc background thread (pyarrow's, imported through scikit-learn):
        # the server refuses to fork while any thread but its own runs
        env = cli_env({"OPENBLAS_NUM_THREADS": "1", "JE_ARROW_MALLOC_CONF": "background_thread:false"})
        self.proc = subprocess.Popen([sys.executable, str(SERVER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, env=env, cwd=ROOT)
        self._buffer = b""
        self._exits: dict[int, dict] = {}
        self._next_id = 0
        ready = self._read(time.monotonic() + SERVER_START_TIMEOUT_S)
        if ready and "error" in ready:  # it will not fork (a library started a thread): say so, run cases fresh
            self.close()
            raise _CannotFork(ready["error"])
        if not ready or not ready.get("ready"):
            self._fail(f"the hostile fork server did not start: {ready}")
        self.vm_size_mb = ready["vm_size_mb"]
        # Address space the preloaded modules map beyond torch's: a fresh `explain train masks` does not map
        # timm, torchvision or scikit-learn, so a forked case gets this much more, and the same room to work in.
        self.preloaded_extra_mb = max(0, int(ready["vm_size_mb"] - ready["torch_vm_size_mb"]) + 1)

    def _fail(self, message: str):
        self._log.seek(0)
        raise RuntimeError(f"{message}\n{self._log.read().decode(errors='replace')[-3000:]}")

    def _read(self, deadline: float) -> dict | None:
        """The next message, or None at the deadline."""
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                return None
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
            if not chunk:
                self._fail(f"the hostile fork server exited ({self.proc.poll()})")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def submit(self, request: dict) -> tuple[int, int]:
        """Start a case; returns (request id, pid)."""
        self._next_id += 1
        request["id"] = self._next_id
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        self.proc.stdin.flush()
        while True:
            message = self._read(time.monotonic() + 60)
            if message is None:
                self._fail("the hostile fork server did not start a case within 60 s")
            if "pid" in message and message.get("id") == self._next_id:
                return self._next_id, message["pid"]
            self._exits[message["id"]] = message

    def exit_of(self, request_id: int, timeout: float | None) -> dict | None:
        """The exit message of a case, waiting up to ``timeout`` seconds (None: forever, 0: do not wait)."""
        deadline = time.monotonic() + (1e9 if timeout is None else timeout)
        while request_id not in self._exits:
            message = self._read(deadline)
            if message is None:
                return None
            self._exits[message["id"]] = message
        return self._exits[request_id]

    def close(self) -> None:
        self.proc.stdin.close()  # the server kills whatever still runs and exits
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


class _CannotFork(RuntimeError):
    pass


_SERVER: _ForkServer | None = None


def _server() -> _ForkServer | None:
    """The session's fork server, started on first use; None (and every case in a fresh Python) if it cannot fork."""
    global _SERVER, MODE
    if _SERVER is None and MODE != "subprocess":
        try:
            _SERVER = _ForkServer()
        except _CannotFork as exc:
            warnings.warn(f"hostile cases run in fresh processes (slow): {exc}")
            MODE = "subprocess"
    return _SERVER


class CliProcess:
    """One running case, with the parts of ``subprocess.Popen`` the tests use (pid, poll, wait, communicate, kill)."""

    def __init__(self, args: Sequence[str], mem_limit_mb: int | None, cwd, env, stdin: str | None,
                 stop: tuple[str, int, str] | None) -> None:
        self.args = [str(a) for a in args]
        self._dir = tempfile.mkdtemp(prefix="hostile-case-")
        self._out, self._err = os.path.join(self._dir, "stdout"), os.path.join(self._dir, "stderr")
        for path in (self._out, self._err):
            open(path, "wb").close()
        stdin_path = None
        if stdin is not None:
            stdin_path = os.path.join(self._dir, "stdin")
            Path(stdin_path).write_bytes(stdin.encode())
        request = {"argv": self.args, "cwd": str(cwd or os.getcwd()), "env": cli_env(env), "mem_limit_mb": mem_limit_mb,
                   "stdin": stdin_path, "stdout": self._out, "stderr": self._err, "stop": list(stop) if stop else None,
                   "rusage": os.path.join(self._dir, "rusage")}
        _server()  # started (once) before the clock: its imports are not this case's time
        self.t0 = time.monotonic()
        self.returncode: int | None = None
        self._usage = (float("nan"), float("nan"))
        if MODE == "subprocess":
            self._popen = subprocess.Popen([sys.executable, str(SERVER), "--one", json.dumps(request)], cwd=ROOT,
                                           env=cli_env(env), stdin=subprocess.DEVNULL)
            self.pid = self._popen.pid
        else:
            self._popen = None
            if mem_limit_mb:
                request["mem_limit_mb"] = mem_limit_mb + _server().preloaded_extra_mb
            self._id, self.pid = _server().submit(request)
        self.mem_limit_mb = request["mem_limit_mb"]
        self.seconds = float("nan")
        self._output: tuple[bytes, bytes] | None = None

    def _ended(self, code: int) -> int:
        self.returncode = code
        self.seconds = time.monotonic() - self.t0
        return code

    def poll(self) -> int | None:
        if self.returncode is None:
            self._wait(0)
        return self.returncode

    def _wait(self, timeout: float | None) -> bool:
        if self._popen is not None:
            try:
                code = self._popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return False
            try:
                rss_kb, cpu = (float(v) for v in Path(self._dir, "rusage").read_text().split())
                self._usage = (rss_kb, cpu)
            except (OSError, ValueError):  # killed: no usage written
                pass
            self._ended(code)
            return True
        message = _server().exit_of(self._id, timeout)
        if message is None:
            return False
        self._usage = (message["maxrss_kb"], message["cpu_seconds"])
        self._ended(message["exit"])
        return True

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None and not self._wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def kill(self) -> None:
        """SIGKILL the case and its process group (it may have started others)."""
        if self.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def is_stopped(self) -> bool:
        """True while the case is stopped (SIGSTOP from a ``stop`` point)."""
        try:
            with open(f"/proc/{self.pid}/stat") as fh:
                return fh.read().rsplit(")", 1)[1].split()[0] == "T"
        except OSError:
            return False

    def wait_stopped(self, timeout: float) -> bool:
        """Wait until the case stops at its ``stop`` point (True) or ends first (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.is_stopped():
                return True
            if self.poll() is not None:
                return False
            time.sleep(0.01)
        return False

    def communicate(self) -> tuple[bytes, bytes]:
        self.wait()
        if self._output is None:
            self._output = Path(self._out).read_bytes(), Path(self._err).read_bytes()
            shutil.rmtree(self._dir, ignore_errors=True)
        return self._output

    def result(self) -> CliResult:
        out, err = self.communicate()
        rss_kb, cpu = self._usage
        result = CliResult(self.args, self.returncode, out.decode("utf-8", errors="replace"),
                           err.decode("utf-8", errors="replace"), rss_kb / 1024, self.seconds, cpu)
        if os.environ.get("HOSTILE_TIMINGS"):  # a file to append one line per case to: what each case costs
            with open(os.environ["HOSTILE_TIMINGS"], "a") as fh:
                fh.write(f"{cpu:7.2f}s CPU {self.seconds:7.2f}s wall {rss_kb / 1024:6.0f} MB exit {self.returncode:3d} "
                         f"{MODE}: explain {' '.join(self.args)[:160]}\n")
        return result


def start_cli(args: Sequence[str], mem_limit_mb: int | None = DEFAULT_MEM_LIMIT_MB, cwd: str | Path | None = None,
              env: dict[str, str] | None = None, stdin: str | None = None,
              stop: tuple[str, int, str] | None = None) -> CliProcess:
    """Start ``explain ARGS`` in the background under the limits, for kill tests.

    ``stop=("module:function", N, "before"|"after")`` makes the case stop itself (SIGSTOP) at the N-th call of
    that function: ``proc.wait_stopped(timeout)`` then tells when it is there, to be killed at a chosen point.
    """
    return CliProcess(args, mem_limit_mb, cwd, env, stdin, stop)


def run_cli(args: Sequence[str], mem_limit_mb: int | None = DEFAULT_MEM_LIMIT_MB, timeout: float = 60,
            cwd: str | Path | None = None, env: dict[str, str] | None = None, stdin: str | None = None,
            stop: tuple[str, int, str] | None = None) -> CliResult:
    """Run ``explain ARGS`` under the limits and wait for it; a hang is killed and fails the test."""
    proc = start_cli(args, mem_limit_mb, cwd, env, stdin, stop)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"explain {' '.join(proc.args)} did not finish in {timeout}s (hang?)\n"
                    f"{err.decode(errors='replace')[-2000:]}")
    return proc.result()


@pytest.fixture(scope="session", autouse=True)
def _close_fork_server():
    yield
    global _SERVER
    if _SERVER is not None:
        _SERVER.close()
        _SERVER = None


@pytest.fixture(name="run_cli")
def run_cli_fixture():
    """``run_cli(args, mem_limit_mb=..., timeout=..., cwd=..., env=..., stdin=...) -> CliResult``."""
    return run_cli


@pytest.fixture(name="start_cli")
def start_cli_fixture():
    """``start_cli(args, mem_limit_mb=..., cwd=..., env=..., stop=...) -> CliProcess`` for tests that kill a run."""
    return start_cli
