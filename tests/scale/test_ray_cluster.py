"""``--engine ray`` on a real local Ray cluster: same records as the local engine, a killed worker, a killed driver.

Each test starts its own cluster (10-20 s here) and walks 16 images with the
tiny VLM, so these are marked ``ray`` and run by ``scripts/test-ray.sh``
(``python -m pytest -m ray tests/scale``), not by the default suite.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from explainer.cli import main
from scale_helpers import (comparable, kill_pids, make_images, our_descendants, read_records, session_members,
                                  wait_until_gone)

ray = pytest.importorskip("ray", reason="--engine ray needs the [ray] extra")
pytestmark = [pytest.mark.ray, pytest.mark.timeout(900)]

N_IMAGES = 16
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


def _args(folder: Path, models, out: Path, *extra: str) -> list[str]:
    vlm, det = models
    return [str(folder), "--vlm", str(vlm), "--detector", str(det), "--device", "cpu", "--out", str(out), *extra]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_models):
    """The local engine's records for the module's 16 images, by file name."""
    root = tmp_path_factory.mktemp("ray-ref")
    folder = make_images(root / "in", N_IMAGES)
    assert main(_args(folder, tiny_models, root / "out", "--report", str(root / "out" / "report"))) == 0
    records = read_records(root / "out" / "results.jsonl")
    return folder, {Path(r["file"]).name: comparable(r) for r in records}, root / "out"


def _figures(page: Path) -> list[str]:
    """The images embedded in a report page (super-resolved, Grad-CAM, mask...), as their data URIs."""
    return re.findall(r'src="(data:image/png;base64,[^"]+)"', page.read_text(encoding="utf-8"))


def _by_name(records: list[dict]) -> dict[str, dict]:
    return {Path(r["file"]).name: comparable(r) for r in records}


def test_ray_engine_writes_the_local_engines_records(tmp_path, tiny_models, reference, capsys, no_leftover_ray):
    folder, expected, local_out = reference
    out = tmp_path / "out"
    code = main(_args(folder, tiny_models, out, "--engine", "ray", "--workers", "2", "--json",
                      "--report", str(out / "report")))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    # stdout is results only (Ray prints its cluster messages to stdout unless kept off it)
    printed = [json.loads(line) for line in captured.out.splitlines()]
    assert len(printed) == N_IMAGES
    records = read_records(out / "results.jsonl")
    assert len(records) == N_IMAGES and len({r["file"] for r in records}) == N_IMAGES
    assert _by_name(records) == expected  # walks, answers, P(yes), findings: all equal; order aside
    assert all(r["questions"] and r["questions"][0]["node_id"] == "class" for r in records)  # the VLM did answer
    for name in ("task1.json", "task2.json"):
        assert (out / name).read_bytes() == (local_out / name).read_bytes()
    # report pages made by the driver from what the actors shipped show the same pictures as local ones
    for i in range(1, N_IMAGES + 1):
        local_page, ray_page = local_out / "report" / f"{i}.html", out / "report" / f"{i}.html"
        assert len(_figures(local_page)) >= 3 and _figures(ray_page) == _figures(local_page)
    assert (out / "report" / "index.html").exists()
    # the cluster this run started is gone with it
    assert wait_until_gone(our_descendants, 30) == []


def test_local_cluster_listens_on_loopback_only(no_leftover_ray):
    import psutil

    from explainer.scale.cluster import ray_cluster

    with ray_cluster() as info:
        assert info.started_here and info.cpus > 0
        listening = []
        for pid in our_descendants():
            try:
                conns = psutil.Process(pid).net_connections(kind="inet")
            except psutil.Error:
                continue
            listening += [(pid, c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN]
        assert listening, "a running cluster listens somewhere"
        exposed = [entry for entry in listening if entry[1] not in LOOPBACK]
        assert exposed == [], f"Ray listens beyond the loopback: {exposed}"
    assert not ray.is_initialized()
    assert wait_until_gone(our_descendants, 30) == []


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with log.open("w") as fh:
        return subprocess.Popen([sys.executable, "-m", "explainer.cli", *args], stdout=fh, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _map_workers(sid: int) -> set[int]:
    import psutil

    found = set()
    for pid in session_members(sid):
        try:
            if "MapWorker" in " ".join(psutil.Process(pid).cmdline()):
                found.add(pid)
        except psutil.Error:
            continue
    return found


@pytest.fixture
def sessions():
    """Process sessions started by a test; every process left in them is killed by pid afterwards."""
    started: list[int] = []
    yield started
    for sid in started:
        kill_pids(session_members(sid))


def test_a_killed_worker_loses_nothing_and_duplicates_nothing(tmp_path, tiny_models, reference, sessions):
    folder, expected, _ = reference
    out = tmp_path / "out"
    proc = _start(_args(folder, tiny_models, out, "--engine", "ray", "--workers", "2"), tmp_path / "log.txt")
    sessions.append(proc.pid)
    workers_seen: set[int] = set()
    killed = None
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        workers_seen |= _map_workers(proc.pid)
        done = _lines(out / "results.jsonl")
        if killed is None and 2 <= done <= N_IMAGES - 6 and workers_seen:
            killed = sorted(_map_workers(proc.pid))[0]  # busy: every actor has blocks queued until near the end
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
    log = (tmp_path / "log.txt").read_text(errors="replace")
    assert proc.wait(timeout=60) == 0, log
    assert killed is not None, f"the run ended before a worker could be killed: {log}"
    assert len(workers_seen) > 2, "the killed actor was never replaced"
    records = read_records(out / "results.jsonl")
    assert len(records) == N_IMAGES, "an image was lost or written twice"
    assert len({r["file"] for r in records}) == N_IMAGES
    assert _by_name(records) == expected


def test_resume_after_a_killed_driver(tmp_path, tiny_models, reference, sessions):
    folder, expected, _ = reference
    out = tmp_path / "out"
    results = out / "results.jsonl"
    first = _start(_args(folder, tiny_models, out, "--engine", "ray", "--workers", "2"), tmp_path / "first.txt")
    sessions.append(first.pid)
    deadline = time.monotonic() + 600
    while first.poll() is None and _lines(results) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert first.poll() is None, "the first run ended before its driver could be killed"
    os.kill(first.pid, signal.SIGKILL)
    first.wait(timeout=30)
    kill_pids(session_members(first.pid))  # what a killed driver's cluster leaves must not matter to the next run
    before = results.read_bytes()
    kept = before[: before.rfind(b"\n") + 1]  # complete lines; a half-written one is redone
    assert 3 <= kept.count(b"\n") < N_IMAGES

    second = _start(_args(folder, tiny_models, out, "--engine", "ray", "--workers", "2", "--resume"),
                    tmp_path / "second.txt")
    sessions.append(second.pid)
    code = second.wait(timeout=600)
    log = (tmp_path / "second.txt").read_text(errors="replace")
    assert code == 0, log
    after = results.read_bytes()
    assert after.startswith(kept), "a record written before the kill changed"
    records = read_records(results)
    # 16 lines for 16 files: the images done before the kill were not done (and written) again
    assert len(records) == N_IMAGES and len({r["file"] for r in records}) == N_IMAGES
    assert _by_name(records) == expected


def test_ray_engine_with_a_served_vlm_asks_the_server_and_records_every_image_once(tmp_path, capsys, no_leftover_ray):
    """--engine ray --vlm-server: the actors ask a real HTTP server (scripted answers) and every image is recorded once."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
    from fake_openai import FakeServer, completion, is_probe

    top = {"Yes": 0.6, "No": 0.3, "cat": 0.05}

    def chat(body):
        if is_probe(body) or body.get("logprobs"):
            return 200, completion(top)
        return 200, completion(None, text=" Wheels.")

    folder = make_images(tmp_path / "in", 6)
    out = tmp_path / "out"
    with FakeServer(chat) as srv:
        code = main([str(folder), "--vlm-server", srv.url, "--vlm", "tiny", "--device", "cpu", "--out", str(out),
                     "--engine", "ray", "--workers", "2"])
        sent = [b for b in srv.requests if not is_probe(b)]
    captured = capsys.readouterr()
    assert code == 0, captured.err
    records = read_records(out / "results.jsonl")
    assert len(records) == 6 and len({r["file"] for r in records}) == 6
    for r in records:
        assert r["error"] is None and r["obj"] == "cat"
        assert r["server"]["url"] == srv.url and r["server"]["requests"] > 0
    # every question each record says was sent reached the server, and no more
    assert len(sent) == sum(r["server"]["requests"] for r in records)
    assert wait_until_gone(our_descendants, 30) == []
