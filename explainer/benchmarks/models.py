"""Real-size random-weight models for benchmarks that the test helpers do not build (explainer/testing.py has
SmolVLM-256M): Qwen2-VL-2B from its public config, for bench/gpu.sh."""

from __future__ import annotations

import tempfile
from pathlib import Path


def build_qwen2_vl_2b(out_dir: str | Path | None = None, seed: int = 0, device: str = "cpu") -> Path:
    """Qwen2-VL-2B's architecture (public config, ~2.2B parameters) with random weights, saved to a folder.

    The tokenizer is trained here (no hub) and padded to the real 151 936
    entries; the image processor is Qwen2-VL's with its default pixel range.
    Built on ``device`` in bfloat16 (a 2B float32 model on a CPU takes minutes
    and 9 GB); the folder takes ~4.5 GB. Reused when it already holds a model.
    """
    import torch
    import transformers
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    from explainer.testing import QWEN2_VL_TEMPLATE, _train_tokenizer, _wrap_tokenizer, real_config

    base = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="explainer-vlm-"))
    out = base / "qwen2-vl-2b-random"
    if (out / "config.json").is_file() and any(out.glob("*.safetensors")):
        return out
    out.mkdir(parents=True, exist_ok=True)
    cfg = real_config("Qwen2-VL-2B")
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>", "<|vision_pad|>"]
    tok = _wrap_tokenizer(_train_tokenizer("qwen2", specials, pad_to=cfg["vocab_size"]), eos="<|im_end|>",
                          pad="<|endoftext|>", extra=specials[1:])
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
    text = {k: cfg[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                "num_key_value_heads", "vocab_size", "max_position_embeddings", "rms_norm_eps",
                                "rope_theta", "rope_scaling", "tie_word_embeddings")}
    config = transformers.Qwen2VLConfig(
        text_config=dict(text, bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
                         pad_token_id=ids["<|endoftext|>"]),
        vision_config=cfg["vision_config"], bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"], image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=cfg["tie_word_embeddings"])
    torch.manual_seed(seed)
    with torch.device(device):
        model = transformers.Qwen2VLForConditionalGeneration(config).to(torch.bfloat16).eval()
    processor = transformers.Qwen2VLProcessor(image_processor=Qwen2VLImageProcessor(), tokenizer=tok,
                                              video_processor=Qwen2VLVideoProcessor(), chat_template=QWEN2_VL_TEMPLATE)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
