#!/usr/bin/env bash
# ramtag's one-shot GPU benchmark (issue 14): run once on a GPU machine, from anywhere:
#
#     bash benchmarks/gpu.sh            # full-size Swin-L, 2,000 x 4000x3000 + 2,000 x 384x384 JPEGs
#     bash benchmarks/gpu.sh --smoke    # seconds: checks the script (CPU is fine)
#
# Environment:
#   RAMTAG_GPU_BUDGET  seconds for the measurements; what is left when spent is skipped (default 420)
#   RAMTAG_GPU_TIMEOUT hard wall-clock limit of the whole script in seconds (default 470)
#   WHEELS             a folder of wheels to install first (pip --no-deps --no-index): platformdirs
#                      where the machine lacks it (the catalog entries need it)
#   PYTHON             the interpreter (default python3)
#   OUT                if set, a copy of the JSON report is written there too
# Results: benchmarks/results/<date>-<gpu>-gpu.json, rewritten after every measurement.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
if [ -n "${WHEELS:-}" ] && ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install --quiet --no-deps --no-index "$WHEELS"/*.whl || echo "gpu.sh: wheel install failed; going on"
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
"$PY" -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available())"
timeout -k 15 "${RAMTAG_GPU_TIMEOUT:-470}" "$PY" -u benchmarks/gpu_bench.py "$@"
rc=$?
echo "gpu.sh: exit $rc"
exit $rc
