#!/bin/bash
# One table saying whether dmha is ready for a GPU (bench/gpu_check.py says what each row runs):
#   bench/gpu_check.sh          on a GPU: paper-size figures, stopped at 8 minutes
#   bench/gpu_check.sh --cpu    a tiny version of every row on the CPU (CI time)
# Without CUDA every row of the GPU run says "skipped: no GPU".
set -eu
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
[ -x .venv/bin/python ] && [ "$PYTHON" = python ] && PYTHON=.venv/bin/python
case " $* " in
    *" --cpu "*) exec "$PYTHON" bench/gpu_check.py "$@" ;;
    *) exec timeout 480 "$PYTHON" bench/gpu_check.py "$@" ;;
esac
