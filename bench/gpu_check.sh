#!/usr/bin/env bash
# The paper-scale check on a GPU machine with PyTorch and no network (issue 9), in one command:
#
#   here:   bash bench/gpu_wheels.sh                     # once: the packages that machine lacks, into .whl/
#   there:  bash bench/gpu_check.sh                      # via the device tool with carry [".whl"]
#
# Installs the carried wheels into /tmp/site (pycortex is built from its trimmed sdist against the machine's
# numpy and Cython), then runs bench/paper_scale.py on CUDA: the whole paper-sim pipeline from images on disk to a
# dashboard-ready results folder, then the ridge/kNN voxel sweep. Numbers go to $OUT (default ./gpu-out):
# paper_scale.json, paper_scale.log, nvidia-smi.txt. Sized to finish in under 8 minutes on one H100/H200;
# PAPER_ARGS adds flags (e.g. PAPER_ARGS="--sweep none" to skip the sweep).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NUMBA_CACHE_DIR=/tmp/numba-cache MPLBACKEND=Agg
PY="${PYTHON:-python3}"

if ! "$PY" -c "import umap, cortex, nibabel" >/dev/null 2>&1; then
    if ! ls .whl/pycortex-*-slim.tar.gz >/dev/null 2>&1; then
        echo "error: umap-learn/pycortex are not installed here and .whl/ (with pycortex-1.4.0-slim.tar.gz) did" \
             "not come along; run 'bash bench/gpu_wheels.sh' where PyPI is reachable and carry .whl" >&2
        exit 2
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    # pycortex from source, its two Cython extensions built in place (~25 s); imported from the source tree,
    # it finds subject S1 in the tree's filestore/ (no user config on a fresh machine points elsewhere).
    mkdir -p /tmp/pycortex
    tar xzf .whl/pycortex-*-slim.tar.gz -C /tmp/pycortex
    (cd /tmp/pycortex/pycortex-1.4.0 && "$PY" setup.py -q build_ext --inplace > /tmp/pycortex/build.log 2>&1) \
        || { tail -20 /tmp/pycortex/build.log >&2; echo "error: building pycortex failed" >&2; exit 2; }
    export PYTHONPATH="/tmp/site:/tmp/pycortex/pycortex-1.4.0${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
"$PY" -c "import torch, umap, cortex; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
'umap', umap.__version__, 'pycortex', cortex.__version__)" 2>&1 | grep -v Inkscape
set -o pipefail
# shellcheck disable=SC2086
"$PY" bench/paper_scale.py --device "${DEVICE:-cuda}" --json "$OUT/paper_scale.json" ${PAPER_ARGS:-} 2>&1 \
    | grep --line-buffered -v Inkscape | tee "$OUT/paper_scale.log"
