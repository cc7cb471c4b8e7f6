"""Banded ridge (core/encoding/banded.py) against himalaya's banded ridge on the same grid and folds, and
against brute force."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core._validation import InputError
from core.encoding.banded import BandedRidgeCV, band_weight_grid
from core.encoding.folds import make_folds


def _data(seed=0, n=160, n_test=60, p=24, v=40):
    """Two correlated bands (as attention on and off features are) and voxels that weigh them differently."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((n + n_test, p))
    on = base + 0.6 * rng.standard_normal((n + n_test, p))
    off = base + 0.6 * rng.standard_normal((n + n_test, p))
    share = np.linspace(0, 1, v)                          # voxel j: share[j] of its signal from the on band
    w_on, w_off = rng.standard_normal((p, v)) * share, rng.standard_normal((p, v)) * (1 - share)
    signal = on @ w_on + off @ w_off
    Y = signal / signal.std(0) + 1.5 * rng.standard_normal((n + n_test, v))
    return on[:n], off[:n], Y[:n], on[n:], off[n:], Y[n:]


def _zscore(train, *others):
    m, s = train.mean(0), train.std(0)
    return [(x - m) / s for x in (train, *others)]


def test_grid_is_the_simplex_in_steps():
    g = band_weight_grid(2, 4)
    np.testing.assert_allclose(g, [[1, 0], [0.75, 0.25], [0.5, 0.5], [0.25, 0.75], [0, 1]])
    g3 = band_weight_grid(3, 3)
    assert g3.shape == (10, 3) and np.allclose(g3.sum(1), 1) and (g3 >= 0).all()
    assert len({tuple(r) for r in g3}) == 10
    with pytest.raises(InputError, match="n_bands >= 2"):
        band_weight_grid(1, 4)


def test_banded_ridge_matches_himalaya_on_the_same_grid_and_folds():
    from himalaya.backend import set_backend
    from himalaya.ridge import BandedRidgeCV as HimalayaBanded
    from himalaya.scoring import r2_score
    set_backend("numpy")
    on, off, Y, on_t, off_t, _ = _data()
    alphas = np.logspace(-1, 4, 11)
    # Interior weights only: himalaya scales each band by sqrt(gamma) in place and back, so a zero weight
    # would divide by zero there.
    gammas = band_weight_grid(2, 8)[1:-1]
    folds = make_folds(Y.shape[0], 4, None)
    ours = BandedRidgeCV(gammas=gammas, alphas=alphas, n_folds=4, dtype=torch.float64)
    ours.fit([on, off], Y, X_test=[on_t, off_t])
    zon, zon_t = _zscore(on, on_t)
    zoff, zoff_t = _zscore(off, off_t)
    ref = HimalayaBanded(groups="input", fit_intercept=True, cv=folds,
                         solver_params=dict(n_iter=gammas, alphas=alphas, score_func=r2_score, progress_bar=False,
                                            jitter_alphas=False, conservative=False, local_alpha=True))
    ref.fit([zon, zoff], Y)
    # The CV surface along gamma (best over alphas): the same numbers (float64 both; 1e-8 absolute on R^2).
    np.testing.assert_allclose(ours.cv_by_gamma_, np.asarray(ref.cv_scores_), atol=1e-8)
    # Selected band weights and alpha: identical wherever the surface has one clear optimum (the best gamma
    # beats the runner-up by more than 1e-6; himalaya updates only above 1e-8 better, we on strictly better).
    surface = np.sort(ours.cv_by_gamma_, axis=0)
    clear = surface[-1] - surface[-2] > 1e-6
    assert clear.sum() >= 30
    gamma_ref = np.exp(np.asarray(ref.deltas_)) / np.exp(np.asarray(ref.deltas_)).sum(0)
    np.testing.assert_allclose(ours.best_gammas_[clear], gamma_ref.T[clear], atol=1e-9)
    np.testing.assert_allclose(ours.best_alphas_[clear], np.asarray(ref.best_alphas_)[clear], rtol=1e-9)
    # Test predictions of the chosen models: float32 output, so 1e-5 relative to the prediction scale.
    pred_ref = np.asarray(ref.predict([zon_t, zoff_t]))
    scale = np.abs(pred_ref[:, clear]).max()
    np.testing.assert_allclose(ours.predictions_[:, clear], pred_ref[:, clear], atol=1e-5 * scale)
    # The band weight follows the planted share: voxels driven by the on band weigh it more.
    from scipy.stats import spearmanr
    assert spearmanr(ours.best_gammas_[:, 0], np.linspace(0, 1, Y.shape[1])).statistic > 0.6


