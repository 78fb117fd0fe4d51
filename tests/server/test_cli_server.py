"""`explain IMG --vlm-server URL --vlm NAME` end to end, against the small real HTTP server.

Checks the command's plumbing (records, exit codes, several images in flight,
a server failing mid-run); the answers themselves are the script's.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from explainer.cli.main import main
from fake_openai import FakeServer, completion, is_probe

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
TOP = {"Yes": 0.6, "No": 0.3, "cat": 0.05}  # P(yes) 2/3; the class choice reads "cat"


class ImagesInFlight:
    """Answers after a short delay and counts how many different images had a request open at once."""

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay
        self.open: dict[str, int] = {}
        self.most = 0
        self.lock = threading.Lock()

    def __call__(self, body):
        if is_probe(body):
            return 200, completion(TOP)
        image = body["messages"][0]["content"][0]["image_url"]["url"]
        with self.lock:
            self.open[image] = self.open.get(image, 0) + 1
            self.most = max(self.most, len(self.open))
        time.sleep(self.delay)
        with self.lock:
            self.open[image] -= 1
            if not self.open[image]:
                del self.open[image]
        text = "Yes" if body.get("logprobs") else " Wheels."
        return 200, completion(TOP if body.get("logprobs") else None, text=text, prompt_tokens=90, cached=64)


def run(capsys, *args):
    code = main([str(EXAMPLES), "--json", *args])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.strip()], err


def test_explain_through_a_server(capsys):
    chat = ImagesInFlight()
    with FakeServer(chat) as srv:
        code, records, err = run(capsys, "--vlm-server", srv.url, "--vlm", "tiny", "--vlm-images", "3")
    assert code == 0, err
    assert len(records) == 3 and chat.most >= 2  # images walked at the same time
    for r in records:
        assert r["error"] is None and r["obj"] == "cat"
        yes_no = [q for q in r["questions"] if q["kind"] == "yes_no"]
        assert yes_no and all(q["p_yes"] == pytest.approx(2 / 3) and q["mass"] == pytest.approx(0.9) for q in yes_no)
        server = r["server"]
        assert server["url"] == srv.url and server["model"] == "tiny"
        assert server["prompt_tokens"] == 90 * server["requests"] and server["cached_tokens"] == 64 * server["requests"]
        assert sum(c["questions"] for c in server["calls"]) == server["requests"]
        assert r["rounds"] and all(x["seconds"] > 0 for x in r["rounds"])
        assert sum(x["questions"] for x in r["rounds"]) == len([q for q in r["questions"] if "tokens" in q])
    sent = [b for b in srv.requests if not is_probe(b)]
    assert len(sent) == sum(r["server"]["requests"] for r in records)


def test_server_failing_mid_run_fails_those_images_in_one_line(capsys, tmp_path):
    def chat(body):
        return (200, completion(TOP)) if is_probe(body) else (503, {"error": {"message": "engine died"}})

    with FakeServer(chat) as srv:
        code, records, err = run(capsys, "--vlm-server", srv.url, "--vlm", "tiny", "--vlm-retries", "0",
                                 "--out", str(tmp_path / "out"))
    assert code == 1
    assert len(records) == 3 and all("answered 503: engine died" in r["error"] for r in records)
    assert "3 of 3 image(s) failed" in err and "Traceback" not in err
    logged = (tmp_path / "out" / "results.jsonl").read_text().splitlines()
    assert len(logged) == 3 and all(json.loads(line)["error"] for line in logged)  # nothing lost


def test_model_name_needed_when_the_server_has_several(capsys):
    with FakeServer(lambda body: (200, completion(TOP)), models=("a", "b")) as srv:
        code = main([str(EXAMPLES / "1.png"), "--vlm-server", srv.url])
    err = capsys.readouterr().err
    assert code == 2 and "give the model name with --vlm MODEL_NAME (a, b)" in err
    assert len(err.strip().splitlines()) == 1


def test_server_down_exit_2(capsys):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main([str(EXAMPLES / "1.png"), "--vlm-server", f"http://127.0.0.1:{port}/v1", "--vlm", "x",
                 "--vlm-retries", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot reach the VLM server" in err and len(err.strip().splitlines()) == 1


def test_exact_packing_is_refused_with_a_server(capsys):
    code, records, err = run(capsys, "--vlm-server", "http://127.0.0.1:9/v1", "--vlm", "tiny", "--packing", "exact")
    assert code == 2 and not records
    assert "--packing exact lays out an in-process VLM's questions" in err
