"""Mask checkpoints from anyone, in process: types and caps checked before any layer is allocated."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from explainer.errors import UsageError
from masks import checkpoint as ckpt
from masks.config import MAX_PARAMETERS, ModelConfig, parameter_count
from masks.patchgan import PatchDiscriminator
from masks.unet import UnetGenerator


@pytest.fixture
def stem(tmp_path):
    config = ModelConfig(ngf=4, ndf=4)
    g, d = UnetGenerator(config), PatchDiscriminator(config)
    opt = {"generator": torch.optim.Adam(g.parameters()).state_dict(),
           "discriminator": torch.optim.Adam(d.parameters()).state_dict()}
    return ckpt.save_checkpoint(tmp_path / "last", g, d, {"epoch": 1}, opt).with_suffix("")


def _rewrite(stem, mutate):
    path = ckpt.part(stem, ".json")
    doc = json.loads(path.read_text())
    mutate(doc)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["model"].update(ngf=2**40), "model: ngf is 1,099,511,627,776, over the cap of 1,024"),
    (lambda d: d["model"].update(size=2048, num_downs=11), "model: size is 2,048, over the cap of 1,024"),
    (lambda d: d["model"].update(ngf=300), "parameters, over the cap of 300,000,000"),
    (lambda d: d["model"].update(ndf=True), "model: ndf must be an integer, not bool True"),
    (lambda d: d["model"].update(use_dropout="no"), "model: use_dropout must be true or false"),
    (lambda d: d.update(model=None), "model: the model description must be a mapping, not NoneType"),
    (lambda d: d.update(history={}), "history: wrong type (dict)"),
])
def test_bad_descriptions_are_one_line(stem, mutate, message):
    _rewrite(stem, mutate)
    with pytest.raises(UsageError) as exc:
        ckpt.load_models(stem)
    assert message in str(exc.value) and str(ckpt.part(stem, ".json")) in str(exc.value)


def test_description_that_is_not_an_object(stem):
    ckpt.part(stem, ".json").write_text("[1, 2]")
    with pytest.raises(UsageError, match="a checkpoint description is a JSON object, not list"):
        ckpt.load_models(stem)


def test_parameter_count_allocates_nothing_and_matches_the_real_nets():
    config = ModelConfig(ngf=8, ndf=8)
    real = sum(p.numel() for net in (UnetGenerator(config), PatchDiscriminator(config)) for p in net.parameters())
    assert parameter_count(config) == real
    assert parameter_count(ModelConfig()) < MAX_PARAMETERS  # pix2pix's own size is allowed


@pytest.mark.parametrize("payload", [b"not a torch file", pickle.dumps({"generator": object()})])
def test_optimizer_state_that_is_not_plain_tensors_is_refused(stem, payload):
    ckpt.part(stem, ".optim.pt").write_bytes(payload)
    with pytest.raises(UsageError) as exc:
        ckpt.load_optim_state(stem)
    assert "refused" in str(exc.value) and "weights_only" not in str(exc.value)
