"""Voxelwise ridge encoding models: features -> BOLD, one regularisation per voxel chosen by cross-validation.

One torch code path runs on CPU and CUDA. The regression is solved in an eigenbasis computed once per fold
(primal ``"eigh"``: the p x p Gram matrix; dual ``"kernel"``: the n x n kernel), so every alpha and every voxel
reuses the same decomposition, and voxels are processed in batches that keep memory bounded.
"""
from __future__ import annotations

import numpy as np
import torch

from core._validation import InputError, check_ndim
from core.device import resolve_device
from core.encoding.folds import _check_delays, _check_onsets, _run_slices, make_delayed, make_folds
from core.encoding.solvers import SOLVERS, _Fold, _KernelSolver, _mm

__all__ = ["DEFAULT_ALPHAS", "VoxelRidgeCV", "fit_predict", "refine_levels"]

#: Default alpha grid: 21 values, half a decade apart, from 1e-2 to 1e8. With z-scored features the
#: eigenvalues of X^T X sum to n_samples * n_features (1.5e7 for 7,200 x 2,048) and spread over many decades
#: for correlated CNN features, so the grid spans "almost no shrinkage" (high-SNR voxels) to "everything
#: shrunk to ~0" (noise voxels).
DEFAULT_ALPHAS = np.logspace(-2, 8, 21)

# Scores are averaged over folds in float64, and ties are broken towards the larger alpha with the same
# tiny log-alpha slope himalaya uses, so that both pick the same alpha on flat score curves.
_TIE_SLOPE = 1e-10

# Share of ``memory_budget_gb`` the kernel solver's per-alpha residual operators (n_alphas x n x n) may take;
# beyond it, cross-validation goes through the per-fold eigenbasis products instead.
_OPERATOR_MEMORY_FRACTION = 0.25


# --------------------------------------------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------------------------------------------

def _as_2d(arr, field: str, layout: str):
    """numpy or torch -> the same kind, checked 2-D and numeric (torch tensors stay where they are)."""
    if isinstance(arr, torch.Tensor):
        a = arr.detach()
        ok = a.is_floating_point() or not (a.is_complex() or a.dtype == torch.bool)
    else:
        a = np.asarray(arr)
        ok = np.issubdtype(a.dtype, np.number) and not np.issubdtype(a.dtype, np.complexfloating)
    if not ok:
        raise InputError(f"expected a real numeric array {layout}, found dtype {a.dtype}",
                         source="VoxelRidgeCV", field=field)
    check_ndim(a, (2,), source="VoxelRidgeCV", field=field, layout=layout)
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError(f"expected a non-empty array {layout}, found shape {tuple(a.shape)}",
                         source="VoxelRidgeCV", field=field)
    return a


