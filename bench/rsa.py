"""Benchmark of issue 5: exact correlation kNN graph and 3-D UMAP of cortical-scale predicted series.

Synthetic predicted test series with cluster structure (each voxel a mixture of latent time series plus
noise) go through ``core.rsa.knn_correlation`` and ``core.embedding.embed_umap``; UMAP's own
``metric='correlation'`` path runs on the same data for comparison (time, and recall of its approximate
neighbours against our exact ones). Prints every number and, last, one ``RESULT key=value ...`` line.

    .venv/bin/python bench/rsa.py --voxels 80615 --samples 600 --k 15 --device cpu
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

_BLOCK = 8192  # voxels generated at once


def synthetic_series(n_voxels: int, n_samples: int, n_latent: int, seed: int) -> np.ndarray:
    """Predicted-series stand-in of shape (n_samples, n_voxels), float32.

    ``n_latent`` smooth latent time series (moving average over 3 samples, like slow BOLD dynamics); each
    voxel loads 1 on its cluster's series plus 0.3 N(0, 1) on every series, and gets white noise with a
    per-voxel standard deviation drawn from [0.5, 2] (a spread of signal-to-noise ratios).
    """
    rng = np.random.default_rng(seed)
    raw = rng.standard_normal((n_samples + 2, n_latent))
    latent = (raw[:-2] + raw[1:-1] + raw[2:]) / np.sqrt(3.0)
    out = np.empty((n_samples, n_voxels), dtype=np.float32)
    for start in range(0, n_voxels, _BLOCK):
        m = min(_BLOCK, n_voxels - start)
        mix = 0.3 * rng.standard_normal((n_latent, m))
        mix[rng.integers(0, n_latent, m), np.arange(m)] += 1.0
        noise = rng.uniform(0.5, 2.0, m) * rng.standard_normal((n_samples, m))
        out[:, start:start + m] = latent @ mix + noise
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports kB


def timed(fn, repeats: int):
    """Median wall time and median process CPU time (all threads) over ``repeats`` calls, and the last result.

    On a shared machine the wall time depends on the other jobs; the CPU time and the load average
    printed with it say how much of the machine the run actually had.
    """
    wall, cpu, result = [], [], None
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu), result


def load() -> str:
    return "load average {:.1f} {:.1f} {:.1f}".format(*os.getloadavg())


def recall(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of each voxel's exact neighbours (itself excluded) that the approximate list contains."""
    found = (approx[:, :, None] == exact[:, None, 1:]).any(axis=1)
    return float(found.mean())


def naive_knn(z, k: int, rows: int):
    """The pre-issue method: full-width row strips of the similarity matrix, torch.topk on each."""
    import torch
    out = []
    for a in range(0, z.shape[0], rows):
        out.append(torch.topk(z[a:a + rows] @ z.T, k, dim=1).indices)
    return torch.cat(out)