def test_vertices_reproduce_the_single_band_models():
    from core.encoding import VoxelRidgeCV
    on, off, Y, on_t, off_t, _ = _data(seed=1)
    alphas = np.logspace(-1, 4, 11)
    banded = BandedRidgeCV(gammas=band_weight_grid(2, 1), alphas=alphas, n_folds=4, dtype=torch.float64)
    banded.fit([on, off], Y, X_test=[on_t, off_t])
    for i, X, Xt in ((0, on, on_t), (1, off, off_t)):
        single = VoxelRidgeCV(alphas=alphas, n_folds=4, dtype=torch.float64).fit(X, Y)
        np.testing.assert_allclose(banded.cv_by_gamma_[i], single.cv_scores_, atol=1e-6)
        chosen = banded.best_gamma_index_ == i
        np.testing.assert_allclose(banded.predictions_[:, chosen], single.predict(Xt)[:, chosen], rtol=1e-5,
                                   atol=1e-6)
    # Each voxel keeps the better of the two (the joint model nests both).
    assert np.array_equal(banded.best_gamma_index_, np.argmax(banded.cv_by_gamma_, axis=0))


def test_bad_band_input_is_one_clear_error():
    on, off, Y, *_ = _data(n=40, p=5, v=3)
    with pytest.raises(InputError, match="rows sum to 1"):
        BandedRidgeCV(gammas=[[0.5, 0.6]]).fit([on, off], Y)
    with pytest.raises(InputError, match="same samples"):
        BandedRidgeCV().fit([on, off[:-1]], Y)
    with pytest.raises(InputError, match="z-scores each band"):
        BandedRidgeCV(standardize_X=True)


def test_a_voxel_screen_fits_the_screened_voxels_as_the_full_search_does_and_keeps_the_rest_single():
    """``voxels=``: on the screened voxels the search is the full one's (each voxel's ridge is independent of
    the others'); every other voxel keeps the better known vertex, its CV surface NaN inside."""
    from core.encoding import VoxelRidgeCV
    from core.encoding.banded import cv_screen
    on, off, Y, on_t, off_t, _ = _data(seed=2)
    alphas = np.logspace(-1, 4, 11)
    gammas = band_weight_grid(2, 4)
    known = {}
    for i, X, Xt in ((0, on, on_t), (len(gammas) - 1, off, off_t)):
        m = VoxelRidgeCV(alphas=alphas, n_folds=4, dtype=torch.float64).fit(X, Y)
        known[i] = (m.cv_scores_, m.best_alphas_, m.predict(Xt))
    full = BandedRidgeCV(gammas=gammas, alphas=alphas, n_folds=4, dtype=torch.float64)
    full.fit([on, off], Y, X_test=[on_t, off_t], known=known)
    # A screen that keeps about half: the voxels with the higher CV score of their better single model.
    best_single = np.maximum(known[0][0], known[len(gammas) - 1][0])
    voxels = cv_screen(known[0][0], known[len(gammas) - 1][0], threshold=float(np.median(best_single)))
    assert 10 < voxels.size < Y.shape[1] - 10
    part = BandedRidgeCV(gammas=gammas, alphas=alphas, n_folds=4, dtype=torch.float64)
    part.fit([on, off], Y, X_test=[on_t, off_t], known=known, voxels=voxels)
    np.testing.assert_array_equal(part.fitted_voxels_, voxels)
    np.testing.assert_array_equal(part.best_gamma_index_[voxels], full.best_gamma_index_[voxels])
    np.testing.assert_allclose(part.cv_scores_[voxels], full.cv_scores_[voxels], rtol=0, atol=1e-12)
    # float32 predictions of the same float64 fits: identical up to the cast.
    np.testing.assert_allclose(part.predictions_[:, voxels], full.predictions_[:, voxels], rtol=1e-6, atol=1e-7)
    rest = np.setdiff1d(np.arange(Y.shape[1]), voxels)
    vertex = np.where(known[0][0][rest] >= known[len(gammas) - 1][0][rest], 0, len(gammas) - 1)
    np.testing.assert_array_equal(part.best_gamma_index_[rest], vertex)
    assert np.isnan(part.cv_by_gamma_[1:-1][:, rest]).all()
    for i in (0, len(gammas) - 1):
        chosen = rest[vertex == i]
        np.testing.assert_array_equal(part.predictions_[:, chosen], known[i][2][:, chosen].astype(np.float32))
    # The screen reads NaN as "not predicted" and needs the vertices for the voxels it leaves out.
    np.testing.assert_array_equal(cv_screen(np.array([0.1, np.nan, -1.0]), np.array([np.nan, np.nan, 0.2])), [0, 2])
    with pytest.raises(InputError, match="known band weights"):
        BandedRidgeCV(gammas=gammas, alphas=alphas, n_folds=4).fit([on, off], Y, voxels=voxels)
    with pytest.raises(InputError, match="increasing voxel indices"):
        BandedRidgeCV(gammas=gammas, alphas=alphas, n_folds=4).fit([on, off], Y, known=known, voxels=voxels[::-1])
