"""Benchmark: the joint on+off model (core.encoding.banded.BandedRidgeCV) against the two single-feature fits and
against himalaya's BandedRidgeCV on the same data, band weights, alphas and folds, side by side in one run.

Synthetic features like the ABN's: an off set with a decaying spectrum and an on set correlated with it (0.96
per channel by default, as in the demo), voxels planted from both; ``--voxels`` voxels, 7,200 train / 600 test
samples, 2,048 features per set (the study's scale), 5 contiguous folds, the paper preset's 21 alphas with the
refined search, band weights 0, 0.25, .., 1 (the vertices are the single fits, reused by the joint stage).
``--signal-share`` plants signal in that share of the voxels only; the joint fit scores its inner band weights
on the voxels a single model predicts in cross-validation (the stage's ``joint.voxels = "predicted"``) unless
``--voxel-screen all``.
himalaya runs the 3 inner band weights (it cannot take a zero weight) on ``--himalaya-voxels`` voxels, and so do
we, for the side-by-side time.

    OMP_NUM_THREADS=2 .venv/bin/python bench/joint.py --voxels 10000 --himalaya-voxels 2000 --voxel-screen all
    OMP_NUM_THREADS=2 .venv/bin/python bench/joint.py --voxels 70933 --signal-share 0.3 --skip-himalaya
    .venv/bin/python bench/joint.py --voxels 70933 --device cuda

Last line: ``RESULT key=value ...``.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.encoding import VoxelRidgeCV, make_folds  # noqa: E402
from core.encoding.banded import BandedRidgeCV, band_weight_grid, cv_screen  # noqa: E402
from core.encoding.ridge import DEFAULT_ALPHAS  # noqa: E402


def planted(n: int, p: int, v: int, corr: float, seed: int, signal_share: float = 1.0):
    """X_off, X_on (n, p) float32 with per-channel correlation ``corr``; Y (n, v) from both, SNR up to 1, on the
    first ``signal_share`` of the voxels (the others pure noise, as most of a cortex is)."""
    rng = np.random.default_rng(seed)
    spectrum = np.linspace(1.0, 0.02, p)
    mix = rng.standard_normal((p, p)).astype(np.float32) * spectrum.astype(np.float32)
    off = (rng.standard_normal((n, p)).astype(np.float32) @ mix.T)
    off /= off.std(0)
    on = corr * off + np.sqrt(1 - corr ** 2) * rng.standard_normal((n, p)).astype(np.float32)
    share = rng.random(v).astype(np.float32)
    Y = np.empty((n, v), dtype=np.float32)
    for start in range(0, v, 4096):
        s = slice(start, min(start + 4096, v))
        w = rng.standard_normal((p, s.stop - start)).astype(np.float32) / np.sqrt(p)
        sig = on @ (w * share[s]) + off @ (w * (1 - share[s]))
        gain = rng.random(s.stop - start).astype(np.float32) * (np.arange(start, s.stop) < signal_share * v)
        Y[:, s] = sig / sig.std(0) * gain + rng.standard_normal((n, s.stop - start)).astype(np.float32)
    return off, on, Y


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--voxels", type=int, default=10_000)
    ap.add_argument("--himalaya-voxels", type=int, default=2_000)
    ap.add_argument("--train", type=int, default=7_200)
    ap.add_argument("--test", type=int, default=600)
    ap.add_argument("--features", type=int, default=2_048)
    ap.add_argument("--corr", type=float, default=0.96)
    ap.add_argument("--signal-share", type=float, default=1.0,
                    help="share of the voxels with planted signal (the rest pure noise)")
    ap.add_argument("--voxel-screen", choices=("predicted", "all"), default="predicted",
                    help="joint.voxels: score the inner band weights where a single model has CV R^2 > 0, or on all")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-himalaya", action="store_true")
    args = ap.parse_args(argv)
    n = args.train + args.test
    off, on, Y = planted(n, args.features, args.voxels, args.corr, seed=0, signal_share=args.signal_share)
    tr = slice(0, args.train)
    kw = dict(alphas=DEFAULT_ALPHAS, n_folds=5, device=args.device, alpha_search="refine")
    gammas = band_weight_grid(2, 4)
    print(f"{args.voxels} voxels, {args.train} train / {args.test} test, {args.features} features per set, "
          f"on-off channel correlation {args.corr}, device {args.device}", flush=True)

    # The two single-feature fits (the encoding stage's work; the joint stage reuses them as vertices).
    t0 = time.perf_counter()
    known = {}
    for i, X in ((0, on), (len(gammas) - 1, off)):
        m = VoxelRidgeCV(**kw).fit(X[tr], Y[tr])
        known[i] = (m.cv_scores_, m.best_alphas_, m.predict(X[args.train:]))
        del m
    t_single = time.perf_counter() - t0
    print(f"  two single fits      {t_single:8.1f} s", flush=True)

    t0 = time.perf_counter()
    # The joint stage's screen (joint.voxels): the voxels a single model predicts in cross-validation.
    screen = cv_screen(known[0][0], known[len(gammas) - 1][0]) if args.voxel_screen == "predicted" else None
    joint = BandedRidgeCV(gammas=gammas, **kw)
    joint.fit([on[tr], off[tr]], Y[tr], X_test=[on[args.train:], off[args.train:]], known=known, voxels=screen)
    t_joint = time.perf_counter() - t0
    rss = peak_rss_gb()
    n_fit = args.voxels if screen is None else int(screen.size)
    print(f"  joint (3 new weights on {n_fit} voxels) {t_joint:7.1f} s   peak RSS {rss:.2f} GB   "
          f"({t_joint / t_single:.2f}x the two single fits)", flush=True)

    result = {"voxels": args.voxels, "signal_share": args.signal_share, "fitted_voxels": n_fit,
              "single_s": round(t_single, 1), "joint_s": round(t_joint, 1),
              "joint_over_single": round(t_joint / t_single, 2), "peak_rss_gb": round(rss, 2)}
    if not args.skip_himalaya:
        from himalaya.backend import set_backend
        from himalaya.ridge import BandedRidgeCV as HimalayaBanded
        from himalaya.scoring import r2_score
        set_backend("torch" if args.device == "cpu" else "torch_cuda")
        v = min(args.himalaya_voxels, args.voxels)
        inner = gammas[1:-1]
        folds = make_folds(args.train, 5, None)
        alphas = DEFAULT_ALPHAS
        t0 = time.perf_counter()
        ours = BandedRidgeCV(gammas=inner, alphas=alphas, n_folds=5, device=args.device)
        ours.fit([on[tr], off[tr]], Y[tr, :v])
        t_ours = time.perf_counter() - t0
        z = [((X[tr] - X[tr].mean(0)) / X[tr].std(0)).astype(np.float32) for X in (on, off)]
        ref = HimalayaBanded(groups="input", fit_intercept=True, cv=folds,
                             solver_params=dict(n_iter=inner, alphas=alphas, score_func=r2_score, progress_bar=False,
                                                jitter_alphas=False, conservative=False, local_alpha=True))
        t0 = time.perf_counter()
        ref.fit(z, Y[tr, :v])
        t_ref = time.perf_counter() - t0
        cv_ref = np.asarray(ref.cv_scores_.cpu() if hasattr(ref.cv_scores_, "cpu") else ref.cv_scores_)
        agree = float(np.max(np.abs(ours.cv_by_gamma_ - cv_ref)))
        print(f"  {v} voxels, 3 band weights x {len(alphas)} alphas (all scored): ours {t_ours:.1f} s, "
              f"himalaya {t_ref:.1f} s ({t_ref / t_ours:.2f}x); max |CV R^2 difference| {agree:.1e}", flush=True)
        result.update(himalaya_voxels=v, ours_subset_s=round(t_ours, 1), himalaya_subset_s=round(t_ref, 1),
                      speedup_vs_himalaya=round(t_ref / t_ours, 2), max_cv_diff=f"{agree:.1e}")
    print("RESULT " + " ".join(f"{k}={v}" for k, v in result.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
