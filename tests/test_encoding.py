"""Voxelwise ridge (core.encoding) against independent references: himalaya RidgeCV, scikit-learn Ridge and
a brute-force per-fold scikit-learn cross-validation."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.model_selection import KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from core._validation import InputError
import core.encoding.ridge as encoding
from core.encoding import DEFAULT_ALPHAS
from core.encoding import SOLVERS
from core.encoding import VoxelRidgeCV, fit_predict, make_delayed, make_folds

# The kernel solver cross-validates through per-alpha residual operators when they fit in memory (always, at
# these sizes) and through per-fold eigenbasis products otherwise: both paths are checked against the references.
SOLVER_PATHS = [*sorted(SOLVERS), "kernel-per-fold"]


@pytest.fixture(params=SOLVER_PATHS)
def solver(request, monkeypatch):
    if request.param == "kernel-per-fold":
        monkeypatch.setattr(encoding, "_OPERATOR_MEMORY_FRACTION", 0.0)
        return "kernel"
    return request.param


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # The arrays here are tiny: with 2 threads on a shared 2-core machine OpenMP synchronisation dominates
    # (a 4x slower file when other jobs run). Restored afterwards for the other test modules.
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n_threads)

def _planted(rng, n, p, v, n_test=100, null_fraction=0.2):
    """Correlated, offset features; voxels = planted linear signal at varied SNR (some pure noise) + offset."""
    mix = rng.standard_normal((p, p)) * np.linspace(1.0, 0.05, p)[None, :]
    X = rng.standard_normal((n + n_test, p)) @ mix.T + rng.uniform(-3, 3, p)
    W = rng.standard_normal((p, v))
    signal = X @ W
    signal = (signal - signal.mean(0)) / signal.std(0)
    snr = np.where(rng.random(v) < null_fraction, 0.0, rng.uniform(0.05, 2.0, v))
    Y = signal * snr + rng.standard_normal((n + n_test, v)) + rng.uniform(-5, 5, v)
    f32 = np.float32
    return X[:n].astype(f32), Y[:n].astype(f32), X[n:].astype(f32), Y[n:].astype(f32)


# ------------------------------------------------------------------------------------------ folds and delays

def test_contiguous_folds_are_sklearn_kfold():
    # Same folds as KFold(n_splits) without shuffling (what himalaya's RidgeCV(cv=int) uses).
    for n, k in [(103, 5), (40, 4), (12, 6)]:
        ours = make_folds(n, k)
        ref = list(KFold(k).split(np.zeros(n)))
        assert len(ours) == k
        for (tr, va), (tr_ref, va_ref) in zip(ours, ref):
            np.testing.assert_array_equal(tr, tr_ref)
            np.testing.assert_array_equal(va, va_ref)


def test_leave_one_run_out_folds():
    onsets = [0, 30, 45, 90]
    folds = make_folds(100, n_folds=5, run_onsets=onsets)
    # One validation fold per run (n_folds ignored), each the exact run, the rest training.
    assert [(int(v[0]), int(v[-1]) + 1) for _, v in folds] == [(0, 30), (30, 45), (45, 90), (90, 100)]
    for tr, va in folds:
        assert np.intersect1d(tr, va).size == 0 and tr.size + va.size == 100
    # A single run has no run to leave out: contiguous folds instead.
    single = make_folds(100, n_folds=4, run_onsets=[0])
    assert [v.size for _, v in single] == [25, 25, 25, 25]


def _delayed_brute(X, delays, onsets):
    n, p = X.shape
    run_of = np.searchsorted(onsets, np.arange(n), side="right") - 1
    out = np.zeros((n, p * len(delays)), X.dtype)
    for i, d in enumerate(delays):
        for t in range(n):
            s = t - d
            if 0 <= s < n and run_of[s] == run_of[t]:
                out[t, i * p:(i + 1) * p] = X[s]
    return out


def test_make_delayed_matches_loop_and_respects_runs(rng):
    X = rng.standard_normal((23, 3))
    onsets = np.array([0, 10, 14])
    delays = [0, 1, 3, -2]
    expected = _delayed_brute(X, delays, onsets)
    np.testing.assert_array_equal(make_delayed(X, delays, onsets), expected)
    np.testing.assert_array_equal(make_delayed(torch.from_numpy(X), delays, onsets).numpy(), expected)
    # Without runs a shift only zero-pads at the series ends.
    np.testing.assert_array_equal(make_delayed(X, [2], None), _delayed_brute(X, [2], np.array([0])))
    # Run 2 (samples 10..13) is 4 long: a delay of 3 keeps only its last sample, from its first.
    np.testing.assert_array_equal(make_delayed(X, [3], onsets)[10:14], np.vstack([np.zeros((3, 3)), X[10]]))


# ----------------------------------------------------------------------------------------------- himalaya

def _check_alpha_agreement(model, ref, raw_min):
    """Chosen alphas agree with himalaya: on >= ``raw_min`` of all voxels, on >= 99.9% of the voxels whose best
    alpha beats the runner-up by > 1e-6 in mean validation R^2, and every disagreement is a tie at that level.

    Null voxels have CV curves that are flat to ~1e-7 at the top of the grid (every large alpha predicts ~0);
    there float32 rounding in himalaya's scores (summed in float32) decides between equally good alphas.
    """
    # himalaya returns float32 alphas (exp of float32 logs); grid neighbours are a factor 3.16 apart.
    same = np.isclose(model.best_alphas_, ref.best_alphas_, rtol=1e-5)
    assert same.mean() >= raw_min, f"alpha agreement {same.mean():.4f}"
    curves = model.cv_curves_
    top2 = np.sort(curves, axis=0)[-2:]
    resolved = top2[1] - top2[0] > 1e-6
    assert same[resolved].mean() >= 0.999, f"agreement on resolved voxels {same[resolved].mean():.4f}"
    ref_idx = np.abs(np.log(model.alphas_)[:, None] - np.log(ref.best_alphas_)[None, :]).argmin(0)
    gap = curves.max(0) - curves[ref_idx, np.arange(curves.shape[1])]
    assert np.all(gap[~same] < 1e-6), gap[~same].max()


@pytest.fixture(scope="module", params=[(500, 100, 1000), (300, 400, 800)], ids=["primal-regime", "dual-regime"])
def himalaya_case(request):
    from himalaya.backend import set_backend
    from himalaya.ridge import RidgeCV
    from himalaya.scoring import r2_score as h_r2

    set_backend("numpy")
    n, p, v = request.param
    X, Y, X_test, _ = _planted(np.random.default_rng(7), n, p, v)
    folds = make_folds(n, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # himalaya warns that n < p is faster with kernels; that is the point
        # himalaya's RidgeCV scores with l2_neg_loss unless told otherwise; we select by mean validation R^2.
        ref = RidgeCV(alphas=DEFAULT_ALPHAS, fit_intercept=True, cv=folds,
                      solver_params=dict(score_func=h_r2)).fit(X, Y)
    return X, Y, X_test, folds, ref


def test_matches_himalaya_ridgecv(himalaya_case, solver):
    X, Y, X_test, folds, ref = himalaya_case
    # himalaya works on the raw design (centred per fold with fit_intercept=True): so do we here.
    model = VoxelRidgeCV(DEFAULT_ALPHAS, solver=solver, standardize_X=False, fit_intercept=True).fit(X, Y)
    for (tr, va), (tr_ref, va_ref) in zip(model.folds_, folds):
        np.testing.assert_array_equal(va, va_ref)
    _check_alpha_agreement(model, ref, raw_min=0.999)
    # Both compute in float32 (we decompose in float64): mean validation R^2 agrees to float32 rounding
    # of sums over ~100 samples.
    np.testing.assert_allclose(model.cv_scores_, ref.cv_scores_, atol=5e-5)
    pred, pred_ref = model.predict(X_test), ref.predict(X_test)
    # rtol 1e-4 for float32; atol in units of the response spread because fully shrunk voxels predict
    # (almost) their intercept, where float32 leaves ~1e-6 relative noise on an offset of up to 5.
    np.testing.assert_allclose(pred, pred_ref, rtol=1e-4, atol=1e-4 * float(Y.std()))


def test_leave_one_run_out_with_standardisation_matches_himalaya():
    from himalaya.backend import set_backend
    from himalaya.ridge import RidgeCV
    from himalaya.scoring import r2_score as h_r2

    set_backend("numpy")
    X, Y, X_test, _ = _planted(np.random.default_rng(3), 400, 60, 600)
    onsets = [0, 90, 200, 260]
    # Reference: StandardScaler fitted on the training set, then himalaya on explicit leave-one-run-out folds.
    scaler = StandardScaler().fit(X)
    ref = RidgeCV(alphas=DEFAULT_ALPHAS, fit_intercept=True, cv=make_folds(400, run_onsets=onsets),
                  solver_params=dict(score_func=h_r2)).fit(scaler.transform(X).astype(np.float32), Y)
    model = VoxelRidgeCV(run_onsets=onsets).fit(X, Y)
    assert [len(v) for _, v in model.folds_] == [90, 110, 60, 140]
    # Standardised features make alpha >= 1e7 shrink everything for the 20% null voxels: flat curves there.
    _check_alpha_agreement(model, ref, raw_min=0.98)
    # float32 on both sides; atol in units of the response spread (see test_matches_himalaya_ridgecv).
    np.testing.assert_allclose(model.predict(X_test), ref.predict(scaler.transform(X_test).astype(np.float32)),
                               rtol=1e-4, atol=1e-4 * float(Y.std()))


def test_planted_signal_is_recovered(rng):
    n, n_test, p, v = 600, 200, 40, 300
    X = rng.standard_normal((n + n_test, p))
    signal = X @ rng.standard_normal((p, v))
    signal /= signal.std(0)
    snr = np.repeat([0.0, 0.3, 1.0, 3.0], v // 4)
    Y = signal * snr + rng.standard_normal((n + n_test, v))
    model = VoxelRidgeCV().fit(X[:n], Y[:n])
    pred = model.predict(X[n:])
    r_signal = np.array([np.corrcoef(pred[:, j], signal[n:, j])[0, 1] for j in range(v)])
    groups = [slice(k * (v // 4), (k + 1) * (v // 4)) for k in range(4)]
    # With 600 samples for 40 weights the noise-free signal is recovered almost perfectly at SNR >= 1
    # (estimation error ~ sqrt(p / n) / SNR), and the cross-validation shrinks harder the lower the SNR.
    assert np.median(r_signal[groups[2]]) > 0.95 and np.median(r_signal[groups[3]]) > 0.99
    medians = [np.median(model.best_alphas_[g]) for g in groups]
    assert medians[0] > medians[1] > medians[2] >= medians[3]
    assert np.median(model.cv_scores_[groups[0]]) < 0.01 < np.median(model.cv_scores_[groups[1]])


# ------------------------------------------------------------------------------------------ closed forms

@pytest.mark.parametrize("shape", [(80, 12), (30, 50)], ids=["n>p", "n<p"])
def test_fixed_alpha_matches_sklearn_ridge_float64(rng, solver, shape):
    n, p = shape
    X, Y, X_test, _ = (a.astype(np.float64) for a in _planted(rng, n, p, 6, n_test=20))
    alpha = 3.0
    model = VoxelRidgeCV([alpha], solver=solver, dtype=torch.float64).fit(X, Y)
    ref = make_pipeline(StandardScaler(), Ridge(alpha=alpha, fit_intercept=True)).fit(X, Y)
    # float64 closed form vs float64 eigendecomposition; coef_ is stored as float32 (rel. rounding 6e-8).
    np.testing.assert_allclose(model.coef_, ref[-1].coef_.T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.predict(X_test), ref.predict(X_test), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(model.best_alphas_, alpha)


def test_delays_match_sklearn_on_delayed_design(rng):
    n, p = 90, 4
    X = rng.standard_normal((n, p))
    onsets = [0, 40]
    delays = [1, 2, 3]
    # Planted FIR response: each voxel follows the features of 2 samples earlier (within its run).
    true_w = rng.standard_normal((p, 3))
    Y = make_delayed(X, [2], onsets) @ true_w + 0.1 * rng.standard_normal((n, 3))
    model = VoxelRidgeCV([1.0], delays=delays, run_onsets=onsets, dtype=torch.float64).fit(X, Y)
    Xs = (X - X.mean(0)) / X.std(0)
    ref = Ridge(alpha=1.0).fit(make_delayed(Xs, delays, onsets), Y)
    np.testing.assert_allclose(model.coef_, ref.coef_.T, rtol=1e-5, atol=1e-6)
    # The weight mass sits on the delay-2 block (columns p..2p): the FIR model found the lag.
    mass = np.abs(model.coef_).reshape(len(delays), p, 3).sum(1)
    assert np.all(mass.argmax(0) == 1)
    X_test = rng.standard_normal((30, p))
    np.testing.assert_allclose(model.predict(X_test, run_onsets=[0, 10]),
                               ref.predict(make_delayed((X_test - X.mean(0)) / X.std(0), delays, [0, 10])),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("onsets", [None, [0, 25, 60, 100]], ids=["kfold", "leave-one-run-out"])
def test_cv_scores_match_bruteforce_sklearn(rng, solver, onsets):
    n, p, v = 120, 10, 5
    X, Y, _, _ = (a.astype(np.float64) for a in _planted(rng, n, p, v, n_test=1, null_fraction=0.0))
    alphas = [0.1, 10.0, 300.0, 1e4]
    model = VoxelRidgeCV(alphas, n_folds=4, run_onsets=onsets, solver=solver, dtype=torch.float64).fit(X, Y)
    assert model.cv_path_ == ("operators" if solver == "kernel" and encoding._OPERATOR_MEMORY_FRACTION else
                              "per-fold")
    Xs = StandardScaler().fit_transform(X)
    # Brute force: one sklearn Ridge per fold and alpha, R^2 on the validation fold, mean over folds.
    scores = np.zeros((len(alphas), v))
    folds = make_folds(n, 4, onsets)
    for tr, va in folds:
        for i, a in enumerate(alphas):
            pred = Ridge(alpha=a).fit(Xs[tr], Y[tr]).predict(Xs[va])
            scores[i] += r2_score(Y[va], pred, multioutput="raw_values") / len(folds)
    np.testing.assert_allclose(model.cv_scores_, scores.max(0), rtol=1e-8, atol=1e-10)  # float64 both
    np.testing.assert_array_equal(model.best_alphas_, np.asarray(alphas)[scores.argmax(0)])
    assert len(model.folds_) == len(folds) == 4


# ---------------------------------------------------------------------------- batching, dtypes, inputs

def test_voxel_batches_give_the_same_result(rng, solver):
    X, Y, X_test, _ = _planted(rng, 150, 20, 37)
    one = VoxelRidgeCV(solver=solver, dtype=torch.float64).fit(X, Y)
    small = VoxelRidgeCV(solver=solver, dtype=torch.float64, voxel_batch=5).fit(X, Y)
    tiny_budget = VoxelRidgeCV(solver=solver, dtype=torch.float64, memory_budget_gb=1e-4).fit(X, Y)
    assert one.voxel_batch_ == 37 and small.voxel_batch_ == 5 and tiny_budget.voxel_batch_ < 37
    for other in (small, tiny_budget):
        # Each voxel is computed independently; only BLAS blocking differs (float64 rounding).
        np.testing.assert_array_equal(other.best_alphas_, one.best_alphas_)
        np.testing.assert_allclose(other.cv_scores_, one.cv_scores_, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(other.predict(X_test), one.predict(X_test), rtol=1e-6, atol=1e-6)


def test_float32_close_to_float64(rng):
    X, Y, X_test, _ = _planted(rng, 200, 30, 50)
    m32 = VoxelRidgeCV().fit(X, Y)
    m64 = VoxelRidgeCV(dtype=torch.float64).fit(X, Y)
    assert np.mean(m32.best_alphas_ == m64.best_alphas_) >= 0.98
    same = m32.best_alphas_ == m64.best_alphas_
    # float32 batch products on a float64 decomposition: relative error ~1e-6 of the response spread.
    np.testing.assert_allclose(m32.predict(X_test)[:, same], m64.predict(X_test)[:, same], rtol=1e-4,
                               atol=1e-4 * float(Y.std()))


def test_torch_inputs_equal_numpy_and_inputs_untouched(rng):
    X, Y, X_test, _ = _planted(rng, 100, 8, 10)
    X0, Y0 = X.copy(), Y.copy()
    a_pred, a = fit_predict(X, Y, X_test, dtype=torch.float64)
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(Y, Y0)  # the batches are centred in place: never the caller's array
    Yt = torch.from_numpy(Y)
    b = VoxelRidgeCV(dtype=torch.float64).fit(torch.from_numpy(X), Yt)
    np.testing.assert_array_equal(Yt.numpy(), Y0)
    np.testing.assert_array_equal(a.best_alphas_, b.best_alphas_)
    np.testing.assert_allclose(a_pred, b.predict(torch.from_numpy(X_test)), rtol=1e-6, atol=1e-6)
    assert a_pred.dtype == np.float32 and a_pred.shape == (100, 10) and a.coef_.shape == (8, 10)


def test_standardize_y_per_run_equals_prezscored_responses(rng):
    X, Y, _, _ = _planted(rng, 120, 6, 4)
    onsets = [0, 50]
    Yz = Y.astype(np.float64).copy()
    for run in (slice(0, 50), slice(50, 120)):
        Yz[run] = (Yz[run] - Yz[run].mean(0)) / Yz[run].std(0)
    a = VoxelRidgeCV(run_onsets=onsets, standardize_Y=True, dtype=torch.float64).fit(X, Y)
    b = VoxelRidgeCV(run_onsets=onsets, standardize_Y=False, dtype=torch.float64).fit(X, Yz)
    np.testing.assert_array_equal(a.best_alphas_, b.best_alphas_)
    np.testing.assert_allclose(a.coef_, b.coef_, rtol=1e-6, atol=1e-7)  # float32 storage of coef_


def test_constant_voxel_gets_zero_weights_and_zero_score(rng):
    X, Y, X_test, _ = _planted(rng, 100, 8, 3)
    Y[:, 1] = 4.0
    model = VoxelRidgeCV(dtype=torch.float64).fit(X, Y)
    # A constant series has no variance to explain: R^2 := 0 on every fold, weights 0, prediction = constant.
    assert model.cv_scores_[1] == 0.0 and np.all(model.coef_[:, 1] == 0)
    np.testing.assert_allclose(model.predict(X_test)[:, 1], 4.0, rtol=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(rng):
    X, Y, X_test, _ = _planted(rng, 300, 40, 200)
    cpu = VoxelRidgeCV().fit(X, Y)
    gpu = VoxelRidgeCV(device="cuda").fit(X, Y)
    assert np.mean(cpu.best_alphas_ == gpu.best_alphas_) >= 0.99
    np.testing.assert_allclose(gpu.predict(X_test), cpu.predict(X_test), rtol=1e-3, atol=1e-4 * float(Y.std()))


@pytest.mark.parametrize("make_call, match", [
    (lambda X, Y: VoxelRidgeCV().fit(X[:, 0], Y), r"'X'.*1-D"),
    (lambda X, Y: VoxelRidgeCV().fit(X, Y[:-1]), r"X has 40 samples but Y has 39"),
    (lambda X, Y: VoxelRidgeCV().fit(X, np.where(np.arange(3) == 2, np.nan, Y)), r"voxel 2"),
    (lambda X, Y: VoxelRidgeCV(n_folds=25).fit(X, Y), r"too few for 25 folds"),
    (lambda X, Y: VoxelRidgeCV(alphas=[1.0, -1.0]).fit(X, Y), r"positive finite alphas"),
    (lambda X, Y: VoxelRidgeCV(solver="svd").fit(X, Y), r"solver.*'svd'"),
    (lambda X, Y: VoxelRidgeCV(delays=[1.5]).fit(X, Y), r"integer delays"),
    (lambda X, Y: VoxelRidgeCV(run_onsets=[5, 20]).fit(X, Y), r"beginning at 0"),
    (lambda X, Y: VoxelRidgeCV(run_onsets=[0, 39]).fit(X, Y), r"at least 2 samples"),
    (lambda X, Y: VoxelRidgeCV(dtype=torch.float16).fit(X, Y), r"float32 or torch.float64"),
    (lambda X, Y: VoxelRidgeCV().fit(X, Y).predict(X[:, :3]), r"3 features but the model was fitted on 4"),
    (lambda X, Y: VoxelRidgeCV().predict(X), r"not fitted"),
])
def test_bad_inputs_raise_input_error(rng, make_call, match):
    X = rng.standard_normal((40, 4))
    Y = rng.standard_normal((40, 3))
    with pytest.raises(InputError, match=match):
        make_call(X, Y)


# ------------------------------------------------------------------------------------------ refined alpha search

def test_refine_levels():
    from core.encoding import refine_levels
    assert refine_levels(21) == ([0, 4, 8, 12, 16, 20], [2, 1])          # 6 + 2 x 2 = 10 of 21 scored
    assert refine_levels(11) == ([0, 2, 4, 6, 8, 10], [1])
    assert refine_levels(12) == ([0, 2, 4, 6, 8, 10, 11], [1])           # the last alpha is always coarse
    assert refine_levels(8) == (list(range(8)), [])                       # small grids: the whole grid


def test_refine_finds_the_grid_alpha_on_unimodal_curves(rng):
    """The refined search against scoring all 21 alphas (the reference): wherever a voxel's full CV curve is
    unimodal over the grid it must pick the very same alpha (its argument), and its scores at the alphas it
    did evaluate must be the grid's up to float32 rounding of a differently ordered product."""
    X, Y, X_test, _ = _planted(rng, 400, 60, 600)
    grid = VoxelRidgeCV(solver="eigh").fit(X, Y)
    ref = VoxelRidgeCV(solver="eigh", alpha_search="refine").fit(X, Y)
    assert grid.cv_path_ == "per-fold" and ref.cv_path_ == "refine"
    curves = grid.cv_curves_.astype(np.float64)
    peak = np.argmax(curves, 0)
    steps = np.diff(curves, axis=0)
    rows = np.arange(curves.shape[0] - 1)[:, None]
    # Unimodal: non-decreasing up to the peak, non-increasing after it (float32 curves: 1e-7 slack).
    unimodal = np.all(np.where(rows < peak, steps >= -1e-7, steps <= 1e-7), axis=0)
    assert unimodal.mean() > 0.9                                  # ridge CV curves mostly are
    chosen = np.searchsorted(grid.alphas_, ref.best_alphas_)
    at_choice = curves[chosen, np.arange(curves.shape[1])]
    # On a unimodal curve the refined choice scores the grid's maximum; only a plateau (null voxels, R^2 flat at
    # large alphas where float32 rounding orders equal values) can leave it on another point of that plateau.
    assert np.all(at_choice[unimodal] >= curves.max(0)[unimodal] - 1e-6)
    runner_up = np.sort(curves, 0)[-2]
    clear = unimodal & (curves.max(0) - runner_up > 1e-5)
    np.testing.assert_array_equal(ref.best_alphas_[clear], grid.best_alphas_[clear])
    # Curves with two local maxima (a few here) may end on the lower one.
    assert np.mean(ref.best_alphas_ == grid.best_alphas_) >= 0.99
    scored = ~np.isnan(ref.cv_curves_)
    assert scored.sum(0).max() <= 10 and scored.sum(0).min() >= 6   # 6 coarse + at most 4 refined
    # R^2 values ~1e-1..1: float32 products of 400 x 60 summed in another order differ by ~1e-6 relative.
    np.testing.assert_allclose(ref.cv_curves_[scored], grid.cv_curves_[scored], rtol=1e-4, atol=1e-5)
    same = ref.best_alphas_ == grid.best_alphas_           # the same alpha: the same refit
    np.testing.assert_allclose(ref.predict(X_test)[:, same], grid.predict(X_test)[:, same], rtol=1e-6, atol=1e-6)


