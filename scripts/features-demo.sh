#!/usr/bin/env bash
# The README's feature-detector tables, regenerated: tiny random-weight CLIP, DINOv2 and SigLIP
# (built here, no download) on generated CIFAKE-layout data whose fakes carry a checkerboard texture.
# These numbers say that the machinery works end to end, NOT how real CLIP/DINO features do on real fakes.
#   scripts/features-demo.sh [OUT]   (default runs/features-demo; about a minute of CPU)
set -euo pipefail
OUT=${1:-runs/features-demo}
mkdir -p "$OUT"
python - "$OUT" <<'PY'
import sys
from pathlib import Path
from detectors.features.testing import build_tiny_backbone, make_planted_dataset
out = Path(sys.argv[1])
for kind in ("clip", "dinov2", "siglip"):
    build_tiny_backbone(kind, out / "backbones" / kind)
# two "generators": a strong and a faint texture; and three sources for attribution
make_planted_dataset(out / "data" / "strong", n_train=100, n_test=50, patch=32, strength=30, seed=0)
make_planted_dataset(out / "data" / "faint", n_train=100, n_test=50, patch=32, strength=12, seed=1)
make_planted_dataset(out / "data" / "sources", n_train=60, n_test=30, patch=32, strength=12, seed=2,
                     sources=("REAL", "GAN", "DIFFUSION"))
PY
B="$OUT/backbones"
COMMON=(--cache-dir "$OUT/cache" --no-progress)
explain eval features "$OUT/data/strong" --backbone "$B/clip,$B/dinov2,$B/siglip,$B/clip+$B/dinov2" \
  --head logreg,lda,linear-svm,knn5,cosine-nn,forest,mlp --reduce none,pca:16 --out "$OUT/grid" "${COMMON[@]}"
explain eval features "$OUT/data/faint" --robustness --backbone "$B/clip" --head lda \
  --train-transforms none,blur:1,jitter:0.4,jpeg:75 --out "$OUT/robustness" "${COMMON[@]}"
explain eval features "$OUT/data/strong" "$OUT/data/faint" --cross --backbone "$B/clip" --head lda --out "$OUT/cross" "${COMMON[@]}"
explain eval features "$OUT/data/sources" --attribution --backbone "$B/clip" --head logreg,cosine-nn --out "$OUT/attribution" "${COMMON[@]}"
explain train features "$OUT/data/strong" --backbone "$B/clip" --head logreg --out "$OUT/head" "${COMMON[@]}"
explain "$OUT/data/strong/test/FAKE/0.png" --detector "$OUT/head" --no-vlm
echo "tables: $OUT/{grid,robustness,cross,attribution}/*.md"
