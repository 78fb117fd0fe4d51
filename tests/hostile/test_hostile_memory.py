"""Large images cost memory by their working size, not their decoded size: 32 images of 60 MP in one batch.

Each image is a small file (a flat JPEG or PNG compresses to a few hundred kB)
that decodes to 60 MP (180 MB as RGB). Held at full size, a batch of 32 took
12 GB. The run happens under an address-space limit a full-size batch cannot
fit in, and its peak RSS is compared with the same command on small images.
"""

from __future__ import annotations

import os

import pytest
from PIL import Image

BIG = (10_000, 6_000)  # 60 MP, under the 64 MP refusal limit
ALLOWED_EXTRA_MB = 1_500


@pytest.fixture(scope="module")
def big_batch(tmp_path_factory):
    folder = tmp_path_factory.mktemp("big")
    img = Image.new("RGB", BIG, (90, 140, 60))
    img.paste((200, 40, 40), (3_000, 2_000, 7_000, 4_000))  # an "object", so the mask and probes have work
    img.save(folder / "1.jpg", quality=85)
    img.save(folder / "2.png", compress_level=1)
    del img
    # hard links: 32 inputs, distinct names, no extra disk. Mostly JPEG (decoded at 1/8 scale directly);
    # PNG has no reduced decode, so its full 180 MB exists for a moment: two of them show that it is let go.
    for i in range(3, 33):
        os.link(folder / ("2.png" if i == 17 else "1.jpg"), folder / f"{i}.{'png' if i == 17 else 'jpg'}")
    small = tmp_path_factory.mktemp("small")
    for i in range(1, 3):
        Image.new("RGB", (64, 48), (90, 140, 60)).save(small / f"{i}.png")
    return folder, small


def test_batch_of_32_images_of_60_megapixels_stays_under_the_memory_budget(run_cli, big_batch, tmp_path):
    folder, small = big_batch
    assert sum(1 for _ in folder.iterdir()) == 32
    assert os.path.getsize(folder / "1.jpg") < 2_000_000 and os.path.getsize(folder / "2.png") < 2_000_000
    base = run_cli([small, "--no-vlm", "--batch-size", "32", "--out", tmp_path / "base"], timeout=120)
    assert base.returncode == 0, base
    big = run_cli([folder, "--no-vlm", "--batch-size", "32", "--out", tmp_path / "big"],
                  mem_limit_mb=6_144, timeout=300)
    assert big.returncode == 0, big
    records = (tmp_path / "big" / "results.jsonl").read_text().splitlines()
    assert len(records) == 32 and '"error": null' in records[0]
    assert "reduced from 10000x6000" in records[0]
    extra = big.peak_rss_mb - base.peak_rss_mb
    print(f"small: {base}\nbig: {big}")
    assert extra < ALLOWED_EXTRA_MB, f"peak RSS {big.peak_rss_mb:.0f} MB, {extra:.0f} MB over the small-image run\n{big}"