def test_refine_falls_back_to_the_grid_where_it_cannot_help(rng):
    X, Y, _, _ = _planted(rng, 60, 100, 20)      # n < p: the kernel solver's residual operators score the grid
    m = VoxelRidgeCV(alpha_search="refine").fit(X, Y)
    assert m.cv_path_ == "operators" and not np.isnan(m.cv_curves_).any()
    with pytest.raises(InputError, match="alpha_search"):
        VoxelRidgeCV(alpha_search="golden").fit(X, Y)


def test_refine_on_the_kernel_solver_per_fold_path(rng):
    """n < p without room for the residual operators: the kernel solver's per-fold products, refined."""
    X, Y, X_test, _ = _planted(rng, 120, 200, 300)
    kw = dict(solver="kernel", memory_budget_gb=1e-4)   # operators (21 x 120^2 floats) do not fit
    grid = VoxelRidgeCV(**kw).fit(X, Y)
    ref = VoxelRidgeCV(alpha_search="refine", **kw).fit(X, Y)
    assert grid.cv_path_ == "per-fold" and ref.cv_path_ == "refine"
    scored = ~np.isnan(ref.cv_curves_)
    np.testing.assert_allclose(ref.cv_curves_[scored], grid.cv_curves_[scored], rtol=1e-4, atol=1e-5)
    assert np.mean(ref.best_alphas_ == grid.best_alphas_) >= 0.98
