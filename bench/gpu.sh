#!/usr/bin/env bash
# The GPU benchmark in one command, for a CUDA machine (budget: under 8 minutes on one modern GPU).
#
#   pip install -e ".[gpu]"          # bitsandbytes, for the 4-bit run
#   bench/gpu.sh [OUT_DIR]           # default runs/gpu-bench
#
# Models are built from their public configs with random weights (nothing is downloaded):
# SmolVLM-256M and Qwen2-VL-2B in bfloat16, and Qwen2-VL-2B in 4-bit (bitsandbytes NF4).
# Per model: strategies tree, tree-packed, tree-naive, direct-cached, decision-pipeline on 8 images and
# direct-naive on 1 image (it is slow), then throughput at --batch-images 1..64 on 64 images.
# Every clock read is preceded by torch.cuda.synchronize() (explainer/bench.py, explainer/benchmarks/).
# Writes JSON and Markdown per run into OUT_DIR, and summary.md with every table.
#
# DRY_RUN=1 bench/gpu.sh OUT  checks the plumbing where there is no GPU: CPU, the tiny test model,
# 1-2 images, K in {1, 2}, no 4-bit. Its numbers mean nothing.
set -euo pipefail

OUT=${1:-runs/gpu-bench}
MODELS=${MODELS:-runs/bench-models}
mkdir -p "$OUT"

if [[ "${DRY_RUN:-0}" == "1" ]]; then
  DEVICE=cpu; DTYPE=float32; ARCHS=(idefics3); IMAGES=2; NAIVE_IMAGES=1; TP_IMAGES=2; BATCHES=1,2; QUANT=()
else
  DEVICE=cuda; DTYPE=bfloat16; ARCHS=(smolvlm-256m qwen2-vl-2b); IMAGES=8; NAIVE_IMAGES=1; TP_IMAGES=64
  BATCHES=1,2,4,8,16,32,64; QUANT=(qwen2-vl-2b)
  python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'bench/gpu.sh: no CUDA device (DRY_RUN=1 checks the script on a CPU)')"
fi

start=$SECONDS
run() {  # name, then explain bench arguments; Markdown to OUT/name.md, JSON beside it
  local name=$1; shift
  echo "== $name ($((SECONDS - start)) s so far)" >&2
  explain bench "$@" --models-dir "$MODELS" --device "$DEVICE" --markdown > "$OUT/$name.md"
}

for arch in "${ARCHS[@]}"; do
  run "strategies-$arch-$DTYPE" strategies --arch "$arch" --dtype "$DTYPE" --images "$IMAGES" \
      --strategies tree,tree-packed,tree-naive,direct-cached,decision-pipeline --json-out "$OUT/strategies-$arch-$DTYPE.json"
  run "direct-naive-$arch-$DTYPE" strategies --arch "$arch" --dtype "$DTYPE" --images "$NAIVE_IMAGES" \
      --strategies direct-naive,tree --json-out "$OUT/direct-naive-$arch-$DTYPE.json"
  run "throughput-$arch-$DTYPE" throughput --arch "$arch" --dtype "$DTYPE" --images "$TP_IMAGES" \
      --batch-images "$BATCHES" --growth "" --out-dir "$OUT/throughput-$arch-$DTYPE"
done
for arch in "${QUANT[@]}"; do
  run "strategies-$arch-4bit" strategies --arch "$arch" --quantize 4bit --images "$IMAGES" \
      --strategies tree,direct-cached,decision-pipeline --json-out "$OUT/strategies-$arch-4bit.json"
  run "throughput-$arch-4bit" throughput --arch "$arch" --quantize 4bit --images "$TP_IMAGES" \
      --batch-images "$BATCHES" --growth "" --out-dir "$OUT/throughput-$arch-4bit"
done

{
  echo "# GPU benchmark ($(date -u +%Y-%m-%dT%H:%MZ), $((SECONDS - start)) s)"
  python -c "import torch; print('device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu (dry run)')"
  for f in "$OUT"/*.md; do
    [[ "$(basename "$f")" == summary.md ]] && continue
    echo; echo "## $(basename "$f" .md)"; echo; cat "$f"
  done
} > "$OUT/summary.md.tmp" && mv "$OUT/summary.md.tmp" "$OUT/summary.md"
echo "wrote $OUT/summary.md ($((SECONDS - start)) s)" >&2
