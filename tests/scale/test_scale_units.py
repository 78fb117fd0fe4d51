"""The Ray engine's pieces that need no cluster: the wire format, block planning, CPU shares, command-line checks."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from PIL import Image

from explainer.cli import main
from explainer.errors import UsageError
from explainer.pipeline import ImageReport
from explainer.scale.cluster import ClusterInfo
from explainer.scale.engine import RaySettings, actor_cpus, plan_blocks
from explainer.scale.wire import decode_artifacts, decode_record, encode_artifacts, encode_record
from explainer.trees.problems import TreeError
from scale_helpers import make_images


def _report() -> ImageReport:
    return ImageReport(file="in/3.png", index=3, verdict="fake", p_fake=0.75, roi_box=[1, 2, 81, 82],
                       findings=[{"artifact": "Blurred edges", "explanation": "soft", "p_yes": 0.6}],
                       questions=[{"round": 1, "node_id": "class", "p_yes": 0.123456789012345, "probs": (0.1, 0.9)}],
                       timings={"detector": 0.01}, notes=["a note"])


def test_record_travels_unchanged():
    report = _report()
    back = decode_record(encode_record(report))
    assert json.dumps(back.to_dict()) == json.dumps(report.to_dict())  # what results.jsonl would hold, byte for byte
    assert back.questions[0]["p_yes"] == 0.123456789012345


def test_record_from_a_newer_worker_keeps_known_fields_and_refuses_garbage():
    text = json.dumps({**_report().to_dict(), "field_from_the_future": 1})
    assert decode_record(text).file == "in/3.png"
    with pytest.raises(ValueError):
        decode_record(json.dumps(["not", "a", "report"]))


def test_artifacts_travel_as_plain_arrays():
    rng = np.random.default_rng(0)
    sr = Image.fromarray((rng.random((128, 128, 3)) * 255).astype("uint8"))
    heat = rng.random((128, 128)).astype("float32")
    mask = rng.random((128, 128)) > 0.5
    data = encode_artifacts({"sr": sr, "boxed": sr.convert("RGBA"), "heatmap": heat, "mask": mask,
                             "original": sr, "overlay": None, "junk": object()})
    back = decode_artifacts(data)
    assert set(back) == {"sr", "boxed", "heatmap", "mask"}  # the original is read again by the driver
    assert np.array_equal(np.asarray(back["sr"]), np.asarray(sr))
    assert back["boxed"].mode == "RGB" and np.array_equal(np.asarray(back["boxed"]), np.asarray(sr))
    assert back["heatmap"].dtype == np.float32 and np.array_equal(back["heatmap"], heat)
    assert np.array_equal(back["mask"], mask)
    assert encode_artifacts({}) == b"" and decode_artifacts(b"") == {}


def test_artifacts_are_read_without_unpickling():
    import io

    buf = io.BytesIO()
    np.savez(buf, **{"arr:mask": np.array([{"evil": 1}], dtype=object)})
    with pytest.raises(ValueError):
        decode_artifacts(buf.getvalue())


def test_actor_runs_the_local_batch_code_from_the_drivers_folder(tmp_path, monkeypatch):
    """The actor without a cluster: relative paths resolve against the driver's folder; bad files become records."""
    from explainer.pipeline import PipelineOptions
    from explainer.scale.engine import ExplainActor

    make_images(tmp_path / "in", 2)
    (tmp_path / "in" / "3.png").write_text("not an image")
    monkeypatch.chdir(tmp_path / "in")  # restored after the test; the actor moves to the driver's folder
    actor = ExplainActor(PipelineOptions(use_vlm=False), with_artifacts=True, cwd=str(tmp_path))
    out = actor({"path": np.array(["in/1.png", "in/3.png", "in/2.png"])})
    assert out["path"] == ["in/1.png", "in/3.png", "in/2.png"]
    reports = [decode_record(r) for r in out["record"]]
    assert [r.file for r in reports] == out["path"]  # the file as the user gave it, as the local engine writes it
    assert reports[0].error is None and reports[0].sr_method and reports[0].questions  # probes ran
    assert reports[1].error and "3.png: not an image" in reports[1].error
    assert set(decode_artifacts(out["artifacts"][0])) >= {"sr", "boxed", "mask"}
    assert "--no-vlm" in " ".join(json.loads(out["notes"][0])) and out["notes"][1:] == ["[]", "[]"]
    assert json.loads(actor({"path": np.array(["in/2.png"])})["notes"][0]) == []  # load notes travel once


