"""Shape an image the way a model's processor expects it, before the processor sees it.

Idefics3/SmolVLM with image splitting off resizes every image to a square
(``max_image_size`` × ``max_image_size``, 512 px for SmolVLM): a 2:1 image
would be squashed to half its width, which distorts exactly the proportions
the tree asks about. Padding the image to a square first, with the
processor's mean colour (zero after its normalisation, the least informative
value), keeps the aspect ratio and gives the processor the square it wants.
"""

from __future__ import annotations

from PIL import Image

SQUARE_NOTE = ("non-square images are padded to a square with the processor's mean colour "
               "(with image splitting off its resize would squash them)")


def squares_images(processor) -> bool:
    """True when this processor resizes every image to a square (Idefics3/SmolVLM with splitting off)."""
    image_processor = getattr(processor, "image_processor", None)
    return (image_processor is not None and getattr(image_processor, "do_image_splitting", None) is False
            and isinstance(getattr(image_processor, "max_image_size", None), dict))


def pad_to_square(image: Image.Image, processor) -> Image.Image:
    """``image`` centred on a square canvas of the processor's mean colour; a square image is returned as is."""
    w, h = image.size
    if w == h:
        return image
    mean = getattr(getattr(processor, "image_processor", None), "image_mean", None) or (0.5, 0.5, 0.5)
    if isinstance(mean, (int, float)):
        mean = (mean,) * 3
    fill = tuple(int(round(float(m) * 255)) for m in mean[:3])
    side = max(w, h)
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image.convert("RGB"), ((side - w) // 2, (side - h) // 2))
    return canvas


def prepare_image(image: Image.Image, processor) -> Image.Image:
    return pad_to_square(image, processor) if squares_images(processor) else image
