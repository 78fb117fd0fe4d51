#!/usr/bin/env bash
# Opt-in detector checks too slow for the default run: DenseNet121 with the default
# recipe on planted-trace data (issue 13: "DenseNet121 behaves the same"), the
# real-size ViT and Xception Grad-CAM. Tens of minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pytest -q -m slow tests/detectors "$@"
