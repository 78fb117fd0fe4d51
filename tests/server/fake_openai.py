"""A small real HTTP server speaking the OpenAI chat-completions protocol, for fault and plumbing tests.

It answers from a script the test gives (logprobs, status codes, delays), so
it can show what a real server rarely does on cue: 429s, 5xx, hangs, missing
logprobs. It never stands in for a model's answers where those matter: the
comparison with a real model is in test_vllm.py, against vLLM.
"""

from __future__ import annotations

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


def completion(top: dict[str, float] | None, text: str = "", prompt_tokens: int = 50, cached: int | None = 32) -> dict:
    """A chat.completion body; ``top`` maps token text -> probability for the first token (None: no logprobs)."""
    logprobs = None
    if top is not None:
        entries = [{"token": t, "logprob": math.log(p), "bytes": list(t.encode())} for t, p in top.items()]
        first = entries[0] if entries else {"token": text or "x", "logprob": 0.0, "bytes": []}
        logprobs = {"content": [{**first, "top_logprobs": entries}]}
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": 1, "total_tokens": prompt_tokens + 1}
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return {"id": "cmpl-1", "object": "chat.completion", "created": 0, "model": "tiny",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text or (next(iter(top)) if top else "")},
                         "finish_reason": "length", "logprobs": logprobs}],
            "usage": usage}


def chunk_tokens(text: str) -> list[str]:
    """The fake server's tokenizer: words keep their leading space; a long word splits into 4-character pieces."""
    out: list[str] = []
    for i, word in enumerate(text.split(" ")):
        piece = (" " if i else "") + word
        while piece:
            out.append(piece[:4] if not piece.startswith(" ") else piece[:5])
            piece = piece[len(out[-1]):]
    return [t for t in out if t]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64  # the client opens up to --vlm-concurrency connections at once


class FakeServer:
    """``with FakeServer(handler) as s: s.url``; ``handler(body) -> (status, json_body[, headers])`` for chat completions."""

    def __init__(self, chat: Callable[[dict], tuple], models=("tiny",), tokenize: bool = True) -> None:
        self.chat = chat
        self.models = list(models)
        self.tokenize = tokenize
        self.requests: list[dict] = []  # chat bodies received, in arrival order
        self.headers: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body, headers=None):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def do_GET(self):
                if self.path.rstrip("/").endswith("/v1/models"):
                    return self._send(200, {"object": "list", "data": [{"id": m, "object": "model", "created": 0,
                                                                         "owned_by": "test"} for m in server.models]})
                self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if self.path == "/tokenize" and server.tokenize:
                    pieces = chunk_tokens(body["prompt"])
                    ids = []
                    with server.lock:
                        for piece in pieces:  # ids in order of first sight, so /detokenize can invert them
                            ids.append(server._vocab.setdefault(piece, len(server._vocab)))
                    return self._send(200, {"tokens": ids})
                if self.path == "/detokenize" and server.tokenize:
                    names = {i: piece for piece, i in server._vocab.items()}
                    return self._send(200, {"prompt": "".join(names[i] for i in body["tokens"])})
                if not self.path.endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                with server.lock:
                    server.requests.append(body)
                    server.headers.append({k.lower(): v for k, v in self.headers.items()})
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    if body.get("model") not in server.models:
                        return self._send(404, {"error": {"message": f"The model `{body.get('model')}` does not exist."}})
                    status, payload, *rest = server.chat(body)
                    self._send(status, payload, rest[0] if rest else None)
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self._vocab: dict[str, int] = {}
        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FakeServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def is_probe(body: dict) -> bool:
    """The connect-time probe is text only (a string content)."""
    return isinstance(body["messages"][0]["content"], str)


def wait_for(predicate, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return False
