#!/usr/bin/env bash
# The default test suite on the lowest transformers pyproject.toml supports (the low end of ">=5.0,<6").
#
#   scripts/test-transformers-low.sh [PYTEST ARGS...]
#
# Builds a second venv (.venv-transformers-low/, reused on later runs) with the
# same install as the README, then pins transformers to the low end, and runs
# `python -m pytest -q` there with that venv first on PATH (so `explain` and the
# bench scripts run on it too). The high end is what CI installs. About 4
# minutes of tests on 2 cores, plus the install the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
LOW=$(python3 - <<'PY'
import re, tomllib
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
spec = next(d for d in deps if re.match(r"transformers\b", d))
print(re.search(r">=\s*([0-9][0-9.]*)", spec).group(1))
PY
)
VENV=${VENV:-.venv-transformers-low}
if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q torch==2.14.1 torchvision==0.29.1
    "$VENV/bin/pip" install -q -e ".[test]"
fi
"$VENV/bin/pip" install -q "transformers==$LOW"
"$VENV/bin/python" -c "import transformers; print('transformers', transformers.__version__)"
export PATH="$PWD/$VENV/bin:$PATH"
exec python -m pytest -q -p no:cacheprovider "$@"
