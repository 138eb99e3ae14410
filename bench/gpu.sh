#!/usr/bin/env bash
# One call on a CUDA machine: the GPU benchmark tables (bench/gpu.py), then the CUDA tests.
#
#   bench/gpu.sh             # on the GPU machine, from anywhere; about 3-5 minutes
#   bench/gpu.sh --smoke     # CPU, tiny sizes (the test suite runs this; the CUDA tests skip)
#
# PYTHON picks the interpreter (default: python3). GPU_SH_TESTS=0 leaves the CUDA tests out.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
"$PY" bench/gpu.py "$@"
if [ "${GPU_SH_TESTS:-1}" != "0" ]; then
    echo
    echo "CUDA tests (tests/test_cuda.py; they skip without a CUDA device)"
    "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py
fi
