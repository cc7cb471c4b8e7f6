"""UMAP of two conditions: spawned worker processes against one after the other in-process.

``core.embedding.embed_umap_each`` embeds the off and on graphs either side by side in spawned workers (each
pays a Python start-up and the umap/numba imports, then runs its graph and spectral initialisation on one core
beside the other's) or one after the other in the calling process (each layout on every core). This times both,
alternated, in fresh processes (so the in-process side pays its umap import as a pipeline run does), on kNN
graphs of ``bench/rsa.py``'s clustered stand-in series, and prints the medians per size; last, one
``RESULT key=value ...`` line. What ``embed_umap_each`` chooses by default is printed beside each size.

    .venv/bin/python bench/umap_workers.py --voxels 300,5000,20000,53000 --reps 2
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_graphs(path: Path, n_voxels: int, n_samples: int, k: int) -> None:
    from bench.rsa import synthetic_series
    from core.rsa import knn_correlation
    arrays = {}
    for c, seed in (("off", 0), ("on", 1)):
        s = synthetic_series(n_voxels, n_samples, n_latent=20, seed=seed)
        arrays[f"series_{c}"] = s
        arrays[f"idx_{c}"], arrays[f"dist_{c}"] = knn_correlation(s, k=k, device="cpu")
    np.savez(path, **arrays)


def child(path: str, workers: int, k: int) -> None:
    from core.embedding.umap import configure_numba_cache
    configure_numba_cache()
    from core.embedding.umap import embed_umap_each
    with np.load(path) as z:
        graphs = [(z[f"idx_{c}"], z[f"dist_{c}"]) for c in ("off", "on")]
        series = [z[f"series_{c}"] for c in ("off", "on")]
    t0 = time.perf_counter()
    embed_umap_each(graphs, series=series, max_workers=workers, n_components=3, n_neighbors=k, random_state=0)
    print(f"{time.perf_counter() - t0:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--voxels", default="300,5000,20000", help="comma-separated voxel counts per condition")
    p.add_argument("--samples", type=int, default=600, help="samples per series (the study's 600 test images)")
    p.add_argument("--k", type=int, default=15, help="neighbours per voxel (the presets' rsa.k and umap.n_neighbors)")
    p.add_argument("--reps", type=int, default=2, help="timed runs of each kind, alternated")
    p.add_argument("--child", nargs=2, metavar=("GRAPHS", "WORKERS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.k)
        return
    from core.embedding.umap import default_umap_workers
    cores = len(os.sched_getaffinity(0))
    print(f"cores: {cores}", flush=True)
    result = {}
    with tempfile.TemporaryDirectory(prefix="attnbrain-umapw-") as tmp:
        for n in (int(v) for v in args.voxels.split(",")):
            graphs = Path(tmp) / f"graphs-{n}.npz"
            build_graphs(graphs, n, args.samples, args.k)
            times = {2: [], 1: []}
            for _ in range(args.reps):
                for w in (2, 1):
                    out = subprocess.run([sys.executable, __file__, "--k", str(args.k), "--child", str(graphs), str(w)],
                                         check=True, capture_output=True, text=True, cwd=ROOT)
                    times[w].append(float(out.stdout.strip().splitlines()[-1]))
            med = {w: statistics.median(t) for w, t in times.items()}
            print(f"{n:>7,} voxels: two workers {' / '.join(f'{t:.1f}' for t in times[2])} s (median {med[2]:.1f}), "
                  f"in-process {' / '.join(f'{t:.1f}' for t in times[1])} s (median {med[1]:.1f}); "
                  f"default here: {default_umap_workers([n, n])} process(es)", flush=True)
            result[f"workers_{n}_s"], result[f"inprocess_{n}_s"] = round(med[2], 2), round(med[1], 2)
    print("RESULT " + " ".join(f"{k}={v}" for k, v in result.items()) + f" cores={cores}")


if __name__ == "__main__":
    main()
