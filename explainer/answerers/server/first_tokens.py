"""The decoded first token of an option, from the served model's own tokenizer.

Choices are read from one generated token, so each option is known by its
first token. Which token that is depends on the model's tokenizer, so we ask
the server (vLLM and SGLang serve ``POST /tokenize`` and ``/detokenize`` at
their root); with ``--vlm-tokenizer ID_OR_PATH``, or when the server has no
such endpoint and the model name is a tokenizer available offline, a local
Hugging Face tokenizer answers instead.
"""

from __future__ import annotations

from typing import Sequence

from explainer.answerers.server.connection import ServerConnection, ServerError
from explainer.answerers.server.scoring import SharedFirstToken, case_forms, first_token_texts
from explainer.errors import UsageError


class FirstTokens:
    """Per option list, the decoded texts of each option's first token (cached)."""

    def __init__(self, connection: ServerConnection, tokenizer: str | None = None) -> None:
        self.connection = connection
        self.tokenizer_name = tokenizer
        self._local = _load_tokenizer(tokenizer, required=True) if tokenizer else None
        self._use_server = tokenizer is None
        self._decoded: dict[str, str] = {}
        self._options: dict[tuple[str, ...], dict[str, frozenset[str]]] = {}
        self.source = f"tokenizer {tokenizer}" if tokenizer else "the server's /tokenize"

    def for_options(self, options: Sequence[str]) -> dict[str, frozenset[str]]:
        """Raises :class:`SharedFirstToken` when two options begin with the same token."""
        key = tuple(options)
        if key not in self._options:
            texts = [lead + form for o in key for form in (o, *case_forms(o)) for lead in ("", " ")]
            self._fill([t for t in dict.fromkeys(texts) if t not in self._decoded])
            self._options[key] = first_token_texts(key, self._decoded.__getitem__)
        return self._options[key]

    def _fill(self, texts: list[str]) -> None:
        if not texts:
            return
        if self._use_server:
            try:
                firsts = self.connection.gather([lambda t=t: self._server_first(t) for t in texts])
                self._decoded.update(zip(texts, firsts))
                return
            except ServerError as exc:
                self._use_server = False
                self._local = _load_tokenizer(self.connection.model, required=False)
                if self._local is None:
                    raise UsageError(
                        f"cannot tell the options' first tokens: the VLM server has no usable /tokenize ({exc}) "
                        f"and no tokenizer for {self.connection.model!r} is available offline; "
                        f"give one with --vlm-tokenizer ID_OR_PATH") from None
                self.source = f"tokenizer {self.connection.model} (local)"
        self._decoded.update((t, _local_first(self._local, t)) for t in texts)

    async def _server_first(self, text: str) -> str:
        conn = self.connection
        tokens = await conn.post_root("/tokenize", {"model": conn.model, "prompt": text, "add_special_tokens": False})
        ids = tokens.get("tokens") if isinstance(tokens, dict) else None
        if not isinstance(ids, list) or not ids or not isinstance(ids[0], int):
            raise ServerError(f"/tokenize gave no token ids for {text!r}")
        decoded = await conn.post_root("/detokenize", {"model": conn.model, "tokens": ids[:1]})
        first = decoded.get("prompt") if isinstance(decoded, dict) else None
        if not isinstance(first, str):
            raise ServerError("/detokenize gave no text")
        return first


def _load_tokenizer(name: str | None, *, required: bool):
    """A Hugging Face tokenizer from a local folder or the offline cache (never the network)."""
    if not name:
        return None
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means: not available offline
        if required:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise UsageError(f"--vlm-tokenizer {name}: cannot load a tokenizer offline: {first}") from None
        return None


def _local_first(tokenizer, text: str) -> str:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids[:1]) if ids else ""


__all__ = ["FirstTokens", "SharedFirstToken"]

