"""Fork server for the hostile suite: import ``explain``'s heavy modules once, fork one process per case.

Started by ``tests/hostile/conftest.py`` as ``python tests/hostile/cli_server.py``
(never imported by a test). A fresh ``python -m explainer.cli`` spends 10-15 s
of CPU importing torch, timm, torchvision and scikit-learn before it reads its
first argument; the hostile suite runs ~60 cases, so that import was most of
its time. Here it is paid once: every case is still a separate process running
the real entry point (``runpy`` on ``explainer.cli``, what ``python -m
explainer.cli`` does) under its own ``RLIMIT_AS``, session, working folder,
environment and stdin/stdout/stderr files, and the test kills it on a timeout.

Forking is safe here because no torch operation runs before the fork: imports
only, with one OpenMP/BLAS thread, and the server checks that it has no thread
but its own before it accepts a case (a fork with live worker threads can
deadlock the child).

Protocol: one JSON object per line. Requests on stdin::

    {"id": 1, "argv": [...], "cwd": "...", "env": {...}, "mem_limit_mb": 6144,
     "stdin": PATH or null, "stdout": PATH, "stderr": PATH, "stop": ["module:function", N, "before"|"after"] or null}

answers on stdout: ``{"ready": ...}`` once, ``{"id", "pid"}`` when a case has
started, ``{"id", "exit", "maxrss_kb", "cpu_seconds"}`` when it has ended
(``exit`` as ``subprocess`` gives it: negative for a signal). ``stop`` makes
the child stop itself (SIGSTOP) at the N-th call of that function, so a kill
test kills it at a chosen point instead of racing it with sleeps.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import selectors
import signal
import sys
import threading

# What `explain IMAGE --no-vlm`, `explain tree ...`, `explain train|eval ...` import (the sub-command
# modules import the rest). A module left out is still imported, by each child, at its own cost.
PRELOAD = [
    "explainer.cli.main", "explainer.cli.explain", "explainer.cli.tree", "explainer.cli.eval", "explainer.pipeline",
    "detectors.cli", "detectors.features.cli", "detectors.features.stage", "detectors.classifier", "detectors.sr.load",
    "masks.cli", "masks.checkpoint", "masks.train",
]


def _send(message: dict) -> None:
    os.write(1, (json.dumps(message) + "\n").encode())


def _vm_size_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _install_stop(spec: list) -> None:
    """Wrap ``module:function`` so the process stops itself at its N-th call (before or after it runs)."""
    target, n, when = spec
    module_name, name = target.split(":")
    module = importlib.import_module(module_name)
    original = getattr(module, name)  # AttributeError if the code moved: the kill test must not silently pass
    calls = 0

    def stopping(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == n and when == "before":
            os.kill(os.getpid(), signal.SIGSTOP)
        result = original(*args, **kwargs)
        if calls == n and when == "after":
            os.kill(os.getpid(), signal.SIGSTOP)
        return result

    setattr(module, name, stopping)


def _child(req: dict) -> int:
    """In the forked child: become the case's process, run the command line, return its exit code."""
    os.setsid()  # its own process group: the test kills it and anything it started
    if req["mem_limit_mb"]:
        limit = int(req["mem_limit_mb"]) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.chdir(req["cwd"])
    sys.path[0] = os.getcwd()  # as `python -m` has it (the server's own folder otherwise)
    os.environ.clear()
    os.environ.update(req["env"])
    for fd, path, flags in ((0, req["stdin"] or os.devnull, os.O_RDONLY),
                            (1, req["stdout"], os.O_WRONLY | os.O_TRUNC), (2, req["stderr"], os.O_WRONLY | os.O_TRUNC)):
        new = os.open(path, flags)
        os.dup2(new, fd)
        os.close(new)
    if req["stop"]:
        _install_stop(req["stop"])
    import runpy

    sys.argv = ["explain", *req["argv"]]
    code = 0
    try:
        runpy.run_module("explainer.cli", run_name="__main__", alter_sys=True)  # ends in sys.exit(main())
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:  # what the interpreter does with an uncaught exception
        sys.excepthook(*sys.exc_info())
        code = 1
    return code


def _run_case_and_exit(req: dict, rusage_path: str | None = None) -> None:
    """Run the case, then do what interpreter shutdown does (wait for non-daemon threads, atexit, flush) and exit."""
    code = 1
    try:
        code = _child(req)
        threading._shutdown()  # type: ignore[attr-defined]
        import atexit

        atexit._run_exitfuncs()
    except BaseException:
        sys.excepthook(*sys.exc_info())
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        if rusage_path:  # a forked case's usage comes from wait4 in the server instead
            usage = resource.getrusage(resource.RUSAGE_SELF)
            with open(rusage_path, "w") as fh:
                fh.write(f"{usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}")
        os._exit(code & 0xFF)


def main() -> None:
    import torch  # noqa: F401  (first, alone: what a fresh `explain` maps at least)

    torch_vm_mb = _vm_size_mb()
    for name in PRELOAD:
        importlib.import_module(name)
    threads = threading.active_count()
    tasks = len(os.listdir("/proc/self/task"))
    if threads != 1 or tasks != 1:
        _send({"error": f"refusing to fork with {threads} Python thread(s), {tasks} OS thread(s) after the imports"})
        return
    _send({"ready": True, "vm_size_mb": _vm_size_mb(), "torch_vm_size_mb": torch_vm_mb, "pid": os.getpid()})
    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ, None)
    pidfds: dict[int, tuple[int, int]] = {}  # pidfd -> (request id, pid)
    buffer = b""
    while True:
        for key, _ in sel.select():
            if key.data is None:
                chunk = os.read(0, 1 << 16)
                if not chunk:  # the test session ended: take every case still running with us
                    for _, pid in pidfds.values():
                        try:
                            os.killpg(pid, signal.SIGKILL)
                        except OSError:
                            pass
                    os._exit(0)  # skip the interpreter's slow teardown of torch & co.
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    req = json.loads(line)
                    pid = os.fork()
                    if pid == 0:
                        for fd in pidfds:  # the server's own descriptors are not the case's business
                            os.close(fd)
                        sel.close()
                        _run_case_and_exit(req)
                    pidfd = os.pidfd_open(pid)
                    pidfds[pidfd] = (req["id"], pid)
                    sel.register(pidfd, selectors.EVENT_READ, pidfd)
                    _send({"id": req["id"], "pid": pid})
            else:
                req_id, pid = pidfds.pop(key.data)
                sel.unregister(key.data)
                os.close(key.data)
                _, status, usage = os.wait4(pid, 0)
                _send({"id": req_id, "exit": os.waitstatus_to_exitcode(status), "maxrss_kb": usage.ru_maxrss,
                       "cpu_seconds": usage.ru_utime + usage.ru_stime})


def run_one(req: dict) -> None:
    """``cli_server.py --one REQUEST``: the same case in this fresh interpreter, nothing preloaded."""
    _run_case_and_exit(req, req["rusage"])


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        run_one(json.loads(sys.argv[2]))
    main()
