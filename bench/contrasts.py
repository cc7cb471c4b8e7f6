"""Benchmark of the contrasts stage (issue 20): the paired block-bootstrap test of r_a - r_b per voxel at demo
scale, and the RDM agreement's resampled intervals, from synthetic arrays.

Synthetic voxel-major test series: a measured series (signal plus AR(1) noise, rho 0.5) and three predictions
(on, off, uniform) that share its signal with different noise, so a share of the voxels has a planted on
advantage. Runs :func:`core.contrasts.paired_contrasts` exactly as the stage does (every contrast, tracked
voxels for the ROI medians) and :func:`core.rsa.rdm_agreement` with its default resamples on a voxel subset.
Prints every number and, last, one ``RESULT key=value ...`` line.

    PYTHONPATH=$PWD .venv/bin/python bench/contrasts.py --voxels 80000 --samples 200 --boot 1000
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def synthetic(n_voxels: int, n_samples: int, seed: int) -> tuple[np.ndarray, dict]:
    """Measured (n_voxels, n_samples) float32 and predictions per condition; a third of the voxels get a
    planted on advantage (on noise 0.5 against off 1.0)."""
    rng = np.random.default_rng(seed)
    measured = np.empty((n_voxels, n_samples), np.float32)
    preds = {m: np.empty_like(measured) for m in ("on", "off", "uniform")}
    step = 8192
    for start in range(0, n_voxels, step):
        v = min(step, n_voxels - start)
        s = rng.standard_normal((v, n_samples))
        e = rng.standard_normal((v, n_samples))
        for t in range(1, n_samples):
            e[:, t] = 0.5 * e[:, t - 1] + np.sqrt(0.75) * e[:, t]
        measured[start:start + v] = s + 1.5 * e
        helped = rng.random(v) < 1 / 3
        noise_on = np.where(helped, 0.5, 1.0)[:, None]
        preds["on"][start:start + v] = s + noise_on * rng.standard_normal((v, n_samples))
        preds["off"][start:start + v] = s + rng.standard_normal((v, n_samples))
        preds["uniform"][start:start + v] = s + 0.9 * rng.standard_normal((v, n_samples))
    return measured, preds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--voxels", type=int, default=80_000)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--block", type=int, default=0, help="0 = chosen from the data")
    ap.add_argument("--rsa-voxels", type=int, default=20_000, help="voxels of the RDM agreement (0 = skip)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    from core.contrasts import paired_contrasts, summarise_outcomes, tracked_voxels
    from core.rsa import rdm_agreement
    print(f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f}")
    t0 = time.perf_counter()
    measured, preds = synthetic(args.voxels, args.samples, args.seed)
    print(f"synthetic arrays: {time.perf_counter() - t0:.1f} s")
    rows, members = tracked_voxels(np.arange(args.voxels) % 20, args.voxels, 0)
    t0 = time.perf_counter()
    res = paired_contrasts(measured, preds, n_boot=args.boot, block_length=args.block, seed=args.seed, track=rows)
    contrast_s = time.perf_counter() - t0
    for c in res["contrasts"]:
        s = summarise_outcomes(res, c, np.arange(args.voxels), members["all"], res["ci"])
        print(f"{c}: helped {s['n_helped']}, hurt {s['n_hurt']}, no difference {s['n_no_difference']}, "
              f"median Δr {s['median_delta']:.4f} {np.round(s['median_delta_ci'], 4).tolist()}")
    print(f"contrasts: {contrast_s:.1f} s for {args.voxels} voxels x {args.samples} samples x {args.boot} resamples "
          f"x {len(res['contrasts'])} contrasts, block length {res['block_length']}")
    rsa_s = float("nan")
    if args.rsa_voxels:
        cols = np.sort(np.random.default_rng(1).choice(args.voxels, min(args.rsa_voxels, args.voxels), replace=False))
        t0 = time.perf_counter()
        agr = rdm_agreement(preds["on"][cols].T, preds["off"][cols].T, n_pairs=1_000_000, device="cpu")
        rsa_s = time.perf_counter() - t0
        print(f"rdm_agreement on {cols.size} voxels: {rsa_s:.1f} s; pearson {agr['pearson']:.4f}, "
              f"samples {np.round(agr['pearson_ci'], 4).tolist()} (block {agr['block_length']}), "
              f"voxels {np.round(agr['pearson_ci_voxels'], 4).tolist()}, pair MC SE {agr['pearson_mc_se']:.5f}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"RESULT voxels={args.voxels} samples={args.samples} boot={args.boot} block={res['block_length']} "
          f"contrasts_s={contrast_s:.1f} rdm_agreement_s={rsa_s:.1f} peak_rss_mb={rss:.0f}")


if __name__ == "__main__":
    main()
