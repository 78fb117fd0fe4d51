"""Offline test models: tiny random-weight vision-language models saved like real ones.

Tests and benchmarks must run with no network, yet exercise exactly the code a
user's model goes through (``load_vlm(path)`` → ``AutoProcessor`` /
``AutoModelForImageTextToText``). So this module builds, for each supported
architecture, a random-weight model, a tokenizer trained here with
``tokenizers`` on the words our prompts use, the matching image processor and a
chat template in the spirit of the real model's, and ``save_pretrained``s them
into a folder.

* :func:`build_tiny_vlm` — hidden size 32, 2 layers, tiny vision tower; builds in
  well under a second. Cached per process and output folder.
* :func:`build_smolvlm_256m` — a real-size SmolVLM-256M (public config, random
  weights) with the real processor settings (512 px, ``do_image_splitting=False``)
  and a tokenizer padded to the real vocabulary (49280), for benchmarks.

Weights are random: answers are meaningless, but shapes, token counts, cache
behaviour and timings are those of the real thing.
"""

from __future__ import annotations

import json
import tempfile
from importlib import resources
from pathlib import Path

TINY_ARCHS = ("llava", "idefics3", "qwen2_vl", "qwen2_5_vl")

# Words our prompts use (engine templates, artifact names), plus the answers.
_CORPUS = """
This is an image of a cat. Are the cat's eyes reflecting light unnaturally? Answer yes or no.
This is an image of a dog. Is the fur texture repeating in the red box? Answer yes or no.
This is an image of a car. Are the body panels misaligned? Answer yes or no.
This is an image of an airplane, a bird, a deer, a frog, a horse, a ship, a truck, an automobile.
What is in the red box? Choose one: cat, dog, car, bird, deer, frog, horse, ship, truck, airplane.
Which part looks wrong? Answer with one word: eyes, fur, wheels, wings, legs, ears, none, skin, sky.
Is there texture repetition, artificial smoothness, glow or light bleed, unnatural lighting gradients?
Is the background blurry, distorted, inconsistent, asymmetric, floating, melting, missing or extra?
Do the shadows, reflections, edges, colors, patterns, shapes, proportions and details look real?
Describe the object in one word. Answer in one word. Look at the region inside the red box.
Yes yes YES No no NO Yes. No. yes. no. Yes, No, maybe unsure none withdraw
USER ASSISTANT User Assistant system user assistant You are a helpful assistant.
the a an of in on at to is are was it its this that with and or not what which how one two
"""

_ANSWER_LINES = ["Yes", "No", "yes", "no", " Yes", " No", " yes", " no", "YES", "NO"]
# Texts with blank lines, so that Qwen-style tokenizers learn the merged "\n\n" token real ones have.
_PARAGRAPHS = ["Look at the image.\n\nIs the cat real?\n\nAnswer yes or no.", "You are a helpful assistant.\n\n\nYes"]

# Qwen2's pre-tokenizer pattern (its tokenizer.json): runs of newlines stay one piece ("\n\n" is one token).
_QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")


# --------------------------------------------------------------------------- tokenizers


