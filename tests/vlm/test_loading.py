"""Loading by path like a user's model, and one-line errors for what cannot be loaded."""

from __future__ import annotations

import json
import time

import pytest

from explainer.errors import UsageError
from explainer.testing import TINY_ARCHS
from explainer.answerers.hf import DEFAULT_CPU_MODEL, DEFAULT_GPU_MODEL, VLMAnswerer, default_model, load_vlm
from explainer.answerers.hf import loading

CLASSES = {
    "llava": "LlavaForConditionalGeneration",
    "idefics3": "Idefics3ForConditionalGeneration",
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
}


def _one_line_usage(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and "Traceback" not in message
    assert excinfo.value.exit_code == 2
    return message


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_load_by_path(loaded, tiny_paths, arch):
    answerer = loaded[arch]
    assert isinstance(answerer, VLMAnswerer)
    assert type(answerer.model).__name__ == CLASSES[arch]
    assert answerer.model_id == str(tiny_paths[arch])
    assert answerer.mode == "cached"
    assert not answerer.model.training


def test_smolvlm_image_splitting_off_by_default(tiny_paths, loaded, image):
    from explainer.answerers.base import ImageContext

    default = loaded["idefics3"]
    assert default.processor.image_processor.do_image_splitting is False
    split = load_vlm(tiny_paths["idefics3"], device="cpu", image_splitting=True)
    for a in (default, split):
        a.begin_image(ImageContext(image=image))
    # splitting tiles the image (several sub-images + a global one): many more prefix tokens
    assert split.stats.prefix_tokens > 3 * default.stats.prefix_tokens
    assert "image splitting off" in default.notes[0]


def test_missing_path(tmp_path):
    with pytest.raises(UsageError) as excinfo:
        load_vlm(tmp_path / "nowhere", device="cpu")
    message = _one_line_usage(excinfo)
    assert "no such folder" in message and "nowhere" in message


def test_folder_that_is_not_a_model(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UsageError) as excinfo:
        load_vlm(tmp_path, device="cpu")
    assert "has no config.json" in _one_line_usage(excinfo)


def test_file_instead_of_folder(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"x")
    with pytest.raises(UsageError) as excinfo:
        load_vlm(path, device="cpu")
    assert "not a model folder" in _one_line_usage(excinfo)


def test_text_only_architecture(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 1}))
    with pytest.raises(UsageError) as excinfo:
        load_vlm(tmp_path, device="cpu")
    assert "'gpt2' is not an image-text-to-text model" in _one_line_usage(excinfo)


def test_missing_weights(tmp_path, tiny_paths):
    src = tiny_paths["llava"]
    for name in ("config.json", "processor_config.json", "tokenizer.json", "tokenizer_config.json",
                 "chat_template.jinja", "preprocessor_config.json"):
        if (src / name).exists():
            (tmp_path / name).write_bytes((src / name).read_bytes())
    with pytest.raises(UsageError) as excinfo:
        load_vlm(tmp_path, device="cpu")
    assert f"cannot load VLM '{tmp_path}'" in _one_line_usage(excinfo)


def test_unknown_hub_id_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(UsageError) as excinfo:
        load_vlm("explainer-tests/no-such-vlm", device="cpu")
    message = _one_line_usage(excinfo)
    assert "not in the local Hugging Face cache" in message
    assert "huggingface-cli download explainer-tests/no-such-vlm" in message and "--vlm PATH" in message
    assert time.perf_counter() - start < 5


def test_unknown_hub_id_unreachable(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(loading, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(UsageError) as excinfo:
        load_vlm("explainer-tests/no-such-vlm", device="cpu")
    assert "the hub cannot be reached" in _one_line_usage(excinfo)


def test_unknown_hub_id_fails_fast_without_mocks(monkeypatch):
    """Whatever the network here: a one-line UsageError, quickly (no 25 s of hub retries)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.perf_counter()
    with pytest.raises(UsageError) as excinfo:
        load_vlm("explainer-tests/no-such-vlm-42", device="cpu")
    _one_line_usage(excinfo)
    assert time.perf_counter() - start < 15


def test_4bit_on_cpu(tiny_paths):
    with pytest.raises(UsageError) as excinfo:
        load_vlm(tiny_paths["llava"], device="cpu", quantize="4bit")
    message = _one_line_usage(excinfo)
    assert "4bit" in message and "needs a CUDA GPU" in message


def test_unknown_quantization(tiny_paths):
    with pytest.raises(UsageError, match="unknown quantization '3bit'"):
        load_vlm(tiny_paths["llava"], device="cpu", quantize="3bit")


def test_bitsandbytes_missing(monkeypatch, tiny_paths):
    import importlib.util

    import torch

    if importlib.util.find_spec("bitsandbytes") is not None:
        pytest.skip("bitsandbytes is installed here")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(UsageError) as excinfo:
        load_vlm(tiny_paths["llava"], device="cuda", quantize="4bit")
    assert "pip install 'explainer[gpu]'" in _one_line_usage(excinfo)


def test_cuda_requested_without_gpu(monkeypatch, tiny_paths):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UsageError) as excinfo:
        load_vlm(tiny_paths["llava"], device="cuda")
    assert "no CUDA GPU" in _one_line_usage(excinfo)


def test_default_dtype(monkeypatch, tiny_paths):
    import torch

    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: False)
    assert load_vlm(tiny_paths["llava"], device="cpu").model.dtype == torch.float32
    monkeypatch.setattr(loading, "cpu_has_native_bf16", lambda: True)
    assert load_vlm(tiny_paths["llava"], device="cpu").model.dtype == torch.bfloat16
    assert load_vlm(tiny_paths["llava"], device="cpu", dtype="fp32").model.dtype == torch.float32


def test_unknown_dtype(tiny_paths):
    with pytest.raises(UsageError, match="unknown dtype 'int3'"):
        load_vlm(tiny_paths["llava"], device="cpu", dtype="int3")


def test_defaults(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_model("auto") == DEFAULT_CPU_MODEL == "HuggingFaceTB/SmolVLM-256M-Instruct"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_model("auto") == DEFAULT_GPU_MODEL == "Qwen/Qwen2-VL-2B-Instruct"


def test_unknown_mode(loaded):
    with pytest.raises(ValueError, match="unknown VLM mode"):
        VLMAnswerer(loaded["llava"].model, loaded["llava"].processor, mode="fast")
