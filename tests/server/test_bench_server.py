"""`explain bench strategies` with tree-server: the tree walked through an OpenAI-compatible server (the scripted
HTTP server here; scripts/test-vllm.sh runs the same bench against a real vLLM), beside the in-process tree."""

from __future__ import annotations

import json

from explainer.answerers.server import ServerSettings
from explainer.bench import connect_server, run_bench
from explainer.cli.main import main
from fake_openai import FakeServer, completion, is_probe

TOP = {"Yes": 0.6, "No": 0.3, "cat": 0.05}


def _chat(body):
    if is_probe(body) or body.get("logprobs"):
        return 200, completion(TOP, prompt_tokens=90, cached=64)
    return 200, completion(None, text=" Tail.", prompt_tokens=90, cached=64)


def test_tree_server_walks_the_same_tree_as_the_in_process_tree(tmp_path):
    from explainer.testing import build_tiny_vlm

    vlm = build_tiny_vlm("idefics3", tmp_path / "vlm")
    with FakeServer(_chat) as srv:
        strategies = ["tree", "tree-server"]
        served = connect_server(ServerSettings(url=srv.url, model="tiny"), strategies)
        try:
            report = run_bench(str(vlm), strategies=strategies, n_images=3, server=served)
        finally:
            served.close()
        image_requests = [b for b in srv.requests if not is_probe(b)]
    summ = {s.strategy: s for s in report.summaries}
    assert set(summ) == {"tree", "tree-server"}
    served, local = summ["tree-server"], summ["tree"]
    # the oracle opens the same branches whatever answers: the same questions per image, asked of the server
    assert (served.yes_no, served.choices, served.follow_ups) == (local.yes_no, local.choices, local.follow_ups)
    runs = [r for r in report.runs if r.strategy == "tree-server"]
    assert len(runs) == 3
    assert sum(r.forward_passes for r in runs) == len(image_requests)  # one request per question, all counted
    assert sum(r.yes_no + r.choices + r.follow_ups for r in runs) == len(image_requests)
    assert all(r.tokens == 91 * r.forward_passes for r in runs)  # the server's usage: 90 prompt + 1 completion
    assert all(b["messages"][0]["content"][0]["type"] == "image_url" for b in image_requests)
    assert "model tiny at " + srv.url in report.settings["notes"]["tree-server"]
    assert "tree-server" not in report.settings["unavailable"]


def test_without_a_server_tree_server_is_listed_as_not_available(tmp_path, capsys):
    code = main(["bench", "strategies", "--arch", "idefics3", "--models-dir", str(tmp_path), "--images", "1",
                 "--strategies", "tree,tree-server", "--markdown"])
    assert code == 0
    out = capsys.readouterr().out
    assert "| tree |" in out and "| tree-server |" not in out
    assert "tree-server not available here (AnswererError: no server given (--vlm-server URL))" in out


def test_bench_cli_through_a_server_and_its_faults(tmp_path, capsys):
    out = tmp_path / "b.json"
    with FakeServer(_chat) as srv:
        code = main(["bench", "strategies", "--arch", "idefics3", "--models-dir", str(tmp_path), "--images", "1",
                     "--strategies", "tree-server", "--vlm-server", srv.url, "--json-out", str(out), "--markdown"])
        assert code == 0, capsys.readouterr().err
        assert "| tree-server |" in capsys.readouterr().out
        assert [s["strategy"] for s in json.loads(out.read_text())["summaries"]] == ["tree-server"]
        # a model the server does not serve: one line, exit 2, before any model is built
        code = main(["bench", "strategies", "--arch", "idefics3", "--models-dir", str(tmp_path / "none"),
                     "--strategies", "tree-server", "--vlm-server", srv.url, "--vlm-server-model", "other"])
        assert code == 2 and "does not serve model 'other'" in capsys.readouterr().err
        assert not (tmp_path / "none").exists()
        # a server given for strategies that do not use it
        code = main(["bench", "strategies", "--arch", "idefics3", "--models-dir", str(tmp_path),
                     "--strategies", "tree", "--vlm-server", srv.url])
        assert code == 2 and "tree-server" in capsys.readouterr().err
