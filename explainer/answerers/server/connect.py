"""Connect to a server once, up front: every fault a user can fix is one line and exit code 2 before any image."""

from __future__ import annotations

from explainer.answerers.server.answerer import ServerAnswerer
from explainer.answerers.server.connection import TOP_LOGPROBS, ServerConnection, ServerError, ServerSettings
from explainer.answerers.server.first_tokens import FirstTokens
from explainer.errors import UsageError

# A text-only question: every chat VLM takes it, and it shows whether logprobs come back.
_PROBE = [{"role": "user", "content": "Is the sky blue? Answer yes or no."}]


def connect(settings: ServerSettings) -> ServerAnswerer:
    conn = ServerConnection(settings)
    try:
        notes = _check(conn, settings)
        first_tokens = FirstTokens(conn, settings.tokenizer)
    except (ServerError, UsageError) as exc:
        conn.close()
        raise UsageError(str(exc)) from None
    return ServerAnswerer(conn, first_tokens, notes)


def _check(conn: ServerConnection, settings: ServerSettings) -> list[str]:
    notes: list[str] = []
    try:
        served = conn.run(conn.models())
    except ServerError as exc:
        if exc.status != 404:  # some servers have no /models; the probe below still checks the name
            raise
        served = []
    if not settings.model:
        if len(served) != 1:
            listing = ", ".join(served) if served else "it does not list its models"
            raise UsageError(f"--vlm-server {conn.url}: give the model name with --vlm MODEL_NAME ({listing})")
        conn.model = served[0]
    elif served and settings.model not in served:
        raise UsageError(f"the VLM server {conn.url} does not serve model {settings.model!r}; it serves: {', '.join(served)}")
    probe = conn.run(conn.complete(_PROBE, max_tokens=1, logprobs=True))
    if not probe.logprobs_returned:
        raise UsageError(
            f"the VLM server {conn.url} returned no logprobs for model {conn.model!r}: yes/no cannot be scored and "
            "reading answers from text would be a guess; use a server that returns logprobs (vLLM, SGLang, llama.cpp)")
    if len(probe.top) < TOP_LOGPROBS:
        notes.append(f"the VLM server returns only {len(probe.top)} of the {TOP_LOGPROBS} top log-probabilities asked for")
    return notes
