"""Benchmark: our voxelwise RidgeCV (core.encoding) vs himalaya's RidgeCV on the same synthetic data.

Default: 7,200 x 2,048 features with a planted linear signal, ``--voxels`` voxels, same alphas and same
contiguous 5-fold split for both, run in one process on the CPU; prints both times, the speedup and how
well the two agree (alphas, predictions), then ``RESULT ...`` as the last line.

``--paper`` (for a GPU machine): the study's scale, 70,933 voxels and three feature sets (attention on / off /
uniform) fit one after the other on ``--device``; prints seconds per set and the peak GPU memory.

    OMP_NUM_THREADS=2 .venv/bin/python bench/ridge.py --voxels 20000
    .venv/bin/python bench/ridge.py --paper --device cuda
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.device import resolve_device# noqa: E402
from core.encoding import DEFAULT_ALPHAS
from core.encoding import VoxelRidgeCV, make_folds# noqa: E402
from core.stats import pearson_r# noqa: E402

PAPER_VOXELS = 70_933


def planted_data(n_train: int, n_test: int, n_features: int, n_voxels: int, *, n_sets: int = 1, seed: int = 0,
                 device: torch.device = torch.device("cpu"), chunk: int = 8192):
    """Correlated features (decaying spectrum, like CNN activations) and voxels driven by a planted linear
    signal of one feature set each, with SNR from 0 (30% null voxels) to 2.

    Returns X (n_sets, n_train + n_test, n_features) float32, Y (n_train + n_test, n_voxels) float32, the
    noise-free signal's test part (n_test, n_voxels) and the index of the driving set per voxel.
    """
    g = torch.Generator(device=device).manual_seed(seed)
    n = n_train + n_test
    spectrum = torch.linspace(1.0, 0.02, n_features, device=device)
    X = []
    for _ in range(n_sets):
        mix = torch.randn((n_features, n_features), generator=g, device=device) * spectrum
        X.append(torch.randn((n, n_features), generator=g, device=device) @ mix.T)
    driver = torch.randint(0, n_sets, (n_voxels,), generator=g, device=device)
    snr = torch.rand((n_voxels,), generator=g, device=device) * 2.0
    snr[torch.rand((n_voxels,), generator=g, device=device) < 0.3] = 0.0
    Y = np.empty((n, n_voxels), dtype=np.float32)
    signal_test = np.empty((n_test, n_voxels), dtype=np.float32)
    for start in range(0, n_voxels, chunk):
        cols = slice(start, min(start + chunk, n_voxels))
        W = torch.randn((n_features, cols.stop - start), generator=g, device=device)
        S = torch.zeros((n, cols.stop - start), device=device)
        for s in range(n_sets):
            own = (driver[cols] == s).to(W.dtype)
            S += X[s] @ (W * own)
        S = (S - S.mean(0)) / S.std(0)
        noise = torch.randn((n, cols.stop - start), generator=g, device=device)
        Y[:, cols] = (S * snr[cols] + noise).cpu().numpy()
        signal_test[:, cols] = S[n_train:].cpu().numpy()
    X = torch.stack(X).cpu()
    driver = driver.cpu().numpy()
    return X.numpy(), Y, signal_test, driver, snr.cpu().numpy()


def _standardize(X_train: np.ndarray, X_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = X_train.mean(0), X_train.std(0)
    return ((X_train - mean) / std).astype(np.float32), ((X_test - mean) / std).astype(np.float32)


def run_ours(X, Y, X_test, folds_k, alphas, device, progress):
    t0 = time.perf_counter()
    model = VoxelRidgeCV(alphas, n_folds=folds_k, device=device, standardize_X=False, progress=progress).fit(X, Y)
    pred = model.predict(X_test)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0, model, pred


def run_himalaya(X, Y, X_test, folds, alphas, targets_batch):
    from himalaya.backend import set_backend
    from himalaya.ridge import RidgeCV
    from himalaya.scoring import r2_score

    set_backend("numpy")
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = RidgeCV(alphas=alphas, fit_intercept=True, cv=folds,
                        solver_params=dict(score_func=r2_score, n_targets_batch=targets_batch)).fit(X, Y)
    pred = model.predict(X_test)
    return time.perf_counter() - t0, model, pred


def compare(args) -> None:
    device = resolve_device(args.device)
    print(f"data: {args.samples} train + {args.test} test samples, {args.features} features, {args.voxels} voxels; "
          f"{len(args.alphas)} alphas {args.alphas[0]:g}..{args.alphas[-1]:g}; {args.folds} contiguous folds; "
          f"device {device}; torch threads {torch.get_num_threads()}; torch {torch.__version__}")
    t0 = time.perf_counter()
    X_all, Y_all, signal_test, _, snr = planted_data(args.samples, args.test, args.features, args.voxels,
                                                     seed=args.seed)
    X, X_test = _standardize(X_all[0, :args.samples], X_all[0, args.samples:])
    Y, Y_test = Y_all[:args.samples], Y_all[args.samples:]
    del X_all, Y_all
    print(f"generated planted data in {time.perf_counter() - t0:.1f} s")
    folds = make_folds(args.samples, args.folds)

    ours_times, him_times = [], []
    for rep in range(args.repeats):
        t, model, pred = run_ours(X, Y, X_test, args.folds, args.alphas, device, args.progress)
        ours_times.append(t)
        print(f"[{rep}] ours ({model.solver_}, {model.voxel_batch_} voxels/batch): {t:.1f} s", flush=True)
        if not args.skip_himalaya:
            import himalaya
            from threadpoolctl import threadpool_limits
            with threadpool_limits(torch.get_num_threads()):
                th, ref, pred_ref = run_himalaya(X, Y, X_test, folds, args.alphas, args.himalaya_batch)
            him_times.append(th)
            print(f"[{rep}] himalaya {himalaya.__version__} RidgeCV (numpy backend, score_func=r2_score, "
                  f"n_targets_batch={args.himalaya_batch}): {th:.1f} s", flush=True)

    r_test = pearson_r(pred, Y_test)
    r_signal = pearson_r(pred, signal_test)
    planted = snr > 0
    print(f"planted signal: median test r {np.nanmedian(r_test[planted]):.3f} (signal voxels) vs "
          f"{np.nanmedian(r_test[~planted]):.3f} (null voxels); median r(pred, true signal) "
          f"{np.nanmedian(r_signal[planted]):.3f}")
    ours_s = statistics.median(ours_times)
    if args.skip_himalaya:
        print(f"RESULT ours_s={ours_s:.2f} voxels={args.voxels}")
        return
    him_s = statistics.median(him_times)
    same = np.isclose(model.best_alphas_, ref.best_alphas_, rtol=1e-5)  # himalaya returns float32 alphas
    agree = float(np.mean(same))
    # How much the two choices differ on our (float64-accumulated) CV curve: below float32 resolution of the
    # mean R^2 the choice is a coin toss between equally good alphas (flat curves of null voxels).
    idx_ref = np.abs(np.log(ref.best_alphas_)[None, :] - np.log(args.alphas)[:, None]).argmin(0)
    gap = model.cv_curves_.max(0) - model.cv_curves_[idx_ref, np.arange(args.voxels)]
    top2 = np.sort(model.cv_curves_, axis=0)[-2:]
    resolved = (top2[1] - top2[0]) > 1e-6  # the best alpha beats every other by more than 1e-6
    agree_resolved = float(np.mean(same[resolved])) if resolved.any() else float("nan")
    spread = float(Y_test.std())
    pred_err = float(np.max(np.abs(pred[:, same] - pred_ref[:, same])) / spread) if same.any() else float("nan")
    cv_err = float(np.max(np.abs(model.cv_scores_ - ref.cv_scores_)))
    print(f"medians over {args.repeats} run(s): himalaya {him_s:.1f} s, ours {ours_s:.1f} s, "
          f"speedup {him_s / ours_s:.2f}x")
    print(f"agreement: alphas {agree * 100:.3f}% of voxels ({int((~same).sum())} differ, "
          f"{int((~same & planted).sum())} of them planted-signal voxels; largest CV R^2 gap between the two "
          f"choices {gap[~same].max() if (~same).any() else 0:.1e}); {agree_resolved * 100:.3f}% of the "
          f"{int(resolved.sum())} voxels whose best alpha beats the runner-up by > 1e-6 in CV R^2")
    print(f"voxels with the same alpha: max |pred diff| / response sd {pred_err:.2e}; "
          f"all voxels: max |cv R^2 diff| {cv_err:.2e}")
    print(f"RESULT himalaya_s={him_s:.2f} ours_s={ours_s:.2f} speedup={him_s / ours_s:.2f} "
          f"alpha_agreement={agree:.5f} alpha_agreement_resolved={agree_resolved:.5f}")


def paper(args) -> None:
    device = resolve_device(args.device)
    sets = ("on", "off", "uniform")
    print(f"paper scale: {args.samples} train + {args.test} test samples, {args.features} features x "
          f"{len(sets)} sets, {args.voxels} voxels, {len(args.alphas)} alphas, {args.folds} folds, device {device}")
    t0 = time.perf_counter()
    X_all, Y_all, signal_test, driver, snr = planted_data(args.samples, args.test, args.features, args.voxels,
                                                          n_sets=len(sets), seed=args.seed, device=device)
    Y, Y_test = Y_all[:args.samples], Y_all[args.samples:]
    del Y_all
    print(f"generated planted data in {time.perf_counter() - t0:.1f} s (Y_train {Y.nbytes / 1e9:.2f} GB)")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, recovery = [], []
    for s, name in enumerate(sets):
        X, X_test = _standardize(X_all[s, :args.samples], X_all[s, args.samples:])
        t, model, pred = run_ours(X, Y, X_test, args.folds, args.alphas, device, args.progress)
        times.append(t)
        r = pearson_r(pred, Y_test)
        recovery.append(r)
        own = (driver == s) & (snr > 0)
        print(f"set {name}: {t:.1f} s ({model.solver_}, {model.voxel_batch_} voxels/batch); median test r on the "
              f"voxels it drives {np.nanmedian(r[own]):.3f}", flush=True)
    dominant = np.nanargmax(np.stack([np.nan_to_num(r, nan=-1) for r in recovery]), axis=0)
    strong = snr > 1.0
    print(f"best-predicting set = driving set on {np.mean(dominant[strong] == driver[strong]) * 100:.1f}% of "
          "voxels with SNR > 1")
    peak = torch.cuda.max_memory_allocated(device) / 1024 ** 3 if device.type == "cuda" else float("nan")
    print(f"total {sum(times):.1f} s; peak GPU memory {peak:.2f} GiB")
    print(f"RESULT paper_s={sum(times):.2f} per_set_s={statistics.median(times):.2f} peak_gpu_gib={peak:.2f} "
          f"voxels={args.voxels} device={device.type}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--voxels", type=int, default=None, help="default 20000 (70933 with --paper)")
    parser.add_argument("--samples", type=int, default=7200)
    parser.add_argument("--test", type=int, default=600)
    parser.add_argument("--features", type=int, default=2048)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--n-alphas", type=int, default=len(DEFAULT_ALPHAS),
                        help="alphas logspace(-2, 8, n) (default: the encoder's default grid)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per method; medians are reported")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--himalaya-batch", type=int, default=5000,
                        help="himalaya n_targets_batch (bounds its (n_alphas, n_val, n_voxels) predictions)")
    parser.add_argument("--skip-himalaya", action="store_true")
    parser.add_argument("--paper", action="store_true", help="70,933 voxels x 3 feature sets, ours only")
    parser.add_argument("--progress", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.alphas = np.logspace(-2, 8, args.n_alphas)
    if args.voxels is None:
        args.voxels = PAPER_VOXELS if args.paper else 20_000
    torch.set_num_threads(args.threads)
    (paper if args.paper else compare)(args)


if __name__ == "__main__":
    main()