@pytest.mark.parametrize("n,workers,batch,blocks,per_call", [
    (16, 2, 32, 8, 2),      # a small folder is still spread over both actors
    (3, 4, 32, 3, 1),       # never more blocks than images
    (64, 1, 32, 4, 16),
    (10_000, 4, 32, 313, 32),  # a big folder: blocks of one actor call each
])
def test_plan_blocks(n, workers, batch, blocks, per_call):
    assert plan_blocks(n, RaySettings(workers=workers, batch_size=batch)) == (blocks, per_call)


def test_a_served_vlms_key_travels_to_the_actors_and_nothing_else_does(monkeypatch):
    from types import SimpleNamespace

    from explainer.pipeline import PipelineOptions
    from explainer.scale.engine import actor_env

    monkeypatch.setenv("OPENAI_API_KEY", "sk-default")
    monkeypatch.setenv("MY_KEY", "sk-mine")
    assert actor_env(PipelineOptions()) is None  # an in-process VLM needs no key
    options = PipelineOptions()
    options.server = SimpleNamespace(api_key_env=None)
    assert actor_env(options) == {"env_vars": {"OPENAI_API_KEY": "sk-default"}}
    options.server = SimpleNamespace(api_key_env="MY_KEY")
    assert actor_env(options) == {"env_vars": {"MY_KEY": "sk-mine"}}
    monkeypatch.delenv("MY_KEY")
    assert actor_env(options) is None  # no key on the driver: the actors look in their own environment


def test_actor_cpus_leave_room_for_ray_data():
    cluster = ClusterInfo(address="local", cpus=2, gpus=0, started_here=True)
    assert actor_cpus(RaySettings(workers=2), cluster) == pytest.approx(0.667)
    assert actor_cpus(RaySettings(workers=1), cluster) == 1.0
    assert actor_cpus(RaySettings(workers=4, worker_cpus=0.25), cluster) == 0.25  # the user's choice wins
    assert actor_cpus(RaySettings(workers=8), ClusterInfo("auto", 64, 0, False)) == 1.0


@pytest.mark.parametrize("settings", [RaySettings(workers=0), RaySettings(worker_cpus=0), RaySettings(worker_gpus=-1)])
def test_settings_are_checked(settings):
    with pytest.raises(UsageError):
        settings.check()


@pytest.mark.parametrize("flag,value", [("--workers", "2"), ("--ray-address", "auto"), ("--worker-cpus", "0.5"),
                                        ("--worker-gpus", "1")])
def test_ray_flags_need_the_ray_engine(tmp_path, capsys, flag, value):
    folder = make_images(tmp_path / "in", 1)
    assert main([str(folder), "--no-vlm", flag, value]) == 2
    assert f"{flag} needs --engine ray" in capsys.readouterr().err


def test_bad_worker_count_is_a_usage_error(tmp_path, capsys):
    folder = make_images(tmp_path / "in", 1)
    assert main([str(folder), "--no-vlm", "--engine", "ray", "--workers", "0"]) == 2
    assert "--workers: must be at least 1" in capsys.readouterr().err


def test_engine_from_the_environment_is_checked(tmp_path, capsys, monkeypatch):
    folder = make_images(tmp_path / "in", 1)
    monkeypatch.setenv("EXPLAIN_ENGINE", "spark")
    assert main([str(folder), "--no-vlm"]) == 2
    assert "EXPLAIN_ENGINE: must be one of local, ray, not 'spark'" in capsys.readouterr().err