def _train_tokenizer(style: str, specials: list[str], vocab_size: int = 800, pad_to: int | None = None,
                     extra_lines: tuple[str, ...] = ()):
    """A small BPE tokenizer, byte-level (GPT-2/Qwen/SmolVLM style) or metaspace (Llama style).

    ``pad_to`` grows the vocabulary with unreachable filler entries so that the
    embedding matrix has a real model's size.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from tokenizers.models import BPE

    corpus = [line for line in _CORPUS.strip().splitlines()] * 20 + (_ANSWER_LINES + list(extra_lines)) * 50
    if style == "qwen2":  # byte-level with Qwen2's own split pattern
        corpus += _PARAGRAPHS * 20
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(_QWEN2_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    elif style == "bytelevel":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:  # sentencepiece-like: spaces become "▁", a leading one is added to the first word
        tok = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=False))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        alphabet = ["\n"]  # Llama reaches it by byte fallback (<0x0A>); one token here
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    if pad_to is not None:
        state = json.loads(tok.to_str())
        vocab: dict[str, int] = state["model"]["vocab"]
        n = len(vocab)
        for i in range(pad_to - n):
            vocab[f"<filler_{i}>"] = n + i
        merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["model"]["merges"]]
        model = BPE(vocab=vocab, merges=merges, unk_token=state["model"].get("unk_token"))
        pre, dec = tok.pre_tokenizer, tok.decoder
        tok = Tokenizer(model)
        tok.pre_tokenizer, tok.decoder = pre, dec
        tok.add_special_tokens(specials)  # keeps their ids (already in vocab)
    return tok


def _wrap_tokenizer(tok, *, bos=None, eos=None, pad=None, unk=None, extra=(), add_bos=False):
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    if add_bos and bos:
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, bos_id)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        unk_token=unk,
        additional_special_tokens=list(extra),
    )


# --------------------------------------------------------------------------- chat templates
# In the spirit of the real models' templates (same layout around the question).

QWEN2_VL_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'][0]['type'] == 'image' %}{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' ' }}{% endfor %}"
    "{% endfor %}{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

_TINY_TEXT = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    # Larger than the usual 0.02 so random logits are far from uniform: a wrong position
    # or mask then changes P(yes) by much more than the equality tests' tolerance.
    initializer_range=0.2,
)


# --------------------------------------------------------------------------- builders


def _vocab_size(tokenizer) -> int:
    return (len(tokenizer) + 63) // 64 * 64  # rounded up like real models' padded embeddings


def _build_llava(out: Path, seed: int) -> None:
    import torch
    from transformers import CLIPImageProcessor, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor

    specials = ["<unk>", "<s>", "</s>", "<image>", "<pad>"]
    tok = _wrap_tokenizer(
        _train_tokenizer("metaspace", specials), bos="<s>", eos="</s>", pad="<pad>", unk="<unk>",
        extra=["<image>"], add_bos=True,
    )
    image_size, patch = 30, 6
    config = LlavaConfig(
        text_config=dict(model_type="llama", vocab_size=_vocab_size(tok), **_TINY_TEXT),
        vision_config=dict(
            model_type="clip_vision_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, image_size=image_size, patch_size=patch, projection_dim=32,
        ),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        pad_token_id=tok.pad_token_id,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=(image_size // patch) ** 2,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tok, patch_size=patch,
        vision_feature_select_strategy="default", num_additional_image_tokens=1, chat_template=LLAVA_TEMPLATE,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)


def _idefics3_tokenizer(vocab_pad_to: int | None = None):
    rows = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<fake_token_around_image>", "<image>",
                "<end_of_utterance>", "<global-img>", *rows]
    raw = _train_tokenizer("bytelevel", specials, pad_to=vocab_pad_to)
    return _wrap_tokenizer(
        raw, bos="<|im_start|>", eos="<end_of_utterance>", pad="<|endoftext|>", unk="<|endoftext|>",
        extra=["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>", *rows],
    )


def _save_idefics3(out: Path, config, tok, *, image_size: int, image_seq_len: int, seed: int, splitting: bool):
    import torch
    from transformers import Idefics3ForConditionalGeneration, Idefics3ImageProcessor, Idefics3Processor

    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config).eval()
    image_processor = Idefics3ImageProcessor(
        do_image_splitting=splitting,
        size={"longest_edge": image_size * 4},  # as SmolVLM's: 2048 px resize, 512 px tiles
        max_image_size={"longest_edge": image_size},
    )
    processor = Idefics3Processor(
        image_processor=image_processor, tokenizer=tok, image_seq_len=image_seq_len, chat_template=SMOLVLM_TEMPLATE
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)


def _build_idefics3(out: Path, seed: int) -> None:
    from transformers import Idefics3Config

    tok = _idefics3_tokenizer()
    image_size, patch, scale = 32, 4, 2
    config = Idefics3Config(
        text_config=dict(model_type="llama", vocab_size=_vocab_size(tok), pad_token_id=tok.pad_token_id, **_TINY_TEXT),
        vision_config=dict(
            model_type="idefics3_vision", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, image_size=image_size, patch_size=patch,
        ),
        scale_factor=scale,
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        pad_token_id=tok.pad_token_id,
    )
    # Saved with splitting ON, like the real SmolVLM processor: the loader turns it off.
    _save_idefics3(out, config, tok, image_size=image_size, image_seq_len=(image_size // patch) ** 2 // scale**2,
                   seed=seed, splitting=True)


def _build_qwen2_vl(out: Path, seed: int, version: str = "2") -> None:
    import torch
    import transformers
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>", "<|vision_pad|>"]
    tok = _wrap_tokenizer(
        _train_tokenizer("qwen2", specials), eos="<|im_end|>", pad="<|endoftext|>", extra=specials[1:],
    )
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
    common = dict(patch_size=14, spatial_merge_size=2, temporal_patch_size=2, num_heads=4)
    if version == "2":
        names = ("Qwen2VLConfig", "Qwen2VLForConditionalGeneration", "Qwen2VLProcessor")
        vision = dict(depth=2, embed_dim=32, hidden_size=32, mlp_ratio=2, in_chans=3, **common)
    else:  # 2.5: windowed vision attention, full attention in the listed blocks
        names = ("Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor")
        vision = dict(depth=2, hidden_size=32, intermediate_size=64, out_hidden_size=32, in_channels=3,
                      window_size=56, fullatt_block_indexes=[1], **common)
    config_cls, model_cls, processor_cls = (getattr(transformers, n) for n in names)
    config = config_cls(
        text_config=dict(
            vocab_size=_vocab_size(tok), rope_scaling={"type": "mrope", "mrope_section": [2, 1, 1]},
            rope_theta=10000.0, tie_word_embeddings=True, bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"], **_TINY_TEXT,
        ),
        vision_config=vision,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    # 128 px images → 112×112 → 8×8 patches → 16 image tokens after the 2×2 merge.
    image_processor = Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112)
    processor = processor_cls(
        image_processor=image_processor, tokenizer=tok, video_processor=Qwen2VLVideoProcessor(),
        chat_template=QWEN2_VL_TEMPLATE,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)


_BUILDERS = {
    "llava": _build_llava,
    "idefics3": _build_idefics3,
    "qwen2_vl": _build_qwen2_vl,
    "qwen2_5_vl": lambda out, seed: _build_qwen2_vl(out, seed, version="2.5"),
}
_built: dict[tuple[str, str], Path] = {}


def build_tiny_vlm(arch: str, out_dir: str | Path | None = None, seed: int = 0) -> Path:
    """Build (once per process) a tiny random-weight ``arch`` model folder and return its path.

    ``arch`` is one of :data:`TINY_ARCHS`. Without ``out_dir`` a temporary
    folder is used. Load it with ``explainer.answerers.hf.load_vlm(path)``.
    """
    if arch not in _BUILDERS:
        raise ValueError(f"unknown test architecture {arch!r}; choose from {', '.join(TINY_ARCHS)}")
    base = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="explainer-vlm-"))
    key = (arch, str(base.resolve()) if out_dir is not None else "")
    if key in _built and (_built[key] / "config.json").exists():
        return _built[key]
    out = base / f"tiny-{arch}"
    out.mkdir(parents=True, exist_ok=True)
    _BUILDERS[arch](out, seed)
    _built[key] = out
    return out


def real_config(name: str) -> dict:
    """A public model config shipped as package data (``explainer/answerers/hf/configs/<name>.json``)."""
    text = resources.files("explainer.answerers.hf").joinpath("configs", f"{name}.json").read_text()
    return json.loads(text)


def build_smolvlm_256m(out_dir: str | Path | None = None, seed: int = 0) -> Path:
    """A real-size SmolVLM-256M (public config, random weights, ~256M parameters) saved to a folder.

    Processor as the real one but with ``do_image_splitting=False`` (512 px, 64
    image tokens); the tokenizer is trained here and padded to the real 49280
    entries. Takes ~10-20 s and ~1 GB of disk. Cached per process.
    """
    import torch
    from transformers import AutoConfig

    base = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="explainer-vlm-"))
    key = ("smolvlm-256m", str(base.resolve()) if out_dir is not None else "")
    if key in _built and (_built[key] / "config.json").exists():
        return _built[key]
    out = base / "smolvlm-256m-random"
    out.mkdir(parents=True, exist_ok=True)
    cfg = real_config("SmolVLM-256M")
    tok = _idefics3_tokenizer(vocab_pad_to=cfg["vocab_size"])
    assert len(tok) == cfg["vocab_size"], len(tok)
    cfg = {k: v for k, v in cfg.items() if k not in ("architectures",)}
    model_type = cfg.pop("model_type")
    cfg["image_token_id"] = tok.convert_tokens_to_ids("<image>")
    cfg["pad_token_id"] = tok.pad_token_id
    config = AutoConfig.for_model(model_type, **cfg)
    vc = config.vision_config
    image_seq_len = (vc.image_size // vc.patch_size) ** 2 // config.scale_factor**2
    with torch.device("cpu"):
        _save_idefics3(out, config, tok, image_size=vc.image_size, image_seq_len=image_seq_len, seed=seed,
                       splitting=False)
    _built[key] = out
    return out


# --------------------------------------------------------------------------- a tiny model vLLM can serve

# Qwen2-VL-2B-Instruct's own chat template (a served model renders prompts with it, so the
# in-process answerer must see the same one).
QWEN2_VL_REAL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


# Answers the default tree's choices take, as a model writes them (bare, right after "assistant\n").
SERVED_OPTION_WORDS = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
                       "face", "body", "background")


def build_served_qwen2_vl(out_dir: str | Path, seed: int = 0, yes_no_logit: float = 16.0,
                          option_logit: float = 12.0) -> Path:
    """A tiny random Qwen2-VL that vLLM's CPU backend serves and transformers loads, in float32.

    vLLM needs what :func:`build_tiny_vlm`'s model lacks: a head_dim of at
    least 32 (hidden 128, 4 heads; a head_dim-8 model starts, then kills the
    engine on its first request), a vocabulary exactly the embedding's size,
    and the real chat template. A random model does not rank yes/no among its
    top 20 tokens, which is all a server shows, so the output layer gets a
    fixed boost on every yes/no variant: hidden channel 0 is held constant
    (every embedding has it, no layer writes to it) and only the yes/no rows
    of the untied output layer read it, about ``yes_no_logit`` above the rest;
    their random parts are widened so that P(yes) varies between questions.
    The default tree's option words get a smaller boost, so a choice is not
    decided among random tokens either. Only the bare spellings are boosted
    (Qwen answers right after "assistant\n"): 6 yes/no variants and 13 words,
    all within the 20 top tokens a server shows. The tokenizer learns the
    option words as single tokens, as a real vocabulary has them.
    """
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLImageProcessor, Qwen2VLProcessor
    from transformers import Qwen2VLVideoProcessor

    from explainer.answerers.hf.prompting import ChatLayout
    from explainer.answerers.hf.tokens import discover_yes_no

    out = Path(out_dir) / "served-qwen2-vl"
    out.mkdir(parents=True, exist_ok=True)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>", "<|vision_pad|>"]
    tok = _wrap_tokenizer(_train_tokenizer("bytelevel", specials, extra_lines=SERVED_OPTION_WORDS),
                          eos="<|im_end|>", pad="<|endoftext|>", extra=specials[1:])
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
    config = Qwen2VLConfig(
        text_config=dict(
            vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, initializer_range=0.2, rope_theta=10000.0,
            rope_scaling={"type": "mrope", "mrope_section": [4, 6, 6]}, tie_word_embeddings=False,
            bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(depth=2, embed_dim=64, hidden_size=128, mlp_ratio=2, num_heads=2, in_chans=3,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2),
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    # 128 px images → 112×112 → 8×8 patches → 16 image tokens after the 2×2 merge.
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=56 * 56, max_pixels=112 * 112), tokenizer=tok,
        video_processor=Qwen2VLVideoProcessor(), chat_template=QWEN2_VL_REAL_TEMPLATE,
    )
    layout = ChatLayout(processor)
    yes_no = discover_yes_no(layout)
    bare = [i for i, t in zip(yes_no.yes_ids + yes_no.no_ids, yes_no.yes_tokens + yes_no.no_tokens) if t[:1] not in "Ġ▁ "]
    options = [layout.answer_ids("Which one?", word)[0] for word in SERVED_OPTION_WORDS]
    torch.manual_seed(seed)
    model = Qwen2VLForConditionalGeneration(config).eval().float()
    text = model.model.language_model
    head = model.get_output_embeddings().weight
    with torch.no_grad():
        text.embed_tokens.weight[:, 0] = 1.0  # channel 0: constant in every text position
        for layer in text.layers:  # ... and nothing writes to it
            layer.self_attn.o_proj.weight[0, :] = 0.0
            layer.mlp.down_proj.weight[0, :] = 0.0
        head[:, 0] = 0.0
        channel = _channel_at_answer(model, processor, layout)
        for rows, logit in ((bare, yes_no_logit), (options, option_logit)):
            head[rows, 0] = logit / max(channel, 1e-3)
            head[rows, 1:] *= 2.0
    model.generation_config.do_sample = False
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _channel_at_answer(model, processor, layout) -> float:
    """The final-norm value of hidden channel 0 where the answer is read (mean over a few prompts).

    The residual stream grows through the random layers, so the normalised
    constant channel is measured rather than guessed; the boosts divide by it.
    """
    import numpy as np
    import torch
    from PIL import Image

    values = []
    for seed, question in enumerate(("Is the fur texture repeating? Answer yes or no.",
                                     "What is the main object in this image? Answer with one word.")):
        image = Image.fromarray(np.random.default_rng(seed).integers(0, 255, (128, 128, 3), dtype=np.uint8))
        inputs = processor(text=[layout.render(question)], images=[image], return_tensors="pt")
        with torch.no_grad():
            hidden = model.model(**inputs).last_hidden_state
        values.append(float(hidden[0, -1, 0]))
    return float(np.mean(values))
