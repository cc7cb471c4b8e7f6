#!/usr/bin/env bash
# Run HERE, where PyPI is reachable: puts into .whl/ (git-ignored) what the GPU machine lacks for
# bench/paper_scale.py, for its Python 3.12: umap-learn, pynndescent, nibabel, diskcache (the stage store), and pycortex 1.4.0 (an sdist:
# PyPI has no wheel of it; gpu_check.sh builds it there against the machine's numpy and Cython) with the
# dependencies that image does not have. numba, llvmlite, scikit-learn, h5py, matplotlib, lxml, networkx,
# imageio, pillow, Cython and torch are already there (/work/.library/device/KINDS.md). ~40 MB in all.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
plat=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    plat+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plat[@]}" -d .whl \
    umap-learn==0.5.12 pynndescent==0.7.0 nibabel==5.4.2 shapely==2.2.0 numexpr==2.14.2 tornado==6.6.1 \
    html5lib==1.1 webencodings==0.6.1 future==1.0.0 looseversion==1.3.0 mda_xdrlib==0.2.0 diskcache==5.6.3
# Downloading an sdist runs its build backend for the metadata (in an isolated build environment that pip
# fills from PyPI with Cython, numpy and setuptools-scm).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps --no-binary=pycortex -d "$tmp" pycortex==1.4.0
# The sdist is 70 MB, over the 64 MiB that may travel: drop its docs, examples, tests and the explorer demo
# (nothing the benchmark reads); the code, OpenCTM, the colormaps and subject S1 stay (37 MB).
tar xzf "$tmp"/pycortex-1.4.0.tar.gz -C "$tmp"
src="$tmp/pycortex-1.4.0"
rm -rf "$src/docs" "$src/examples" "$src/cortex/tests" "$src/cortex/webgl/resources/explo_demo"
rm -f .whl/pycortex-*.tar.gz
tar czf .whl/pycortex-1.4.0-slim.tar.gz -C "$tmp" pycortex-1.4.0
du -sh .whl
ls .whl
