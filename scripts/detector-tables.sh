#!/usr/bin/env bash
# Regenerates the README's detector tables on planted-trace data (generated, not
# photographs): each seed's recipe trained and evaluated with an FGSM sweep.
# Usage: scripts/detector-tables.sh [OUT_DIR] [EXTRA TRAIN OPTIONS...]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/tables}; shift || true
DATA=$OUT/planted
[ -d "$DATA" ] || python -m detectors.synthetic "$DATA" --train 240 --test 60 --amplitude 5 --seed 3
run() {
  name=$1; shift
  [ -f "$OUT/$name/detector.json" ] || explain train detector "$DATA" --out "$OUT/$name" --no-progress "$@"
  explain eval detector "$DATA" --checkpoint "$OUT/$name" --no-progress --fgsm-sweep default --json > "$OUT/$name.eval.json"
  python - "$OUT/$name.eval.json" "$name" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
sweep = " ".join(f"{s['eps_255']:g}/255:{s['accuracy']:.3f}" for s in r.get("fgsm_sweep", []))
print(f"| {sys.argv[2]} | {r['clean']['accuracy']:.3f} | {r['clean']['roc_auc']:.3f} | {sweep} |")
PY
}
echo "| run | accuracy | ROC-AUC | accuracy under FGSM (32-px input) |"
echo "|---|---|---|---|"
run tiny_cnn-default --backbone tiny_cnn "$@"
run seed001-custom-cnn --recipe seed001-custom-cnn "$@"
run seed000-ensemble --recipe seed000-ensemble "$@"
run seed001-densenet121-gray --recipe seed001-densenet121-gray "$@"
run seed000-densenet121-fgsm --recipe seed000-densenet121-fgsm "$@"
