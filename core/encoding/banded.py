"""Banded ridge: one model over several feature spaces (bands), each with its own regularisation, chosen per
voxel by cross-validation.

With bands ``X_1 .. X_B`` (each z-scored on the training samples) and band weights ``gamma`` on the simplex
(``sum(gamma) = 1``), the model is ridge on ``[sqrt(gamma_1) X_1, .., sqrt(gamma_B) X_B]`` with one penalty
``alpha``: the per-band penalties are ``alpha / gamma_b`` (Nunez-Elizalde et al. 2019; the parametrisation of
himalaya's ``MultipleKernelRidgeCV`` / ``BandedRidgeCV`` random search, whose kernel is ``sum_b gamma_b K_b``).
The search scores a grid of band weights (:func:`band_weight_grid`) and, for each, every alpha of the grid by
:class:`~core.encoding.ridge.VoxelRidgeCV` (same folds, run structure, delays and tie-breaking); each voxel
keeps the (gamma, alpha) with the best mean validation R^2 (the first gamma of the grid on exact ties), and its
refit on all training samples predicts the test set. The grid includes the vertices (one band alone), so the
joint model nests the single-band models: a voxel a band does not help keeps the other band's model.
"""
from __future__ import annotations

import itertools

import numpy as np

from core._validation import InputError
from core.encoding.ridge import DEFAULT_ALPHAS, VoxelRidgeCV, _as_2d, _check_all_finite

__all__ = ["band_weight_grid", "BandedRidgeCV", "cv_screen", "r2_per_voxel", "partition_variance"]


def band_weight_grid(n_bands: int, n_steps: int) -> np.ndarray:
    """Every band-weight vector on the simplex with weights in steps of ``1 / n_steps``, vertices included.

    Parameters
    ----------
    n_bands : int
        Number of feature spaces (>= 2).
    n_steps : int
        Steps per unit (>= 1): ``n_bands = 2, n_steps = 4`` gives (1, 0), (0.75, 0.25), .., (0, 1).

    Returns
    -------
    ndarray of shape (n_gammas, n_bands), float64
        Rows sum to 1; the first band's weight decreases down the rows.
    """
    if int(n_bands) < 2 or int(n_steps) < 1:
        raise InputError(f"expected n_bands >= 2 and n_steps >= 1, found {n_bands}, {n_steps}",
                         source="band_weight_grid", field="n_steps")
    rows = [c for c in itertools.product(range(int(n_steps), -1, -1), repeat=int(n_bands) - 1)
            if sum(c) <= n_steps]
    grid = np.array([list(c) + [n_steps - sum(c)] for c in rows], dtype=np.float64) / n_steps
    return grid


