#!/usr/bin/env bash
# The paper-scale check on a GPU machine with PyTorch and no network (issue 9), in one command:
#
#   here:   bash bench/gpu_wheels.sh                     # once: the packages that machine lacks, into .whl/
#   there:  bash bench/gpu_check.sh                      # via the device tool with carry [".whl"]
#
# Installs the carried wheels into /tmp/site (pycortex is built from its trimmed sdist against the machine's
# numpy and Cython), then, each part under its own time limit so that one failure or overrun leaves the others'
# numbers:
#   1. the CUDA tests (GPU against CPU: ridge, kNN, bf16 features);
#   2. bench/paper_scale.py --from-files on CUDA: what a user with images on disk runs, 7,800 PNGs and a
#      responses file to a dashboard-ready results folder, cold caches (-> paper_scale.json, the run's
#      summary.json); the files are simulated and written first, untimed. (Part "sim", not run by default:
#      the paper-sim preset's own run, dataset simulation included, -> paper_scale_sim.json.)
#   3. the ridge/kNN voxel sweep, 10k..80k voxels (-> sweep.json);
#   4. ABN feature throughput at batch sizes 32/128/256 (bench/features.py).
# Everything printed also goes to $OUT/gpu_check.log ($OUT defaults to ./gpu-out), with nvidia-smi.txt.
# On one H100/H200 it ends within 10 minutes (limits 60 + 330 + 100 + 50 s after a ~40-55 s install). Settings:
# PAPER_ARGS adds flags to part 2 (e.g. "--voxels 20000"); SWEEP (default 10000,20000,40000,80000; "none" skips
# it) and SWEEP_ARGS (its flags); PARTS (default "env tests main sweep features"); DEVICE, PYTHON, WORK.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-out}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1 NUMBA_CACHE_DIR=/tmp/numba-cache MPLBACKEND=Agg
PY="${PYTHON:-python3}"
PARTS="${PARTS:-env tests main sweep features}"
SWEEP="${SWEEP:-10000,20000,40000,80000}"
WORK="${WORK:-/tmp/attnbrain-paper}"
t_start=$(date +%s)
stamp() { echo "=== [$(( $(date +%s) - t_start )) s] $*"; }

if ! "$PY" -c "import umap, cortex, nibabel, diskcache" >/dev/null 2>&1; then
    if ! ls .whl/pycortex-*-slim.tar.gz >/dev/null 2>&1; then
        echo "error: umap-learn/pycortex are not installed here and .whl/ (with pycortex-1.4.0-slim.tar.gz) did" \
             "not come along; run 'bash bench/gpu_wheels.sh' where PyPI is reachable and carry .whl" >&2
        exit 2
    fi
    stamp "installing the carried wheels"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "error: installing .whl/*.whl failed" >&2; exit 2; }
    # pycortex from source, its two Cython extensions built in place (~25 s); imported from the source tree,
    # it finds subject S1 in the tree's filestore/ (no user config on a fresh machine points elsewhere).
    mkdir -p /tmp/pycortex
    tar xzf .whl/pycortex-*-slim.tar.gz -C /tmp/pycortex
    (cd /tmp/pycortex/pycortex-1.4.0 && "$PY" setup.py -q build_ext --inplace > /tmp/pycortex/build.log 2>&1) \
        || { tail -20 /tmp/pycortex/build.log >&2; echo "error: building pycortex failed" >&2; exit 2; }
    export PYTHONPATH="/tmp/site:/tmp/pycortex/pycortex-1.4.0${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
# Everything precompute.py imports, checked before any part runs (a missing one fails the run in one line here).
"$PY" -c "import diskcache, h5py, matplotlib, nibabel, PIL, scipy, sklearn, threadpoolctl, torchvision, tqdm, umap" \
    || { echo "error: a package precompute.py needs is missing: add it to bench/gpu_wheels.sh" >&2; exit 2; }
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1 || true
case " $PARTS " in *" env "*) stamp "environment"; "$PY" -c "import torch, numpy, scipy, numba, umap, cortex; print('torch', torch.__version__, 'cuda', \
torch.cuda.is_available(), 'numpy', numpy.__version__, 'scipy', scipy.__version__, 'numba', numba.__version__, \
'umap', umap.__version__, 'pycortex', cortex.__version__, 'cpus', __import__('os').cpu_count())" 2>&1 \
    | grep -v Inkscape ;; esac
status=0
part() {  # part NAME SECONDS COMMAND...: run one part under a time limit, note its exit code, go on
    local name=$1 limit=$2; shift 2
    case " $PARTS " in *" $name "*) ;; *) return 0 ;; esac
    stamp "$name (limit ${limit} s)"
    timeout --kill-after=5 "$limit" "$@" 2>&1 | grep --line-buffered -v Inkscape
    local rc=${PIPESTATUS[0]}
    stamp "$name: exit code $rc"
    [ "$rc" -eq 0 ] || status=1
}
rm -rf "$WORK"
part tests 60 "$PY" -m pytest -q -p no:cacheprovider tests/test_encoding.py tests/test_rsa.py tests/test_features.py \
    -k "cuda" -rA
# shellcheck disable=SC2086
part main 330 "$PY" bench/paper_scale.py --device "${DEVICE:-cuda}" --from-files --sweep none --workdir "$WORK" \
    --json "$OUT/paper_scale.json" ${PAPER_ARGS:-}
cp "$WORK"/results-files/*/summary.json "$OUT/summary.json" 2>/dev/null || true
# shellcheck disable=SC2086
part sim 200 "$PY" bench/paper_scale.py --device "${DEVICE:-cuda}" --sweep none --workdir "$WORK/sim-run" \
    --json "$OUT/paper_scale_sim.json" ${PAPER_ARGS:-}
if [ "$SWEEP" != none ]; then
    # shellcheck disable=SC2086
    part sweep 100 "$PY" bench/paper_scale.py --device "${DEVICE:-cuda}" --skip-main --sweep "$SWEEP" \
        --workdir "$WORK/sweep" --json "$OUT/sweep.json" ${SWEEP_ARGS:-}
fi
part features 50 "$PY" bench/features.py --device "${DEVICE:-cuda}" --n 2048 --size 224 --batch-sizes 32 128 256 \
    --repeats 2
grep -h "^RESULT" "$OUT/gpu_check.log" || true
stamp "done (exit $status)"
exit $status
