#!/usr/bin/env bash
# Render a sample HTML report offline and screenshot it into docs/report-screenshot.png.
#
#   scripts/screenshot_report.sh [IMAGE]        (default: examples/1.png)
#
# Uses the tiny random-weight test VLM and a fixed random tiny classifier
# (nothing is downloaded), so the verdict, answers and findings are meaningless:
# the screenshot shows the layout (docs/report.md says so under it). Needs
# headless Chromium (Debian: apt-get install -y chromium). Outputs go under
# runs/ (git-ignored). See docs/report.md.
set -euo pipefail
cd "$(dirname "$0")/.."
image=${1:-examples/1.png}
shot=docs/report-screenshot.png
out=runs/report-sample

browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
    echo "screenshot_report.sh: no chromium found; install it with: apt-get install -y chromium" >&2
    exit 2
fi
[ -n "${VIRTUAL_ENV:-}" ] || { [ -f .venv/bin/activate ] && . .venv/bin/activate; }

vlm=$(python -c "from explainer.testing import build_tiny_vlm; print(build_tiny_vlm('idefics3', 'runs/tiny'))")
python - <<'PY'
from pathlib import Path

import torch

from detectors.classifier import ClassifierConfig, build_classifier, save_classifier

if not Path("runs/tiny/detector/config.json").exists():
    torch.manual_seed(0)  # a fixed random classifier: the same screenshot every run
    save_classifier("runs/tiny/detector", build_classifier(ClassifierConfig(backbone="tiny_cnn")))
PY

rm -rf "$out"
explain "$image" --vlm "$vlm" --detector runs/tiny/detector --device cpu --report "$out" > /dev/null
page="$out/$(basename "${image%.*}").html"

profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
# No display and no network: every flag below keeps Chromium from reaching out or needing a GPU.
"$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --hide-scrollbars --user-data-dir="$profile" \
    --window-size=1200,1600 --screenshot="$PWD/$shot" "file://$PWD/$page" 2> "$profile/chromium.log" \
    || { cat "$profile/chromium.log" >&2; exit 1; }

# Chromium writes a 24-bit PNG; an adaptive palette keeps the committed file small (the page is mostly flat colour).
python - "$shot" <<'PY'
import sys

from PIL import Image

path = sys.argv[1]
Image.open(path).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE) \
    .save(path, optimize=True)
PY
echo "wrote $shot ($(du -k "$shot" | cut -f1) KB) from $page"
