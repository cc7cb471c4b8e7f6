"""False-positive rates of the significance rules under a planted null with autocorrelated series.

Every voxel's measured series and its prediction are independent AR(1) series (the prediction white, or as smooth
as the noise: movie-like features), so every rejection at p <= level is a false positive. Prints one table row
per (phi, prediction) with the t-test's rate, the block permutation's with a fixed 10-sample block and with the
automatic block (its length), the median effective N and the t-test's implied rate; ends with a RESULT line.

    PYTHONPATH=$PWD python bench/inference_calibration.py [--voxels 4000] [--replicates 3] [--samples 600] [--timing]

Each row pools ``--replicates`` independent sets of ``--voxels`` voxels, each with its own permutation set (one
set of permutations serves all voxels of a call, which correlates their p slightly: pooling calls keeps the
rate's spread close to binomial).

``--timing`` also times ``voxel_stats(rule="perm")`` at the demo's scale (80,000 voxels x 200 test samples).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import scipy.stats
from scipy.signal import lfilter

from core.stats import block_permutation_p, voxel_stats


def _ar1(rng, shape, phi, burn=300):
    e = rng.standard_normal((shape[0] + burn, *shape[1:]))
    return lfilter([1.0], [1.0, -phi], e, axis=0)[burn:] if phi else e[burn:]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--voxels", type=int, default=4000)
    ap.add_argument("--replicates", type=int, default=3)
    ap.add_argument("--samples", type=int, default=600)
    ap.add_argument("--permutations", type=int, default=1000)
    ap.add_argument("--level", type=float, default=0.01)
    ap.add_argument("--timing", action="store_true")
    args = ap.parse_args(argv)
    n, v, level = args.samples, args.voxels, args.level
    total = v * args.replicates
    lo, hi = (x / total for x in scipy.stats.binom.interval(0.99, total, level))
    print(f"null voxels {args.replicates} x {v}, test samples {n}, level {level}, permutations {args.permutations}; "
          f"99% binomial interval of the rate [{lo:.4f}, {hi:.4f}]")
    print(f"{'phi':>4} {'prediction':>10} {'t-test':>7} {'perm b=10':>9} {'perm auto':>9} {'block':>5} "
          f"{'N_eff':>6} {'implied t':>9}")
    result: dict = {}
    worst_auto = 0.0
    for i, phi in enumerate((0.0, 0.3, 0.6, 0.8)):
        for smooth in (False, True):
            if phi == 0.0 and smooth:
                continue
            rates, blocks, n_eff, implied = [], [], [], []
            for rep in range(args.replicates):
                rng = np.random.default_rng([2026, i, int(smooth), rep])
                Y = _ar1(rng, (n, v), phi)
                pred = _ar1(rng, (n, v), phi if smooth else 0.0)
                st = voxel_stats(pred, Y, rule="perm", level=level, n_perm=args.permutations, seed=rep)
                fixed = block_permutation_p(pred, Y, n_perm=args.permutations, block=10, seed=rep)
                rates.append([float(np.mean(x <= level)) for x in (st["p"], fixed, st["p_perm"])])
                blocks.append(st["block_length"])
                n_eff.append(st["autocorrelation"]["median_n_eff"])
                implied.append(st["autocorrelation"]["implied_fpr"])
            t_rate, f_rate, a_rate = np.mean(rates, axis=0)
            ac = {"median_n_eff": float(np.median(n_eff)), "implied_fpr": float(np.mean(implied))}
            st = {"block_length": int(np.median(blocks))}
            label = "AR" if smooth else "white"
            print(f"{phi:>4.1f} {label:>10} {t_rate:>7.4f} {f_rate:>9.4f} {a_rate:>9.4f} {st['block_length']:>5d} "
                  f"{ac['median_n_eff']:>6.0f} {ac['implied_fpr']:>9.4f}")
            key = f"phi{phi:g}_{label}"
            result.update({f"t_{key}": round(t_rate, 4), f"perm_auto_{key}": round(a_rate, 4),
                           f"perm_b10_{key}": round(f_rate, 4), f"block_{key}": st["block_length"]})
            worst_auto = max(worst_auto, a_rate)
    result["perm_auto_worst"] = round(worst_auto, 4)
    result["binom99_hi"] = round(hi, 4)
    result["perm_auto_calibrated"] = worst_auto <= hi
    if args.timing:
        rng = np.random.default_rng(1)
        pred = _ar1(rng, (200, 80_000), 0.5).astype(np.float32)
        Y = _ar1(rng, (200, 80_000), 0.5).astype(np.float32)
        t0 = time.perf_counter()
        st = voxel_stats(pred, Y, rule="perm", n_perm=1000)
        result["demo_scale_stats_s"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        block_permutation_p(pred, Y, n_perm=1000, block=st["block_length"])
        result["demo_scale_perm_s"] = round(time.perf_counter() - t0, 2)
        result["demo_scale_block"] = st["block_length"]
        print(f"demo scale (80,000 voxels x 200 samples, 1000 permutations, block {st['block_length']}): "
              f"voxel_stats {result['demo_scale_stats_s']} s, of which the permutations {result['demo_scale_perm_s']} s")
    print("RESULT " + " ".join(f"{k}={v}" for k, v in result.items()))
    return result


if __name__ == "__main__":
    main()