class BandedRidgeCV:
    """Banded ridge per voxel: band weights and alpha chosen by cross-validation over a grid.

    Parameters
    ----------
    gammas : array of shape (n_gammas, n_bands), optional
        Band weights to score (rows on the simplex; zeros allowed: that band is left out). Default
        :func:`band_weight_grid` with 10 steps (11 weights for two bands).
    alphas : array of shape (n_alphas,)
        Penalties scored for every band weight (default :data:`~core.encoding.ridge.DEFAULT_ALPHAS`).
    **ridge_kwargs
        Passed to :class:`~core.encoding.ridge.VoxelRidgeCV` (``n_folds``, ``run_onsets``, ``delays``,
        ``device``, ``dtype``, ``alpha_search``, ``memory_budget_gb``, ...); ``standardize_X`` is not accepted:
        each band is z-scored here, before its weight is applied.

    Attributes
    ----------
    best_gammas_ : ndarray of shape (n_voxels, n_bands)
        Chosen band weights per voxel.
    best_gamma_index_ : ndarray of shape (n_voxels,), int16
        Their row in ``gammas_``.
    best_alphas_ : ndarray of shape (n_voxels,)
        Chosen alpha per voxel.
    cv_scores_ : ndarray of shape (n_voxels,)
        Mean validation R^2 at the chosen (gamma, alpha).
    cv_by_gamma_ : ndarray of shape (n_gammas, n_voxels), float32
        The best mean validation R^2 over alphas for every band weight (the CV surface along gamma).
    gammas_ : ndarray of shape (n_gammas, n_bands)
    folds_ : list of (train_idx, val_idx)
        The folds every band weight was scored on.
    seconds_ : list of float
        Wall time of each band weight's fit.
    """

    def __init__(self, gammas=None, alphas=DEFAULT_ALPHAS, **ridge_kwargs):
        if "standardize_X" in ridge_kwargs:
            raise InputError("BandedRidgeCV z-scores each band itself (before weighting it); do not pass "
                             "standardize_X", source="BandedRidgeCV", field="standardize_X")
        self.gammas = gammas
        self.alphas = alphas
        self.ridge_kwargs = ridge_kwargs

    def _check_gammas(self, n_bands: int) -> np.ndarray:
        g = band_weight_grid(n_bands, 10) if self.gammas is None else np.asarray(self.gammas, dtype=np.float64)
        if g.ndim != 2 or g.shape[1] != n_bands or g.shape[0] == 0:
            raise InputError(f"expected band weights of shape (n_gammas, {n_bands}), found {g.shape}",
                             source="BandedRidgeCV", field="gammas")
        if not np.all(np.isfinite(g)) or np.any(g < 0) or not np.allclose(g.sum(1), 1.0):
            raise InputError("expected non-negative band weights whose rows sum to 1", source="BandedRidgeCV",
                             field="gammas")
        return g

    @staticmethod
    def _bands(Xs, name: str) -> list[np.ndarray]:
        if not isinstance(Xs, (list, tuple)) or len(Xs) < 2:
            raise InputError(f"expected a list of at least two feature arrays (one per band), found {type(Xs)}",
                             source="BandedRidgeCV", field=name)
        bands = [_as_2d(X, f"{name}[{b}]", "(n_samples, n_features)") for b, X in enumerate(Xs)]
        n = {X.shape[0] for X in bands}
        if len(n) != 1:
            raise InputError(f"every band needs the same samples, found {[X.shape[0] for X in bands]} rows",
                             source="BandedRidgeCV", field=name)
        for b, X in enumerate(bands):
            _check_all_finite(X, f"{name}[{b}]")
        return bands

    def _weighted(self, bands: list[np.ndarray], gamma: np.ndarray) -> np.ndarray:
        """The design of one band weight: each used band z-scored with the training statistics, times
        sqrt(gamma_b)."""
        parts = [((np.asarray(X, dtype=np.float64) - m) / s * np.sqrt(g)).astype(np.float32)
                 for X, m, s, g in zip(bands, self._mean, self._scale, gamma) if g > 0]
        return np.concatenate(parts, axis=1)

    def fit(self, Xs, Y, X_test=None, test_run_onsets=None, known=None, voxels=None) -> "BandedRidgeCV":
        """Score every band weight and alpha, keep each voxel's best, refit and (with ``X_test``) predict.

        Parameters
        ----------
        Xs : list of arrays of shape (n_samples, n_features_b)
            Training features of each band.
        Y : array of shape (n_samples, n_voxels)
        X_test : list of arrays of shape (n_test, n_features_b), optional
            Test features of each band: ``predictions_`` (n_test, n_voxels) are those of each voxel's chosen
            model (kept while the search runs, so no fitted model is stored).
        test_run_onsets : array, optional
            Start of each test run, for delays.
        known : dict of int -> (cv_scores, best_alphas, predictions), optional
            Band weights (rows of the grid) already fitted elsewhere with the same folds, alphas and
            standardisation, e.g. the vertices as the single-band models of the encoding stage: their mean
            validation R^2 and alpha per voxel, and their test predictions (n_test, n_voxels) when ``X_test``
            is given. They are not refitted.
        voxels : array of int, optional
            The voxels (columns of ``Y``) on which the band weights not in ``known`` are scored; every other voxel
            keeps the best of the known band weights (which must then cover the vertices). Default: all voxels.
            For a screen made from training data only, e.g. the voxels some single-band model predicts in
            cross-validation (:func:`cv_screen`).
        """
        bands = self._bands(Xs, "X")
        gammas = self._check_gammas(len(bands))
        Y = _as_2d(Y, "Y", "(n_samples, n_voxels)")
        self._mean = [X.mean(0, dtype=np.float64) for X in bands]
        self._scale = [np.where((sd := X.std(0, dtype=np.float64)) > 0, sd, 1.0) for X in bands]
        tests = self._bands(X_test, "X_test") if X_test is not None else None
        if tests is not None and [X.shape[1] for X in tests] != [X.shape[1] for X in bands]:
            raise InputError(f"test bands have {[X.shape[1] for X in tests]} features, training bands "
                             f"{[X.shape[1] for X in bands]}", source="BandedRidgeCV", field="X_test")
        import time
        n_voxels = Y.shape[1]
        best = np.full(n_voxels, -np.inf)
        self.best_gamma_index_ = np.zeros(n_voxels, dtype=np.int16)
        self.best_alphas_ = np.zeros(n_voxels)
        self.cv_by_gamma_ = np.zeros((gammas.shape[0], n_voxels), dtype=np.float32)
        self.predictions_ = None if tests is None else np.zeros((tests[0].shape[0], n_voxels), dtype=np.float32)
        self.seconds_ = []
        known = dict(known or {})
        self.folds_ = None
        if voxels is None:
            cols = None
        else:
            cols = np.asarray(voxels)
            if cols.ndim != 1 or (cols.size and (not np.issubdtype(cols.dtype, np.integer) or cols.min() < 0
                                                  or cols.max() >= n_voxels or np.any(np.diff(cols) <= 0))):
                raise InputError(f"expected increasing voxel indices in 0..{n_voxels - 1}", source="BandedRidgeCV",
                                 field="voxels")
            if not known:
                raise InputError("a voxel subset needs known band weights for the other voxels",
                                 source="BandedRidgeCV", field="voxels")
            if cols.size == n_voxels:
                cols = None
        Y_fit = Y if cols is None else np.ascontiguousarray(Y[:, cols])
        self.fitted_voxels_ = np.arange(n_voxels) if cols is None else cols
        for i, gamma in enumerate(gammas):
            t0 = time.perf_counter()
            if i in known:
                cv, alphas, pred = known[i]
                cv = np.asarray(cv, dtype=np.float64)
                alphas = np.asarray(alphas, dtype=np.float64)
                if cv.shape != (n_voxels,) or alphas.shape != (n_voxels,):
                    raise InputError(f"known fit of band weight {i}: expected {n_voxels} CV scores and alphas, "
                                     f"found {cv.shape} and {alphas.shape}", source="BandedRidgeCV", field="known")
                model = None
            elif cols is not None and cols.size == 0:
                self.cv_by_gamma_[i] = np.nan
                self.seconds_.append(time.perf_counter() - t0)
                continue
            else:
                model = VoxelRidgeCV(alphas=self.alphas, standardize_X=False, **self.ridge_kwargs)
                model.fit(self._weighted(bands, gamma), Y_fit)
                cv, alphas = np.asarray(model.cv_scores_, dtype=np.float64), model.best_alphas_
                if cols is not None:              # voxels outside the subset never take this band weight
                    cv_all, alphas_all = np.full(n_voxels, -np.inf), np.zeros(n_voxels)
                    cv_all[cols], alphas_all[cols] = cv, alphas
                    cv, alphas = cv_all, alphas_all
                self.folds_ = model.folds_
            self.cv_by_gamma_[i] = np.where(np.isneginf(cv), np.nan, cv)
            better = cv > best                       # strict: the first band weight of the grid keeps ties
            best[better] = cv[better]
            self.best_gamma_index_[better] = i
            self.best_alphas_[better] = alphas[better]
            if tests is not None and better.any():
                if model is None:
                    pred = np.asarray(pred)
                    self.predictions_[:, better] = pred[:, better]
                else:
                    pred = model.predict(self._weighted(tests, gamma), run_onsets=test_run_onsets)
                    if cols is None:
                        self.predictions_[:, better] = pred[:, better]
                    else:
                        self.predictions_[:, better] = pred[:, better[cols]]
            self.seconds_.append(time.perf_counter() - t0)
            del model
        self.cv_scores_ = best
        self.gammas_ = gammas
        self.best_gammas_ = gammas[self.best_gamma_index_]
        return self


