"""Mask checkpoints and training folders from someone else: caps before allocating, no pickle, bad files skipped."""

from __future__ import annotations

import json
import struct
import zlib

import pytest
from PIL import Image


@pytest.fixture
def checkpoint(tmp_path):
    """A real (tiny) trained-format checkpoint in OUT: best.* and last.* with its optimizer state."""
    import torch

    from masks import checkpoint as ckpt
    from masks.config import ModelConfig
    from masks.patchgan import PatchDiscriminator
    from masks.unet import UnetGenerator

    out = tmp_path / "ckpt"
    config = ModelConfig(ngf=4, ndf=4)
    g, d = UnetGenerator(config), PatchDiscriminator(config)
    opt = {"generator": torch.optim.Adam(g.parameters()).state_dict(),
           "discriminator": torch.optim.Adam(d.parameters()).state_dict()}
    meta = {"epoch": 1, "best_iou": 0.1, "history": [], "train": {"seed": 0}}
    ckpt.save_checkpoint(out / ckpt.LAST, g, d, meta, opt)
    ckpt.save_checkpoint(out / ckpt.BEST, g, None, meta)
    return out


def _pairs(root, n=3):
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (32, 32), (40 * i, 90, 60)).save(root / "images" / f"p{i}.png")
        m = Image.new("L", (32, 32), 0)
        m.paste(255, (8, 8, 24, 24))
        m.save(root / "masks" / f"p{i}.png")


def _edit(path, **changes):
    doc = json.loads(path.read_text())
    for key, value in changes.items():
        if key.startswith("model."):
            doc["model"][key[6:]] = value
        else:
            doc[key] = value
    path.write_text(json.dumps(doc))


def test_huge_width_in_a_mask_checkpoint_is_refused_before_allocating(run_cli, checkpoint, tmp_path):
    image = tmp_path / "1.png"
    Image.new("RGB", (32, 32)).save(image)
    _edit(checkpoint / "best.json", **{"model.ngf": 2**40})  # seen in the wild: a 164 TB allocation
    r = run_cli([image, "--no-vlm", "--mask", checkpoint], mem_limit_mb=4096, timeout=120)
    r.assert_one_line_error(2, str(checkpoint / "best.json"), "model: ngf is 1,099,511,627,776, over the cap of 1,024")
    # and before a VLM loads (one that cannot, here: its error would come first otherwise)
    r = run_cli([image, "--vlm", tmp_path / "no-such-vlm", "--mask", checkpoint], mem_limit_mb=4096, timeout=120)
    r.assert_one_line_error(2, str(checkpoint / "best.json"), "over the cap of 1,024")


@pytest.mark.parametrize("changes, fragment", [
    ({"model.ngf": "64"}, "model: ngf must be an integer, not str '64'"),
])
def test_wrong_types_in_a_mask_checkpoint_are_one_line(run_cli, checkpoint, tmp_path, changes, fragment):
    _pairs(tmp_path / "data")
    _edit(checkpoint / "last.json", **changes)
    r = run_cli(["train", "masks", tmp_path / "data", "--out", checkpoint, "--resume", "--epochs", "2",
                 "--no-progress"], timeout=120)
    r.assert_one_line_error(2, str(checkpoint / "last.json"), fragment)


def test_resume_refuses_a_pickle_without_running_it_or_suggesting_weights_only_false(run_cli, checkpoint, tmp_path):
    _pairs(tmp_path / "data")
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    import pickle

    (checkpoint / "last.optim.pt").write_bytes(pickle.dumps({"generator": Payload()}))
    r = run_cli(["train", "masks", tmp_path / "data", "--out", checkpoint, "--resume", "--epochs", "2",
                 "--no-progress"], timeout=120)
    r.assert_one_line_error(2, str(checkpoint / "last.optim.pt"), "refused", "only tensors are loaded")
    assert not marker.exists()
    assert "weights_only=False" not in r.stderr and "weights_only" not in r.stderr


def _png_header_only(path, width, height):
    """A PNG whose header claims width x height: 80 bytes on disk, gigabytes once decoded."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))


def test_decompression_bomb_in_a_mask_training_folder_is_skipped(run_cli, tmp_path):
    data = tmp_path / "data"
    _pairs(data, 3)
    _png_header_only(data / "images" / "bomb.png", 50_000, 50_000)
    Image.new("L", (32, 32)).save(data / "masks" / "bomb.png")
    r = run_cli(["train", "masks", data, "--out", tmp_path / "out", "--epochs", "1", "--ngf", "4", "--ndf", "4",
                 "--no-progress"], mem_limit_mb=4096, timeout=180)
    assert r.returncode == 0, r
    assert f"warning: skipping {data / 'images' / 'bomb.png'}: refused as a decompression bomb" in r.stderr, r
    assert "1 of 4 pair(s) skipped" in r.stderr
    assert (tmp_path / "out" / "best.safetensors").is_file()
