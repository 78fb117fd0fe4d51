"""A served VLM: any OpenAI-compatible chat-completions server (vLLM, SGLang, llama.cpp, a hosted endpoint).

``connect(ServerSettings(url, model))`` checks the server once (reachable,
serves the model, returns logprobs) and gives a :class:`ServerAnswerer`.
"""

from explainer.answerers.server.answerer import ServerAnswerer, image_data_url
from explainer.answerers.server.connection import ServerConnection, ServerError, ServerSettings
from explainer.answerers.server.connect import connect

__all__ = ["ServerAnswerer", "ServerConnection", "ServerError", "ServerSettings", "connect", "image_data_url"]