def cv_screen(*cv_scores, threshold: float = 0.0) -> np.ndarray:
    """The voxels some single-band model predicts in cross-validation: indices where the largest of the given
    mean validation R^2 (one array per band, training data only) exceeds ``threshold``; NaN counts as not.

    A voxel no band predicts on held-out training runs has no explainable variance to partition; the joint
    model keeps its best single-band model there (a point of its own grid, chosen by the same criterion).
    """
    best = np.full(np.shape(cv_scores[0]), -np.inf)
    for cv in cv_scores:
        best = np.fmax(best, np.asarray(cv, dtype=np.float64))
    return np.flatnonzero(best > threshold)


def r2_per_voxel(pred, Y) -> np.ndarray:
    """Test-set R^2 of each voxel, ``1 - SSE / SST`` with SST about the test mean (himalaya's ``r2_score``);
    NaN for a constant test series.

    Parameters
    ----------
    pred, Y : arrays of shape (n_samples, n_voxels)
    """
    pred = np.asarray(pred, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    if pred.shape != Y.shape:
        raise InputError(f"predictions of shape {pred.shape} for responses of shape {Y.shape}",
                         source="r2_per_voxel", field="pred")
    sst = ((Y - Y.mean(0)) ** 2).sum(0)
    sse = ((Y - pred) ** 2).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sst > 0, 1.0 - sse / np.where(sst > 0, sst, 1.0), np.nan)


def partition_variance(r2_joint, r2_a, r2_b) -> dict[str, np.ndarray]:
    """Unique and shared explained variance of two feature spaces from the test R^2 of the joint model and of
    each alone (Lescroart et al. 2015): ``unique_a = R2_joint - R2_b``, ``unique_b = R2_joint - R2_a``,
    ``shared = R2_a + R2_b - R2_joint``.

    The estimates are returned as they are, negative values included: noise (and a joint model that generalises
    worse than one band alone) makes them negative, and clipping them at 0 would bias every summary of them
    upwards. Views that need a non-negative quantity clip for display and say so.
    """
    j, a, b = (np.asarray(x, dtype=np.float64) for x in (r2_joint, r2_a, r2_b))
    return {"unique_a": j - b, "unique_b": j - a, "shared": a + b - j}
