"""Nothing already written is lost: results.jsonl is append-only, kills are survived, one run per folder."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys

import numpy as np
from PIL import Image


def _images(folder, n, start=1):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    for i in range(start, start + n):
        Image.fromarray((rng.random((32, 32, 3)) * 255).astype("uint8")).save(folder / f"{i}.png")


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# Where each run of the kill test is killed: it stops itself (SIGSTOP) at the N-th call of a function, is
# killed there with SIGKILL, and the next run resumes. (stop point, records on disk at the kill)
KILL_POINTS = [
    (("explainer.outputs.results:append_line_durably", 1, "after"), 1),  # the first record just written
    (("explainer.outputs.results:append_line_durably", 4, "after"), 5),  # resumed: 4 more
    (("explainer.outputs.results:atomic_write_text", 2, "before"), 10),  # every record; task1.json written, task2.json not
]


def test_kill_9_at_several_points_keeps_every_earlier_record_byte_for_byte(run_cli, start_cli, tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    _images(folder, 10)
    args = [folder, "--no-vlm", "--out", out, "--batch-size", "1", "--resume"]
    results = out / "results.jsonl"
    kept = b""
    for stop, on_disk in KILL_POINTS:
        proc = start_cli(args, stop=stop)
        assert proc.wait_stopped(180), f"the run ended before reaching {stop}: {proc.result()}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        data = results.read_bytes()
        assert data.startswith(kept), f"a record written before the kill at {stop} changed"
        assert data.count(b"\n") == on_disk and data.endswith(b"\n"), (stop, data)
        kept = data
        killed = proc.pid
    assert (out / "task1.json").is_file() and not (out / "task2.json").exists()  # killed between the two
    assert (out / ".explain.lock").exists()  # a run killed while running leaves its pid behind
    final = run_cli(args, timeout=180)
    assert final.returncode == 0, final
    assert results.read_bytes() == kept  # nothing left to do: nothing appended, nothing rewritten
    records = _records(results)
    assert sorted(r["index"] for r in records) == list(range(1, 11))  # each image exactly once
    assert all(r["error"] is None for r in records)
    assert json.loads((out / "task2.json").read_text()) is not None
    assert f"took over the lock left by an earlier run (pid {killed}, no longer running)" in final.stderr, final
    assert not (out / ".explain.lock").exists()  # a finished run leaves no lock behind


def test_resume_drops_a_truncated_line_retries_failures_and_stops_on_a_malformed_line(run_cli, tmp_path):
    folder, out, report = tmp_path / "in", tmp_path / "out", tmp_path / "report"
    _images(folder, 3)
    (folder / "4.png").write_text("not an image")
    (folder / "5.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    # outputs are replaced, never rewritten in place: a file hard-linked to them keeps its content
    out.mkdir()
    report.mkdir()
    for name, where in (("task1.json", out), ("index.html", report)):
        (tmp_path / f"keep-{name}").write_text("old")
        os.link(tmp_path / f"keep-{name}", where / name)
    cmd = [folder, "--no-vlm", "--out", out, "--report", report]
    r1 = run_cli(cmd, timeout=180)
    assert r1.returncode == 1 and "2 of 5 image(s) failed" in r1.stderr, r1
    assert (tmp_path / "keep-task1.json").read_text() == "old" and (tmp_path / "keep-index.html").read_text() == "old"
    results = out / "results.jsonl"
    first = results.read_bytes()
    assert first.count(b"\n") == 5

    results.write_bytes(first + b'{"file": "' + bytes(folder / "1"))  # what a kill mid-write leaves
    r2 = run_cli([*cmd, "--resume", "--skip-failed"], timeout=180)
    assert r2.returncode == 0, r2
    assert "results.jsonl:6: the last line is incomplete" in r2.stderr and "Traceback" not in r2.stderr
    assert results.read_bytes() == first  # the fragment cut, nothing else touched, failures not retried

    Image.new("RGB", (32, 32), (10, 200, 30)).save(folder / "4.png")  # the user fixed one file
    r3 = run_cli([*cmd, "--resume"], timeout=180)
    assert r3.returncode == 1 and "retrying 2 that failed" in r3.stderr, r3
    assert results.read_bytes().startswith(first)
    last = {r["index"]: r for r in _records(results)}
    assert last[4]["error"] is None and "5.png: not an image" in last[5]["error"]
    task1 = json.loads((out / "task1.json").read_text())
    assert task1 == []  # no classifier: no verdicts, and none made up

    lines = results.read_bytes().split(b"\n")
    lines[1] = b'{"file": 12, "index": 2, "error": null}'
    results.write_bytes(b"\n".join(lines))
    r4 = run_cli([*cmd, "--resume"], timeout=60)
    r4.assert_one_line_error(2, f"{results}:2: record's 'file' has the wrong type (int)")


def test_second_run_on_the_same_folder_is_refused_and_a_dead_runs_lock_is_taken_over(run_cli, tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    _images(folder, 1)
    out.mkdir()
    lock = out / ".explain.lock"
    with lock.open("w") as fh:  # this test process plays the first run
        fcntl.flock(fh, fcntl.LOCK_EX)
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        r = run_cli([folder, "--no-vlm", "--out", out], timeout=60)
        r.assert_one_line_error(2, str(out), f"another explain run (pid {os.getpid()})")
    assert not (out / "results.jsonl").exists()
    dead = _dead_pid()
    lock.write_text(f"{dead}\n")  # left by a run killed with -9: no flock held any more
    r = run_cli([folder, "--no-vlm", "--out", out], timeout=120)
    assert r.returncode == 0, r
    assert f"took over the lock left by an earlier run (pid {dead}, no longer running)" in r.stderr


def test_unwritable_out_fails_before_any_model_loads(run_cli, tmp_path):
    _images(tmp_path / "in", 1)
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    r = run_cli([tmp_path / "in", "--out", blocker / "out", "--vlm", tmp_path / "no-such-vlm"], timeout=60)
    r.assert_one_line_error(2, f"{blocker / 'out'}: --out is not writable")
    r = run_cli([tmp_path / "in", "--report", blocker, "--vlm", tmp_path / "no-such-vlm"], timeout=60)
    r.assert_one_line_error(2, f"{blocker}: --report must be a directory")