def numba_cache_probe(n_voxels: int) -> tuple[float, float]:
    """Seconds for a fresh process to import and run embed_umap, with an empty and then a warm cache."""
    script = (
        "import sys, time; t0 = time.perf_counter(); sys.path.insert(0, {root!r});"
        "import numpy as np; from core.embedding import embed_umap;"
        "d = np.load({graph!r}); embed_umap(d['idx'], d['dist'], n_epochs=10);"
        "print(time.perf_counter() - t0)")
    from core.rsa import knn_correlation
    idx, dist = knn_correlation(synthetic_series(n_voxels, 100, 10, 1), k=15, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        graph = os.path.join(tmp, "graph.npz")
        np.savez(graph, idx=idx, dist=dist)
        env = dict(os.environ, NUMBA_CACHE_DIR=os.path.join(tmp, "numba"))
        code = script.format(root=str(Path(__file__).resolve().parents[1]), graph=graph)
        cold, warm = (float(subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                                           text=True).stdout.split()[-1]) for _ in range(2))
    return cold, warm


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxels", type=int, default=80_615)
    parser.add_argument("--samples", type=int, default=600)
    parser.add_argument("--k", type=int, default=15)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (the kNN search; UMAP is CPU)")
    parser.add_argument("--latents", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--memory-budget-gb", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=1, help="kNN repeats (median reported)")
    parser.add_argument("--trust-voxels", type=int, default=4000, help="subsample for trustworthiness")
    parser.add_argument("--no-native", action="store_true", help="skip UMAP's own correlation path")
    parser.add_argument("--baseline-voxels", type=int, default=0,
                        help="also time the pre-issue kNN (full strips + topk) against ours on this many voxels")
    parser.add_argument("--agreement-pairs", type=int, default=0,
                        help="also time rdm_agreement with this many pairs (1000 bootstrap resamples)")
    parser.add_argument("--numba-cache-probe", type=int, default=0, metavar="VOXELS",
                        help="time a fresh-process embed_umap on this many voxels with a cold and a warm cache")
    args = parser.parse_args(argv)

    import numba
    import torch
    from threadpoolctl import threadpool_limits

    from core.device import resolve_device
    from core.embedding.umap import _import_umap, embed_umap
    from core.rsa import knn_correlation, knn_tile_shape, rdm_agreement, zscore_series

    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    limits = threadpool_limits(args.threads)
    device = resolve_device(args.device)
    print(f"device={device} threads={args.threads} voxels={args.voxels} samples={args.samples} k={args.k}")
    print(f"tile (rows x cols) = {knn_tile_shape(args.voxels, memory_budget_gb=args.memory_budget_gb)} "
          f"for a {args.memory_budget_gb} GB budget")

    t0 = time.perf_counter()
    series = synthetic_series(args.voxels, args.samples, args.latents, args.seed)
    print(f"synthetic series {series.shape} float32 in {time.perf_counter() - t0:.1f} s; rss {peak_rss_mb():.0f} MB")

    knn_s, knn_cpu, (idx, dist) = timed(lambda: knn_correlation(series, k=args.k, device=device,
                                                                memory_budget_gb=args.memory_budget_gb),
                                        args.repeats)
    flops = args.voxels ** 2 * args.samples  # products actually formed: half the matrix, 2 flops each
    print(f"exact kNN: {knn_s:.1f} s wall, {knn_cpu:.1f} s CPU (median of {args.repeats}), "
          f"{flops / knn_s / 1e9:.0f} GFLOP/s effective; peak rss {peak_rss_mb():.0f} MB; {load()}")

    t0 = time.perf_counter()
    _import_umap()
    import_s = time.perf_counter() - t0
    umap_s, umap_cpu, emb = timed(lambda: embed_umap(idx, dist, n_components=3, random_state=0, series=series), 1)
    peak_ours = peak_rss_mb()
    print(f"UMAP (seeded, precomputed exact graph): {umap_s:.1f} s wall, {umap_cpu:.1f} s CPU (+ {import_s:.1f} s "
          f"importing umap); peak rss {peak_ours:.0f} MB; {load()}")

    from sklearn.manifold import trustworthiness
    sub = np.sort(np.random.default_rng(1).choice(args.voxels, min(args.trust_voxels, args.voxels), replace=False))
    z_sub = np.ascontiguousarray(zscore_series(series[:, sub]).T)
    trust = trustworthiness(z_sub, emb[sub], n_neighbors=args.k, metric="correlation")
    print(f"trustworthiness (k={args.k}, {sub.size} voxels): {trust:.4f}")

    native_s = native_recall = native_trust = float("nan")
    if not args.no_native:
        import warnings
        umap = _import_umap()
        z = np.ascontiguousarray(zscore_series(series).T)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"n_jobs value .* overridden")
            # Compile its neighbour-search kernels first (on 5,000 voxels: above UMAP's 4,096-point exact
            # cut-off) so the timing below is the search and layout, not numba.
            t0 = time.perf_counter()
            umap.UMAP(n_components=3, n_neighbors=args.k, metric="correlation", random_state=0,
                      n_epochs=5).fit(z[: min(5000, args.voxels)])
            print(f"UMAP's own path, warm-up on {min(5000, args.voxels)} voxels (numba compilation): "
                  f"{time.perf_counter() - t0:.1f} s")
            mapper = umap.UMAP(n_components=3, n_neighbors=args.k, metric="correlation", random_state=0)
            native_s, native_cpu, native = timed(lambda: mapper.fit_transform(z), 1)
        native_recall = recall(np.asarray(mapper._knn_indices), idx)
        native_trust = trustworthiness(z_sub, native[sub], n_neighbors=args.k, metric="correlation")
        print(f"UMAP's own metric='correlation' path (seeded): {native_s:.1f} s wall, {native_cpu:.1f} s CPU in all; "
              f"neighbour recall vs exact {native_recall:.4f}; trustworthiness {native_trust:.4f}; ours in all "
              f"{knn_s + umap_s:.1f} s wall, {knn_cpu + umap_cpu:.1f} s CPU; {load()}")
        del z, mapper, native

    extra = {}
    if args.baseline_voxels:
        n = min(args.baseline_voxels, args.voxels)
        part = np.ascontiguousarray(series[:, :n])
        zt = torch.from_numpy(np.ascontiguousarray(zscore_series(part).T)).to(device)
        rows = knn_tile_shape(n, memory_budget_gb=args.memory_budget_gb)[0]
        naive, ours = [], []
        for _ in range(3):  # interleaved, so both see the same share of a busy machine
            naive.append(timed(lambda: naive_knn(zt, args.k, rows), 1)[:2])
            ours.append(timed(lambda: knn_correlation(part, k=args.k, device=device,
                                                      memory_budget_gb=args.memory_budget_gb), 1)[:2])
        (naive_s, naive_cpu), (ours_s, ours_cpu) = (tuple(statistics.median(v) for v in zip(*m)) for m in (naive, ours))
        print(f"same machine, {n} voxels, medians of 3 interleaved: pre-issue kNN (torch strips + topk) "
              f"{naive_s:.1f} s wall / {naive_cpu:.1f} s CPU, ours {ours_s:.1f} s wall / {ours_cpu:.1f} s CPU "
              f"({naive_s / ours_s:.2f}x wall, {naive_cpu / ours_cpu:.2f}x CPU); {load()}")
        extra.update(baseline_voxels=n, baseline_naive_s=round(naive_s, 2), baseline_ours_s=round(ours_s, 2),
                     baseline_naive_cpu_s=round(naive_cpu, 2), baseline_ours_cpu_s=round(ours_cpu, 2))

    if args.agreement_pairs:
        other = series + synthetic_series(args.voxels, args.samples, args.latents, args.seed + 1)
        agree_s, agree_cpu, res = timed(lambda: rdm_agreement(series, other, n_pairs=args.agreement_pairs, seed=0,
                                                              n_boot=1000, device=device), 1)
        print(f"rdm_agreement ({res['n_pairs']} pairs, 1000 bootstrap resamples): {agree_s:.1f} s wall, "
              f"{agree_cpu:.1f} s CPU; {json.dumps(res)}; {load()}")
        extra.update(agreement_s=round(agree_s, 1))

    if args.numba_cache_probe:
        cold, warm = numba_cache_probe(args.numba_cache_probe)
        print(f"fresh process, import + embed_umap of {args.numba_cache_probe} voxels: empty numba cache "
              f"{cold:.1f} s, warm cache {warm:.1f} s (saves {cold - warm:.1f} s)")
        extra.update(numba_cold_s=round(cold, 1), numba_warm_s=round(warm, 1))

    limits.restore_original_limits()
    fields = dict(knn_s=round(knn_s, 2), umap_s=round(umap_s, 2), peak_rss_mb=round(peak_ours),
                  recall_vs_exact=round(native_recall, 4), knn_cpu_s=round(knn_cpu, 1), umap_cpu_s=round(umap_cpu, 1),
                  umap_native_s=round(native_s, 1),
                  trustworthiness=round(trust, 4), trustworthiness_native=round(native_trust, 4), **extra,
                  voxels=args.voxels, samples=args.samples, k=args.k, device=device.type, threads=args.threads,
                  load1=round(os.getloadavg()[0], 1))
    print("RESULT " + " ".join(f"{key}={value}" for key, value in fields.items()))


if __name__ == "__main__":
    main()
