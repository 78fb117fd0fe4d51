#!/usr/bin/env bash
# The Ray tests: a real local Ray cluster (127.0.0.1 only) per test, the tiny offline models, 16 images.
#
#   scripts/test-ray.sh [PYTEST ARGS...]
#
# Checks that --engine ray writes the local engine's records (order aside) and
# report pages, that the local cluster listens on the loopback only, that a
# worker killed mid-run loses and duplicates nothing, and that --resume after
# a killed driver keeps every earlier record byte for byte. About 10 minutes on
# a loaded 2-core machine, so not part of the default `python -m pytest`.
# Installs the [ray] extra into the active environment if Ray Data is missing.
# Every Ray process a test starts is stopped by the test (by pid), pass or fail.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import ray.data" 2>/dev/null; then
    echo "test-ray.sh: installing the [ray] extra" >&2
    pip install -e ".[ray]"
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec python -m pytest -m ray tests/scale -p no:cacheprovider --durations=0 "$@"
