"""Model folders and prompts that used to slip through: pickled weights, bad configs, uneven tokens, squashed images."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from explainer.answerers.base import ImageContext, YesNoQuery
from explainer.answerers.hf import load_vlm
from explainer.answerers.hf.image_prep import SQUARE_NOTE, pad_to_square
from explainer.answerers.hf.tokens import _paired_variants
from explainer.errors import UsageError


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def _one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and excinfo.value.exit_code == 2
    return message


@pytest.fixture
def idefics3_copy(tiny_paths, tmp_path):
    return _copy(tiny_paths["idefics3"], tmp_path / "model")


def test_pickled_weights_are_refused(idefics3_copy):
    import torch
    from safetensors.torch import load_file

    state = load_file(idefics3_copy / "model.safetensors")
    (idefics3_copy / "model.safetensors").unlink()
    torch.save(state, idefics3_copy / "pytorch_model.bin")
    with pytest.raises(UsageError) as excinfo:
        load_vlm(idefics3_copy, device="cpu")
    message = _one_line(excinfo)
    assert "pickled" in message and "pytorch_model.bin" in message
    assert "weights_only" not in message  # never suggest the unsafe way round


def test_invalid_config_value_is_one_line(idefics3_copy):
    cfg = json.loads((idefics3_copy / "config.json").read_text())
    cfg["text_config"]["hidden_size"] = "abc"
    (idefics3_copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UsageError) as excinfo:
        load_vlm(idefics3_copy, device="cpu")
    assert "config.json" in _one_line(excinfo)


def test_config_not_json_names_the_line(idefics3_copy):
    (idefics3_copy / "config.json").write_text('{\n  "model_type": "idefics3",\n  oops\n}')
    with pytest.raises(UsageError) as excinfo:
        load_vlm(idefics3_copy, device="cpu")
    assert "config.json:3" in _one_line(excinfo)


def test_config_describing_a_huge_model_is_refused_before_allocating(idefics3_copy):
    cfg = json.loads((idefics3_copy / "config.json").read_text())
    cfg["text_config"]["intermediate_size"] = 4_000_000  # ~100 GB of MLP weights if it were built
    (idefics3_copy / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(UsageError) as excinfo:
        load_vlm(idefics3_copy, device="cpu")
    message = _one_line(excinfo)
    assert "describes" in message and "parameters" in message


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_config_that_is_a_fifo_is_refused(idefics3_copy):
    (idefics3_copy / "config.json").unlink()
    os.mkfifo(idefics3_copy / "config.json")
    with pytest.raises(UsageError) as excinfo:
        load_vlm(idefics3_copy, device="cpu")  # would block forever if opened
    assert "not a regular file" in _one_line(excinfo)


def test_cli_refuses_pickled_model_in_one_line(idefics3_copy, tmp_path):
    for f in idefics3_copy.glob("*.safetensors"):
        f.rename(f.with_suffix(".bin"))
    img = tmp_path / "1.png"
    Image.new("RGB", (32, 32), (120, 80, 40)).save(img)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-m", "explainer.cli", str(img), "--vlm", str(idefics3_copy)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "pickled" in proc.stderr


class _Vocab:
    """A tokenizer with only the given vocabulary (what _paired_variants reads)."""

    unk_token_id = 0

    def __init__(self, tokens):
        self.vocab = {"<unk>": 0, **{t: i + 1 for i, t in enumerate(tokens)}}

    def get_vocab(self):
        return self.vocab

    def convert_ids_to_tokens(self, ids):
        inv = {v: k for k, v in self.vocab.items()}
        return inv[ids] if isinstance(ids, int) else [inv[i] for i in ids]


def test_yes_no_variants_are_paired():
    # SmolVLM's real vocabulary: "Ġno" and "ĠNO" exist, "Ġyes" and "ĠYES" do not.
    tok = _Vocab(["ĠYes", "Yes", "yes", "YES", "ĠNo", "No", "no", "NO", "Ġno", "ĠNO"])
    v = tok.get_vocab()
    yes, no, unpaired = _paired_variants(tok, v["ĠYes"], v["ĠNo"])
    assert len(yes) == len(no) == 4
    assert [tok.convert_ids_to_tokens(i) for i in yes] == ["ĠYes", "Yes", "yes", "YES"]
    assert [tok.convert_ids_to_tokens(i) for i in no] == ["ĠNo", "No", "no", "NO"]
    assert sorted(unpaired) == ["ĠNO", "Ġno"]


@pytest.mark.parametrize("arch", ["llava", "idefics3", "qwen2_vl"])
def test_loaded_models_have_symmetric_lists(loaded, arch):
    tokens = loaded[arch].yes_no_tokens
    assert len(tokens.yes_ids) == len(tokens.no_ids)


def test_question_starting_with_a_newline_keeps_the_cached_path(tiny_paths, image):
    # Qwen2's tokenizer merges ".\n" + "\nIs" into ".\n\n": without care the prefix cannot be shared.
    answerer = load_vlm(tiny_paths["qwen2_vl"], device="cpu", dtype="float32")
    plain = load_vlm(tiny_paths["qwen2_vl"], device="cpu", dtype="float32", mode="plain")
    queries = [YesNoQuery("q1", "\nIs the fur real?"), YesNoQuery("q2", "Is the fur real?\n\n")]
    context = ImageContext(image=image, preamble="You are a forensic analyst.")
    answers = []
    for a in (answerer, plain):
        a.begin_image(context)
        answers.append(a.yes_no(queries))
        a.end_image()
    assert answerer.mode == "cached", answerer.notes
    for cached, reference in zip(*answers):
        assert abs(cached.p_yes - reference.p_yes) < 1e-4


def test_non_square_image_is_padded_not_squashed(loaded):
    answerer = loaded["idefics3"]
    assert SQUARE_NOTE in answerer.notes
    pixels = np.zeros((32, 64, 3), dtype=np.uint8)
    pixels[:, :, 0] = 255
    wide = Image.fromarray(pixels)
    square = pad_to_square(wide, answerer.processor)
    assert square.size == (64, 64)
    arr = np.asarray(square)
    assert (arr[16:48, :, 0] == 255).all()  # the image, unscaled, in the middle
    mean = [round(m * 255) for m in answerer.processor.image_processor.image_mean]
    assert (arr[:16] == mean).all() and (arr[48:] == mean).all()
    answerer.begin_image(ImageContext(image=wide))
    try:
        assert answerer._image.size == (64, 64)
    finally:
        answerer.end_image()


def test_qwen_keeps_non_square_images(loaded):
    # Qwen2-VL's processor keeps the aspect ratio itself: nothing to pad.
    answerer = loaded["qwen2_vl"]
    assert SQUARE_NOTE not in answerer.notes
    wide = Image.new("RGB", (64, 32))
    answerer.begin_image(ImageContext(image=wide))
    try:
        assert answerer._image.size == (64, 32)
    finally:
        answerer.end_image()


def test_answerer_decisions_reach_the_record_notes(tiny_paths, tmp_path):
    img = tmp_path / "1.png"
    Image.new("RGB", (48, 32), (120, 80, 40)).save(img)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.run([sys.executable, "-m", "explainer.cli", str(img), "--vlm", str(tiny_paths["idefics3"]), "--json"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(proc.stdout.strip().splitlines()[0])
    notes = record["notes"]
    assert "VLM: image splitting off (idefics3 processor)" in notes
    assert f"VLM: {SQUARE_NOTE}" in notes
