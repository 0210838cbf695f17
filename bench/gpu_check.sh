#!/usr/bin/env bash
# The one prepared GPU check (bench/gpu_check.py says what it does): under 8 minutes, every part either runs or
# prints "SKIP <part>: <why>". Uses the project's .venv when there is one, else $PYTHON or python3 as it is
# (a lent GPU machine with only CUDA, PyTorch and nvidia-ml-py still gets the NVML part and the reasons).
#   bench/gpu_check.sh [--budget SECONDS] [--model-dir DIR] [--cache-dir DIR] [--precision fp16|fp32]
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-}
if [ -z "$python" ]; then
    if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi
fi
# A hard stop a little past the script's own budget (450 s by default), well inside 8 minutes.
exec timeout --signal=TERM --kill-after=10 470 "$python" bench/gpu_check.py "$@"