def test_an_address_nothing_answers_at_is_refused_at_once(tmp_path, capsys):
    """Ray would retry a dead address for ever; explain says so in one line (checked before ray.init)."""
    import socket

    pytest.importorskip("ray")
    with socket.socket() as s:  # a port that was free a moment ago: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    folder = make_images(tmp_path / "in", 1)
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        assert main([str(folder), "--no-vlm", "--engine", "ray", "--ray-address", address]) == 2
        err = capsys.readouterr().err
        assert f"--ray-address {address}: nothing answers at 127.0.0.1:{port}" in err
    assert main([str(folder), "--no-vlm", "--engine", "ray", "--ray-address", "headnode"]) == 2
    assert "expected auto, ray://HOST:PORT or HOST:PORT" in capsys.readouterr().err
    import ray

    assert not ray.is_initialized()


def test_without_ray_installed_says_how_to_get_it(tmp_path, capsys, monkeypatch):
    folder = make_images(tmp_path / "in", 1)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError, as on an install without [ray]
    assert main([str(folder), "--no-vlm", "--engine", "ray"]) == 2
    err = capsys.readouterr().err
    assert "--engine ray needs Ray Data" in err and 'pip install -e ".[ray]"' in err


def test_a_broken_tree_is_refused_before_a_cluster_starts(tmp_path, capsys, monkeypatch):
    folder = make_images(tmp_path / "in", 1)
    tree = tmp_path / "bad.yaml"
    tree.write_text("nodes: [\n", encoding="utf-8")
    monkeypatch.setitem(sys.modules, "ray", None)  # would fail with the Ray message if a cluster were started first
    try:
        code = main([str(folder), "--no-vlm", "--engine", "ray", "--tree", str(tree)])
    except TreeError as exc:  # today a tree error escapes main() in both engines; the point here is which error
        code, err = exc.exit_code, str(exc)
    else:
        err = capsys.readouterr().err
    assert code == 2
    assert "bad.yaml:2" in err and "Ray" not in err


def test_bench_times_a_run_by_its_records(tmp_path, monkeypatch):
    """bench/ray_throughput.py watches results.jsonl grow; a command writing three records at known times."""
    import importlib.util
    from pathlib import Path

    script = Path(__file__).parents[2] / "bench" / "ray_throughput.py"
    spec = importlib.util.spec_from_file_location("ray_throughput", script)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "ray_throughput", bench)  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    results = tmp_path / "results.jsonl"
    writer = ("import time, sys\n"
              "time.sleep(0.6)\n"
              "for i in range(3):\n"
              "    open(sys.argv[1], 'a').write('{}\\n'); time.sleep(0.4)\n")
    run = bench.run_once("local", None, [sys.executable, "-c", writer, str(results)], results, 3, tmp_path / "log")
    assert run.exit_code == 0
    assert 0.5 <= run.first_record_s <= run.wall_s
    assert 1.0 <= run.steady_images_per_s <= 5.0  # 2 records 0.4 s apart after the first: 2.5/s, slack for load
    assert run.images_per_s == pytest.approx(3 / run.wall_s, rel=0.01)
    table = bench.markdown([run, bench.Run("ray ×2", 2, 3, run.wall_s / 2, 0.1, 5.0, run.images_per_s * 2, 0)])
    assert "| ray ×2 | 3 |" in table and "| 2.00 |" in table


def test_a_wrong_class_is_refused_before_a_cluster_starts(tmp_path, capsys, monkeypatch):
    folder = make_images(tmp_path / "in", 1)
    monkeypatch.setitem(sys.modules, "ray", None)  # would fail with the Ray message if a cluster were started first
    code = main([str(folder), "--no-vlm", "--engine", "ray", "--class", "spaceship"])
    err = capsys.readouterr().err
    assert code == 2
    assert "--class 'spaceship' is not a class" in err and "Ray" not in err