def _column_block(Y, cols: slice, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Columns ``cols`` of Y as a fresh contiguous tensor on ``device`` (it is centred in place afterwards).

    The only copies of Y ever made are per batch; a batch never aliases the caller's array.
    """
    if isinstance(Y, torch.Tensor):
        return Y[:, cols].to(device=device, dtype=dtype, memory_format=torch.contiguous_format, copy=True)
    block = np.ascontiguousarray(Y[:, cols])
    return torch.from_numpy(block).to(device=device, dtype=dtype, copy=np.shares_memory(block, Y))


def _check_all_finite(Y, field: str, chunk: int = 4096) -> None:
    """Column-chunked finiteness check (no full-size boolean copy of a multi-GB response matrix)."""
    for start in range(0, Y.shape[1], chunk):
        block = Y[:, start:start + chunk]
        bad = ~torch.isfinite(block) if isinstance(Y, torch.Tensor) else ~np.isfinite(block)
        if bad.any():
            t, v = (int(i) for i in (bad.nonzero()[0] if isinstance(Y, torch.Tensor) else np.argwhere(bad)[0]))
            n_bad = int(bad.sum())
            raise InputError(f"found NaN/inf values (at least {n_bad}; first at sample {t}, voxel {start + v}); "
                             "expected finite numbers. Remove or impute those voxels before fitting.",
                             source="VoxelRidgeCV", field=field)


def _center_responses(Yb: torch.Tensor, runs: list[slice], standardize: bool, fit_intercept: bool) -> torch.Tensor:
    """In place: z-score each run of each voxel (if ``standardize``), then subtract the voxel mean (if
    ``fit_intercept``). Returns the subtracted mean, shape (n_voxels,) float64."""
    if standardize:
        for run in runs:
            seg = Yb[run]
            mu = seg.mean(0)
            sd = seg.std(0, correction=0)
            Yb[run] = (seg - mu) / torch.where(sd > 0, sd, torch.ones_like(sd))
    if not fit_intercept:
        return torch.zeros(Yb.shape[1], dtype=torch.float64, device=Yb.device)
    # Reductions in the working dtype (torch sums cascade, accurate to its rounding); casting a whole batch
    # to float64 for them would cost more than a third of a GEMM.
    y_mean = Yb.mean(0)
    Yb -= y_mean
    return y_mean.double()


def _inverse_sst(Yv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per voxel of a validation block: whether it varies, and 1 / SST (0 where it does not), float64."""
    sst = ((Yv - Yv.mean(0, keepdim=True)) ** 2).sum(0).double()
    has_var = sst > 0
    return has_var, torch.where(has_var, 1.0 / torch.where(has_var, sst, 1.0), 0.0)


def _fold_validation(solver, fold: _Fold, Yc: torch.Tensor, XtY, y_sum: torch.Tensor, fit_intercept: bool):
    """One fold's fixed part of cross-validation: the training-fold coordinates (rank, n_voxels), the validation
    targets centred on the training-fold means (a copy), and per voxel whether they vary and 1 / SST."""
    Yv = Yc[fold.val]  # an index gather, hence a copy: it becomes the validation target below
    # Training-fold mean of the responses (himalaya centres each fold on its training rows).
    y_train_mean = ((y_sum - Yv.sum(0).double()) / fold.train.numel() if fit_intercept
                    else torch.zeros_like(y_sum)).to(Yc.dtype)
    coords = solver.fold_coordinates(fold, Yc, XtY, y_train_mean, Yv)
    has_var, inv_sst = _inverse_sst(Yv)
    Yv -= y_train_mean
    return coords, Yv, has_var, inv_sst


def _fold_r2(pred: torch.Tensor, Yv: torch.Tensor, has_var: torch.Tensor, inv_sst: torch.Tensor) -> torch.Tensor:
    """Validation R^2 per voxel (float64) from the fold's predictions, which are overwritten by the residuals."""
    pred -= Yv
    sse = pred.square_().sum(0).double()
    return torch.where(has_var, 1.0 - sse * inv_sst, 0.0)


def _cv_scores(solver, inv_shrink: list[torch.Tensor], Yc: torch.Tensor, XtY, fit_intercept: bool) -> torch.Tensor:
    """Validation R^2 averaged over folds for every alpha, shape (n_alphas, n_voxels) float64.

    R^2 = 1 - SSE / SST on each validation fold (SST around the validation mean; R^2 := 0 for a constant
    validation series, himalaya's convention), with predictions centred on the training-fold means.
    """
    if getattr(solver, "residual_ops", None) is not None:
        return _cv_scores_operators(solver, Yc)
    n_alphas = inv_shrink[0].shape[0]
    scores = torch.zeros((n_alphas, Yc.shape[1]), dtype=torch.float64, device=Yc.device)
    y_sum = Yc.sum(0).double()
    for fold, inv in zip(solver.folds, inv_shrink):
        coords, Yv, has_var, inv_sst = _fold_validation(solver, fold, Yc, XtY, y_sum, fit_intercept)
        resid = torch.empty_like(Yv)
        for a in range(n_alphas):
            # Scaling the small (n_val, rank) matrix rather than the (rank, n_voxels) coordinates leaves one
            # GEMM and two in-place passes over the residuals per alpha.
            _mm(fold.A_val * inv[a], coords, out=resid)
            scores[a] += _fold_r2(resid, Yv, has_var, inv_sst)
    return scores / len(solver.folds)


def _cv_scores_operators(solver: "_KernelSolver", Yc: torch.Tensor) -> torch.Tensor:
    """:func:`_cv_scores` through the kernel solver's residual operators: ``R_a = M_a Y`` for each alpha."""
    n_alphas = solver.residual_ops.shape[0]
    scores = torch.zeros((n_alphas, Yc.shape[1]), dtype=torch.float64, device=Yc.device)
    has_var, inv_sst = (torch.stack(t) for t in zip(*(_inverse_sst(Yc[f.val]) for f in solver.folds)))
    resid = torch.empty((Yc.shape[0], Yc.shape[1]), dtype=Yc.dtype, device=Yc.device)
    for a in range(n_alphas):
        _mm(solver.residual_ops[a], Yc, out=resid)
        sse = _mm(solver.fold_rows, resid.square_()).double()          # per-fold sums of squares
        scores[a] = torch.where(has_var, 1.0 - sse * inv_sst, 0.0).sum(0)
    return scores / len(solver.folds)


def refine_levels(n_alphas: int) -> tuple[list[int], list[int]]:
    """The coarse grid indices and the refinement steps of ``alpha_search="refine"``: every s-th alpha (s the
    largest power of two with at least 5 coarse points, the last alpha always included), then steps s/2 .. 1
    around each voxel's best so far. 21 alphas: 6 coarse + 2 x 2 steps = 10 evaluations instead of 21.
    Fewer than 9 alphas: the whole grid (no refinement)."""
    if n_alphas < 9:
        return list(range(n_alphas)), []
    step = 1
    while (n_alphas - 1) // (2 * step) >= 4:
        step *= 2
    coarse = list(range(0, n_alphas, step))
    if coarse[-1] != n_alphas - 1:
        coarse.append(n_alphas - 1)
    steps = []
    while step > 1:
        step //= 2
        steps.append(step)
    return coarse, steps


def _cv_scores_refine(solver, inv_shrink: list[torch.Tensor], tie_break: torch.Tensor, Yc: torch.Tensor, XtY,
                      fit_intercept: bool) -> torch.Tensor:
    """:func:`_cv_scores` on a coarse part of the grid, then refined per voxel around its best alpha.

    With a CV curve that is unimodal over the grid (ridge's usually is: too little, then too much shrinkage),
    this finds the same grid alpha as scoring every alpha: the best coarse point lies within one coarse step of
    the true best, and each halving of the step keeps it within the step. Alphas not evaluated for a voxel score
    -inf. Shape (n_alphas, n_voxels) float64.
    """
    n_alphas, n_vox = inv_shrink[0].shape[0], Yc.shape[1]
    coarse, steps = refine_levels(n_alphas)
    scores = torch.full((n_alphas, n_vox), -torch.inf, dtype=torch.float64, device=Yc.device)
    y_sum = Yc.sum(0).double()
    # Per fold, kept for all levels: coordinates, centred validation targets and 1 / SST.
    folds = [(fold, *_fold_validation(solver, fold, Yc, XtY, y_sum, fit_intercept)) for fold in solver.folds]
    resid = torch.empty((max(f[2].shape[0] for f in folds), n_vox), dtype=Yc.dtype, device=Yc.device)
    scaled = torch.empty((max(inv.shape[1] for inv in inv_shrink), n_vox), dtype=Yc.dtype, device=Yc.device)

    for a in coarse:  # one alpha for every voxel: the same products as the full grid
        total = torch.zeros(n_vox, dtype=torch.float64, device=Yc.device)
        for (fold, coords, Yv, has_var, inv_sst), inv in zip(folds, inv_shrink):
            out = resid[:Yv.shape[0]]
            _mm(fold.A_val * inv[a], coords, out=out)
            total += _fold_r2(out, Yv, has_var, inv_sst)
        scores[a] = total / len(folds)
    cols = torch.arange(n_vox, device=Yc.device)
    for step in steps:  # a different alpha per voxel: the shrinkage scales the coordinates instead
        best = torch.argmax(scores + tie_break[:, None], dim=0)
        for side in (-step, step):
            idx = (best + side).clamp_(0, n_alphas - 1)
            total = torch.zeros(n_vox, dtype=torch.float64, device=Yc.device)
            for (fold, coords, Yv, has_var, inv_sst), inv in zip(folds, inv_shrink):
                out = resid[:Yv.shape[0]]
                shrunk = torch.index_select(inv.T, 1, idx, out=scaled[:inv.shape[1]]).mul_(coords)
                _mm(fold.A_val, shrunk, out=out)
                total += _fold_r2(out, Yv, has_var, inv_sst)
            fresh = torch.isneginf(scores[idx, cols])  # an index clamped onto a point already scored keeps it
            scores[idx[fresh], cols[fresh]] = (total / len(folds))[fresh]
    return scores


class VoxelRidgeCV:
    """Ridge regression from features to every voxel, with alpha chosen per voxel by cross-validation.

    For each fold the training Gram (primal) or kernel (dual) matrix is eigendecomposed once; the validation
    predictions for every alpha are ``(X_val U) diag(1 / (w + alpha)) (U^T X_train^T Y_train)``. Each voxel
    gets the alpha with the best validation R^2 averaged over folds (the criterion of himalaya's ``RidgeCV``
    with ``score_func=r2_score``; ties go to the larger alpha), then is refit on all training samples.

    Parameters
    ----------
    alphas : array of shape (n_alphas,)
        Positive regularisation strengths to try. Default :data:`DEFAULT_ALPHAS` (logspace 1e-2 .. 1e8,
        21 values).
    n_folds : int
        Contiguous folds when ``run_onsets`` is None (time series are autocorrelated: never shuffled).
    run_onsets : array of shape (n_runs,) or None
        Start index of each training run. With two or more runs: leave-one-run-out folds, delays that do not
        cross run boundaries and (with ``standardize_Y``) per-run z-scoring.
    delays : sequence of int or None
        FIR delays in samples (see :func:`make_delayed`), applied after feature standardisation.
        None means no delays (equivalent to ``[0]``).
    device : str or torch.device
        Where the work runs ("cpu", "cuda", "cuda:1"; "auto" picks CUDA when present).
    dtype : torch.dtype
        ``torch.float32`` (default) or ``torch.float64`` for reference checks. The per-fold
        eigendecompositions always run in float64.
    voxel_batch : int or None
        Voxels per batch; None derives it from ``memory_budget_gb``.
    solver : {"auto", "eigh", "kernel"}
        "eigh" = primal, "kernel" = dual; "auto" uses the dual when n_samples < n_features * n_delays.
    standardize_X : bool
        z-score each feature with the mean and standard deviation (ddof=0) of the training samples.
    standardize_Y : bool
        z-score each voxel's training series (per run when runs are known). Predictions are then in those
        z-units (per-run statistics cannot be applied to unseen test runs).
    memory_budget_gb : float
        Working memory allowed for the batch-wise computations (on ``device``); the fold decompositions,
        the design matrix and the fitted weights come on top.
    progress : bool
        Show a progress bar over voxel batches.
    fit_intercept : bool
        Centre the design and the responses (per fold on the training samples, exactly as himalaya's
        ``fit_intercept=True``) so that each voxel gets an intercept. If False, the data must be zero-mean.
    alpha_search : {"grid", "refine"}
        ``"grid"`` scores every alpha for every voxel. ``"refine"`` (see :func:`refine_levels`) scores a coarse
        part of the grid, then halves the step around each voxel's best: the same alpha as the grid wherever
        the voxel's CV curve is unimodal, for ~half the cross-validation products with 21 alphas (the paper
        presets use it: ``encoding.alpha_search``). Only for the per-fold path; the kernel solver's residual
        operators always score the grid.

    Attributes
    ----------
    best_alphas_ : ndarray of shape (n_voxels,)
        Chosen alpha per voxel (float64).
    cv_scores_ : ndarray of shape (n_voxels,)
        Validation R^2 (1 - SSE / SST on each validation fold, 0 for a constant validation series) averaged
        over folds, at the chosen alpha (float64).
    cv_curves_ : ndarray of shape (n_alphas, n_voxels)
        float32 mean validation R^2 for every alpha (the whole CV curve, e.g. to see how flat it is); NaN for
        alphas ``alpha_search="refine"`` did not score for that voxel.
    coef_ : ndarray of shape (n_features * n_delays, n_voxels)
        float32 weights on the standardised, delayed, centred design.
    intercept_ : ndarray of shape (n_voxels,)
        Mean training response (in the units after ``standardize_Y``).
    n_features_in_ : int
        Number of raw features seen by ``fit``.
    folds_ : list of (train_idx, val_idx)
        The cross-validation folds used.
    solver_ : str
        The solver actually used ("eigh" or "kernel").
    voxel_batch_ : int
        Voxels per batch actually used.
    cv_path_ : str
        "operators" when the kernel solver cross-validated through its per-alpha residual operators,
        "refine" for ``alpha_search="refine"`` on the per-fold path, "per-fold" otherwise (primal solver, or
        operators larger than their memory share).
    """

    def __init__(self, alphas=DEFAULT_ALPHAS, *, n_folds=5, run_onsets=None, delays=None, device="cpu",
                 dtype=torch.float32, voxel_batch=None, solver="auto", standardize_X=True, standardize_Y=False,
                 memory_budget_gb=2.0, progress=False, fit_intercept=True, alpha_search="grid"):
        self.alphas = alphas
        self.alpha_search = alpha_search
        self.n_folds = n_folds
        self.run_onsets = run_onsets
        self.delays = delays
        self.device = device
        self.dtype = dtype
        self.voxel_batch = voxel_batch
        self.solver = solver
        self.standardize_X = standardize_X
        self.standardize_Y = standardize_Y
        self.memory_budget_gb = memory_budget_gb
        self.progress = progress
        self.fit_intercept = fit_intercept

    # ---------------------------------------------------------------------------------------------- checks
    def _check_params(self) -> tuple[np.ndarray, list[int], torch.device, torch.dtype]:
        try:
            alphas = np.atleast_1d(np.asarray(self.alphas, dtype=np.float64))
        except (TypeError, ValueError):
            alphas = np.array([np.nan])
        if alphas.ndim != 1 or alphas.size == 0 or not np.all(np.isfinite(alphas)) or np.any(alphas <= 0):
            raise InputError(f"expected a 1-D array of positive finite alphas, found {self.alphas!r}",
                             source="VoxelRidgeCV", field="alphas")
        if np.unique(alphas).size != alphas.size:
            raise InputError(f"expected distinct alphas, found duplicates in {alphas.tolist()}",
                             source="VoxelRidgeCV", field="alphas")
        delays = [0] if self.delays is None else _check_delays(self.delays)
        if self.dtype not in (torch.float32, torch.float64):
            raise InputError(f"expected torch.float32 or torch.float64, found {self.dtype!r}",
                             source="VoxelRidgeCV", field="dtype")
        if self.solver not in ("auto", *SOLVERS):
            raise InputError(f"expected one of {['auto', *SOLVERS]}, found {self.solver!r}",
                             source="VoxelRidgeCV", field="solver")
        if self.voxel_batch is not None and (isinstance(self.voxel_batch, bool) or
                                             not isinstance(self.voxel_batch, (int, np.integer))
                                             or self.voxel_batch <= 0):
            raise InputError(f"expected a positive integer or None, found {self.voxel_batch!r}",
                             source="VoxelRidgeCV", field="voxel_batch")
        if self.alpha_search not in ("grid", "refine"):
            raise InputError(f"expected 'grid' or 'refine', found {self.alpha_search!r}", source="VoxelRidgeCV",
                             field="alpha_search")
        if not (isinstance(self.memory_budget_gb, (int, float)) and self.memory_budget_gb > 0):
            raise InputError(f"expected a positive number of GB, found {self.memory_budget_gb!r}",
                             source="VoxelRidgeCV", field="memory_budget_gb")
        return alphas, delays, resolve_device(self.device), self.dtype

    # ------------------------------------------------------------------------------------------- design
    def _design(self, X, run_onsets, device: torch.device) -> torch.Tensor:
        """Raw features -> standardised, delayed, centred float64 design on ``device``."""
        Xt = torch.as_tensor(X, device=device).to(torch.float64)
        Xt = (Xt - self._x_mean) / self._x_scale
        if self.delays_ != [0]:
            Xt = make_delayed(Xt, self.delays_, run_onsets)
        return Xt - self._design_mean

    def _auto_batch(self, n_samples: int, rank: int, n_features: int, n_val_max: int, n_alphas: int,
                    itemsize: int, n_folds_kept: int = 0) -> int:
        # Per-voxel working set of one batch: Y (n), X^T Y and the refit temporaries (3 p), fold coordinates and
        # the refit's (2 rank), validation target, residual buffer and SST temporary (3 n_val), float64 scores;
        # with the refined search every fold's coordinates and validation targets are kept (n_folds x rank + n)
        # plus a per-voxel shrinkage (rank).
        per_voxel = itemsize * (n_samples + 3 * n_features + 2 * rank + 3 * n_val_max) + 16 * n_alphas
        if n_folds_kept:
            per_voxel += itemsize * (n_folds_kept * rank + n_samples + rank)
        return max(1, int(self.memory_budget_gb * 1024 ** 3 // per_voxel))

    # ---------------------------------------------------------------------------------------------- fit
    def fit(self, X, Y) -> "VoxelRidgeCV":
        """Choose alpha per voxel by cross-validation, then refit every voxel on all training samples.

        Parameters
        ----------
        X : array or tensor of shape (n_samples, n_features)
            Training features (one row per stimulus / time point).
        Y : array or tensor of shape (n_samples, n_voxels)
            Training responses. Read in column batches: it is never copied whole.

        Returns
        -------
        self : VoxelRidgeCV
        """
        alphas_np, delays, device, dtype = self._check_params()
        X = _as_2d(X, "X", "(n_samples, n_features)")
        Y = _as_2d(Y, "Y", "(n_samples, n_voxels)")
        n, p = X.shape
        if Y.shape[0] != n:
            raise InputError(f"X has {n} samples but Y has {Y.shape[0]}; rows of X and Y must be the same "
                             "stimuli in the same order", source="VoxelRidgeCV", field="Y")
        _check_all_finite(X, "X")
        _check_all_finite(Y, "Y")
        onsets = _check_onsets(self.run_onsets, n)
        folds = make_folds(n, self.n_folds, onsets)
        if min(len(v) for _, v in folds) < 2:
            raise InputError("every run needs at least 2 samples to serve as a validation fold, found run "
                             f"lengths {[len(v) for _, v in folds]}", source="VoxelRidgeCV", field="run_onsets")
        n_voxels = Y.shape[1]
        self.delays_ = delays
        self.n_features_in_ = p
        self.run_onsets_ = onsets
        self.folds_ = folds
        q = p * len(delays)
        solver = self.solver
        if solver == "auto":
            solver = "kernel" if n < q else "eigh"
        self.solver_ = solver

        # Feature standardisation with training statistics (ddof=0, like StandardScaler); a constant feature
        # keeps scale 1 (it is all zeros after centring and gets zero weight).
        X64 = torch.as_tensor(X, device=device).to(torch.float64)
        if self.standardize_X:
            self._x_mean = X64.mean(0)
            std = X64.std(0, correction=0)
            self._x_scale = torch.where(std > 0, std, torch.ones_like(std))
        else:
            self._x_mean = torch.zeros(p, dtype=torch.float64, device=device)
            self._x_scale = torch.ones(p, dtype=torch.float64, device=device)
        self._design_mean = torch.zeros(q, dtype=torch.float64, device=device)
        D64 = self._design(X64, onsets, device)
        if self.fit_intercept:
            self._design_mean = D64.mean(0)
            D64 = D64 - self._design_mean
        del X64

        alphas = torch.as_tensor(alphas_np, dtype=torch.float64, device=device)
        solver_obj = SOLVERS[solver](D64.to(dtype), folds, dtype, center=self.fit_intercept, alphas=alphas,
                                     operator_max_bytes=self.memory_budget_gb * 1024 ** 3
                                     * _OPERATOR_MEMORY_FRACTION)
        del D64
        rank = solver_obj.rank()
        # 1 / (w + alpha) per fold and alpha, formed in float64 then cast once.
        operators = getattr(solver_obj, "residual_ops", None) is not None
        refine = self.alpha_search == "refine" and not operators and bool(refine_levels(len(alphas_np))[1])
        inv_shrink = [] if operators else [(1.0 / (f.eigvals[None, :] + alphas[:, None])).to(dtype)
                                           for f in solver_obj.folds]
        n_val_max = max(len(v) for _, v in folds)
        batch = int(self.voxel_batch) if self.voxel_batch is not None else self._auto_batch(
            n, rank, q, n_val_max, len(alphas_np), torch.finfo(dtype).bits // 8, len(folds) if refine else 0)
        self.voxel_batch_ = min(batch, n_voxels)

        # Fitted state: primal weights (q, n_voxels) float32, or the kernel solver's dual coordinates
        # (rank, n_voxels) in the working dtype (the weights are formed from them only on request).
        dual = solver == "kernel"
        state = (np.empty((solver_obj.eigvals.numel(), n_voxels), dtype=np.float64 if dtype == torch.float64
                          else np.float32) if dual else np.empty((q, n_voxels), dtype=np.float32))
        best_alphas = np.empty(n_voxels, dtype=np.float64)
        cv_scores = np.empty(n_voxels, dtype=np.float64)
        cv_curves = np.empty((len(alphas_np), n_voxels), dtype=np.float32)
        intercept = np.empty(n_voxels, dtype=np.float64)
        tie_break = torch.log(alphas) * _TIE_SLOPE
        runs = _run_slices(onsets, n)

        starts = range(0, n_voxels, self.voxel_batch_)
        if self.progress:
            from tqdm.auto import tqdm
            starts = tqdm(starts, desc=f"ridge ({solver}, {len(folds)} folds)", unit="batch")
        for start in starts:
            cols = slice(start, min(start + self.voxel_batch_, n_voxels))
            Yb = _column_block(Y, cols, device, dtype)
            y_mean = _center_responses(Yb, runs, self.standardize_Y, self.fit_intercept)
            XtY = solver_obj.batch_state(Yb)
            scores = (_cv_scores_refine(solver_obj, inv_shrink, tie_break, Yb, XtY, self.fit_intercept) if refine
                      else _cv_scores(solver_obj, inv_shrink, Yb, XtY, self.fit_intercept))
            best = torch.argmax(scores + tie_break[:, None], dim=0)
            chosen = alphas[best]
            W = solver_obj.refit(Yb, XtY, chosen)
            state[:, cols] = W.to(torch.float64 if state.dtype == np.float64 else torch.float32).cpu().numpy()
            best_alphas[cols] = chosen.cpu().numpy()
            cv_scores[cols] = scores.gather(0, best[None, :])[0].cpu().numpy()
            cv_curves[:, cols] = scores.masked_fill(scores.isneginf(), torch.nan).to(torch.float32).cpu().numpy()
            intercept[cols] = y_mean.cpu().numpy()
            del Yb, XtY, W, scores

        self._coef, self._dual_coef, self._design_basis = (None, state, solver_obj.design_basis) if dual else \
            (state, None, None)
        self.q_ = q
        self.cv_path_ = "operators" if operators else ("refine" if refine else "per-fold")
        self.best_alphas_ = best_alphas
        self.cv_scores_ = cv_scores
        self.cv_curves_ = cv_curves
        self.intercept_ = intercept
        self.alphas_ = alphas_np
        self._device = device
        return self

    @property
    def coef_(self) -> np.ndarray:
        """float32 weights (n_features * n_delays, n_voxels) on the standardised, delayed, centred design.

        The primal solver stores them; for the kernel solver they are formed here, on each access, from the
        dual coordinates (``X^T U`` times them), since prediction never needs them.
        """
        if getattr(self, "best_alphas_", None) is None:
            raise AttributeError("coef_: this VoxelRidgeCV is not fitted yet")
        if self._coef is not None:
            return self._coef
        n_voxels = self._dual_coef.shape[1]
        coef = np.empty((self.q_, n_voxels), dtype=np.float32)
        for start in range(0, n_voxels, self.voxel_batch_):
            cols = slice(start, min(start + self.voxel_batch_, n_voxels))
            Z = torch.from_numpy(self._dual_coef[:, cols]).to(device=self._device, dtype=self.dtype)
            coef[:, cols] = _mm(self._design_basis, Z).to(torch.float32).cpu().numpy()
        return coef

    # ------------------------------------------------------------------------------------------ predict
    def predict(self, X, run_onsets=None) -> np.ndarray:
        """Predict responses for new stimuli with the standardisation and delays learnt in ``fit``.

        Parameters
        ----------
        X : array or tensor of shape (n_test, n_features)
            Test features, same columns as in ``fit``.
        run_onsets : array of shape (n_test_runs,) or None
            Start index of each test run, so that delays do not cross test run boundaries.

        Returns
        -------
        pred : ndarray of shape (n_test, n_voxels), float32
        """
        if getattr(self, "best_alphas_", None) is None:
            raise InputError("this VoxelRidgeCV is not fitted yet; call fit(X, Y) first", source="VoxelRidgeCV")
        X = _as_2d(X, "X", "(n_test, n_features)")
        if X.shape[1] != self.n_features_in_:
            raise InputError(f"X has {X.shape[1]} features but the model was fitted on {self.n_features_in_}; "
                             "use the same feature extraction for train and test", source="VoxelRidgeCV",
                             field="X")
        _check_all_finite(X, "X")
        onsets = _check_onsets(run_onsets, X.shape[0], field="run_onsets (test)")
        device, dtype = self._device, self.dtype
        D = self._design(X, onsets, device).to(dtype)
        n_test, n_voxels = X.shape[0], self.best_alphas_.shape[0]
        if self._dual_coef is not None:
            D = D @ self._design_basis          # (n_test, rank): the test rows' kernel with the training set
        state = self._dual_coef if self._dual_coef is not None else self._coef
        out = np.empty((n_test, n_voxels), dtype=np.float32)
        step = self.voxel_batch_
        for start in range(0, n_voxels, step):
            cols = slice(start, min(start + step, n_voxels))
            W = torch.from_numpy(state[:, cols]).to(device=device, dtype=dtype)
            b = torch.as_tensor(self.intercept_[cols], device=device, dtype=dtype)
            out[:, cols] = (_mm(D, W) + b).to(torch.float32).cpu().numpy()
        return out


def fit_predict(X_train, Y_train, X_test, **kwargs) -> tuple[np.ndarray, VoxelRidgeCV]:
    """Fit :class:`VoxelRidgeCV` on the training set and predict the test set.

    Parameters
    ----------
    X_train : array of shape (n_train, n_features)
    Y_train : array of shape (n_train, n_voxels)
    X_test : array of shape (n_test, n_features)
    **kwargs
        Constructor arguments of :class:`VoxelRidgeCV`, plus ``test_run_onsets`` (start of each test run,
        for delays).

    Returns
    -------
    pred : ndarray of shape (n_test, n_voxels), float32
    model : VoxelRidgeCV
        The fitted model.
    """
    test_onsets = kwargs.pop("test_run_onsets", None)
    model = VoxelRidgeCV(**kwargs).fit(X_train, Y_train)
    return model.predict(X_test, run_onsets=test_onsets), model
