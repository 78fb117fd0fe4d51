"""Vision-language model answerer (see docs/vlm.md).

``load_vlm(id_or_path, ...)`` → :class:`VLMAnswerer`, which implements the
engine's answerer contract (explainer/answerers/base.py).
"""

from explainer.answerers.hf.answerer import MODES, BatchRecord, VLMAnswerer
from explainer.answerers.hf.loading import DEFAULT_CPU_MODEL, DEFAULT_GPU_MODEL, default_model, load_vlm

__all__ = ["MODES", "BatchRecord", "VLMAnswerer", "DEFAULT_CPU_MODEL", "DEFAULT_GPU_MODEL", "default_model", "load_vlm"]
