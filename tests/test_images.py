"""Bad input: every kind is converted correctly or refused with one line naming the file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from explainer.errors import UsageError
from explainer.images import expand_inputs, image_index, load_image


def _rgb(seed=0, size=32):
    return Image.fromarray((np.random.default_rng(seed).random((size, size, 3)) * 255).astype("uint8"))


def make_corpus(d):
    """Writes every kind of input; returns name -> (path, expected message or None, expected note or None)."""
    rgb = _rgb()
    cases = {}

    def save(name, img, **kw):
        p = d / name
        img.save(p, **kw)
        return p

    cases["rgb"] = (save("1.png", rgb), None, None)
    cases["cmyk"] = (save("2.jpg", rgb.convert("CMYK")), None, "converted CMYK to RGB")
    g16 = Image.fromarray((np.random.default_rng(1).random((32, 32)) * 65535).astype("uint16"))
    cases["gray16"] = (save("3.png", g16), None, "16-bit grayscale")
    cases["gray"] = (save("4.png", rgb.convert("L")), None, "converted L to RGB")
    cases["rgba"] = (save("5.png", rgb.convert("RGBA")), None, "composited RGBA transparency onto white")
    cases["palette"] = (save("6.png", rgb.convert("P")), None, "converted P to RGB")
    anim = d / "7.gif"
    rgb.save(anim, save_all=True, append_images=[rgb.rotate(90)])
    cases["animated"] = (anim, None, "animated image with 2 frames: using the first")
    cases["bilevel"] = (save("8.png", rgb.convert("1")), None, "converted 1 to RGB")
    trunc = d / "9.png"
    trunc.write_bytes((d / "1.png").read_bytes()[:120])
    cases["truncated"] = (trunc, "image is truncated or corrupt", None)
    empty = d / "10.png"
    empty.write_bytes(b"")
    cases["empty"] = (empty, "file is empty", None)
    text = d / "11.png"
    text.write_text("this is not a picture")
    cases["not_an_image"] = (text, "not an image", None)
    cases["missing"] = (d / "12.png", "image not found", None)
    cases["bomb"] = (save("13.png", Image.new("L", (9000, 9000))), "decompression bomb", None)
    cases["tiny"] = (save("14.png", rgb.resize((4, 4))), "image is 4x4; at least 8x8 is needed", None)
    sub = d / "15.png"
    sub.mkdir()
    cases["directory"] = (sub, "image is a directory", None)
    jpeg = d / "16.jpg"
    rgb.save(jpeg, quality=90)
    jpeg.write_bytes(jpeg.read_bytes()[: len(jpeg.read_bytes()) // 2])
    cases["truncated_jpeg"] = (jpeg, "image is truncated or corrupt", None)
    return cases


def test_corpus_has_at_least_15_kinds(tmp_path):
    assert len(make_corpus(tmp_path)) >= 15


@pytest.mark.parametrize("kind", ["rgb", "cmyk", "gray16", "gray", "rgba", "palette", "animated", "bilevel",
                                  "truncated", "empty", "not_an_image", "missing", "bomb", "tiny", "directory",
                                  "truncated_jpeg"])
def test_each_kind_of_input(tmp_path, kind):
    path, error, note = make_corpus(tmp_path)[kind]
    if error:
        with pytest.raises(UsageError) as info:
            load_image(path)
        message = str(info.value)
        assert message.startswith(f"{path}: ") and error in message and "\n" not in message
    else:
        loaded = load_image(path)
        assert loaded.image.mode == "RGB" and loaded.image.size == (32, 32)
        if note:
            assert any(note in n for n in loaded.notes), loaded.notes
        else:
            assert loaded.notes == []


def test_rgba_transparency_becomes_white(tmp_path):
    img = Image.new("RGBA", (16, 16), (0, 0, 0, 0))
    img.save(tmp_path / "a.png")
    assert load_image(tmp_path / "a.png").image.getpixel((3, 3)) == (255, 255, 255)


def test_16_bit_is_scaled_not_clipped(tmp_path):
    arr = np.full((16, 16), 65535 // 2, dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "h.png")
    value = load_image(tmp_path / "h.png").image.getpixel((0, 0))[0]
    assert 120 <= value <= 135


def test_index_and_folder_order(tmp_path):
    for name in ("10.png", "2.png", "b.png"):
        _rgb().save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in expand_inputs([str(tmp_path)])] == ["2.png", "10.png", "b.png"]
    assert image_index(tmp_path / "17.png") == 17 and image_index(tmp_path / "img_003.jpg") == 3
    assert image_index(tmp_path / "cat.png") is None


def test_large_images_are_reduced_while_decoding_and_turned_upright(tmp_path):
    from explainer.images import WORKING_MAX_SIDE

    big = Image.new("RGB", (4000, 2000), (30, 120, 200))
    big.paste((250, 10, 10), (0, 0, 400, 400))  # a red top-left corner, to see where it ends up
    exif = big.getexif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view"
    big.save(tmp_path / "1.jpg", exif=exif, quality=90)
    big.save(tmp_path / "2.png")
    jpeg = load_image(tmp_path / "1.jpg")
    png = load_image(tmp_path / "2.png")
    assert png.image.size == (WORKING_MAX_SIDE, WORKING_MAX_SIDE // 2)
    assert jpeg.image.size == (WORKING_MAX_SIDE // 2, WORKING_MAX_SIDE)  # portrait once upright
    assert any("reduced from 4000x2000" in n for n in jpeg.notes) and any("EXIF orientation (6)" in n for n in jpeg.notes)
    r, g, b = jpeg.image.getpixel((jpeg.image.width - 20, 20))  # the red corner is now top-right
    assert r > 200 and g < 60 and b < 60
    assert png.image.mode == "RGB" and not any("EXIF" in n for n in png.notes)


def test_probes_measure_a_bounded_copy(tmp_path):
    import numpy as np

    from explainer.probes import PROBE_MAX_SIDE, _bounded

    arr = np.zeros((3000, 1500, 3), np.float32)
    assert max(_bounded(arr).shape[:2]) == PROBE_MAX_SIDE
    assert max(_bounded(Image.new("RGB", (3000, 1500))).shape[:2]) == PROBE_MAX_SIDE
    assert _bounded(Image.new("RGB", (64, 48))).shape == (48, 64, 3)
