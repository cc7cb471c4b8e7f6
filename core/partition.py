"""The test of unique explained variance per voxel: is the joint model's test R^2 above one feature set's alone?

``unique_a = R2(joint) - R2(b)`` on the test set (core.encoding.banded.partition_variance). Its sampling
distribution comes from a circular block bootstrap over test samples (core.contrasts.block_bootstrap_counts):
the measured series and both predictions are resampled with the same rows, each resample's R^2 comes from
count-weighted sums (``SSE_b = W @ (y - y_hat)^2``, ``SST_b = W @ y^2 - (W @ y)^2 / n``), and
``p = P(T > unique / SE)`` with T a t distribution with ``n / l - 1`` degrees of freedom, as for the paired
contrasts. One-sided: the alternative is unique variance above 0.

What it assumes: the test samples are a stationary sequence whose dependence the blocks keep, and the models
are fixed (fitted on training data only). What it does not do: the joint model nests the single ones, so where
a feature set adds nothing the joint model often *is* the other model (the grid's vertex, unique = 0 exactly,
p = 1) or fits noise that lowers its test R^2: the test is conservative there, its false-positive rate under
the null below the level (docs/joint.md gives the measured rate).
"""
from __future__ import annotations

import numpy as np

from core._validation import InputError, check_positive_int
from core.contrasts import BLOCK_FACTOR, block_bootstrap_counts, choose_block_length
from core.stats import fdr_bh

__all__ = ["unique_variance_test"]


def _standardised(y: np.ndarray, preds: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """y and its predictions in y's z-units (R^2 is unchanged by one affine map of both), sample-major."""
    y = np.asarray(y, dtype=np.float64)
    m, sd = y.mean(1, keepdims=True), y.std(1, keepdims=True)
    ok = np.isfinite(y).all(1) & (sd[:, 0] > 0) & np.all([np.isfinite(p).all(1) for p in preds], axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    return ((y - m) / sd).T, [((np.asarray(p, np.float64) - m) / sd).T for p in preds], ok


def unique_variance_test(measured, pred_joint, pred_a, pred_b, *, n_boot: int = 1000, block_length: int = 0,
                         level: float = 0.05, seed: int = 0, chunk: int = 4096) -> dict:
    """Block-bootstrap test of the unique variance of feature sets a and b per voxel.

    Parameters
    ----------
    measured, pred_joint, pred_a, pred_b : arrays of shape (n_voxels, n_samples)
        Measured test series and the joint, a-only and b-only models' predictions (voxel-major).
    n_boot : int
        Resamples, shared by every voxel.
    block_length : int
        Samples per block; 0: :data:`~core.contrasts.BLOCK_FACTOR` times the automatic choice
        (:func:`~core.contrasts.choose_block_length`) on the per-sample contributions to unique_a, at most
        n_samples / 4.
    level : float
        BH-FDR level of ``significant_*``.
    seed : int

    Returns
    -------
    dict
        ``unique_a``, ``unique_b`` (float64, the observed differences of test R^2), ``se_a``, ``se_b`` (their
        bootstrap SE), ``p_a``, ``p_b`` (one-sided, 1 where undefined or where the joint model equals the
        other one), ``q_a``, ``q_b`` (BH over the valid voxels), ``significant_a``, ``significant_b``,
        ``valid`` (bool; a constant or non-finite series is not), and ``block_length``, ``block_length_auto``,
        ``df``, ``n_boot``, ``level``.
    """
    from scipy.stats import t as student_t
    Y = np.asarray(measured)
    series = [np.asarray(p) for p in (pred_joint, pred_a, pred_b)]
    if Y.ndim != 2 or any(p.shape != Y.shape for p in series):
        raise InputError(f"expected the measured series and three predictions of one shape (n_voxels, n_samples), "
                         f"found {Y.shape} and {[p.shape for p in series]}", source="unique_variance_test",
                         field="pred_joint")
    n_vox, n = Y.shape
    if n < 8:
        raise InputError(f"a block bootstrap needs at least 8 test samples, found {n}",
                         source="unique_variance_test", field="measured")
    n_boot = check_positive_int(n_boot, field="n_boot", source="unique_variance_test")
    if not 0 < level < 1:
        raise InputError(f"expected a level strictly between 0 and 1, found {level!r}", source="unique_variance_test",
                         field="level")
    auto = not block_length
    if auto:
        sub = np.sort(np.random.default_rng([seed, 6]).choice(n_vox, min(n_vox, 2000), replace=False))
        y, (pj, _, pb), ok = _standardised(Y[sub], [s[sub] for s in series])
        influence = (y - pb) ** 2 - (y - pj) ** 2                         # (n, v): each sample's share of SSE_b - SSE_j
        block_length = min(BLOCK_FACTOR * choose_block_length(influence[:, ok], seed=seed), n // 4)
    block_length = check_positive_int(block_length, field="block_length", source="unique_variance_test")
    if block_length > n // 2:
        raise InputError(f"a block of {block_length} samples leaves fewer than 2 blocks in {n} test samples",
                         source="unique_variance_test", field="block_length")
    W = block_bootstrap_counts(n, block_length, n_boot, seed)
    df = max(n // block_length - 1, 1)
    out = {k: np.zeros(n_vox) for k in ("unique_a", "unique_b", "se_a", "se_b")}
    out.update(p_a=np.ones(n_vox), p_b=np.ones(n_vox), valid=np.zeros(n_vox, bool))
    for start in range(0, n_vox, chunk):
        s = slice(start, min(start + chunk, n_vox))
        y, (pj, pa, pb), ok = _standardised(Y[s], [x[s] for x in series])
        sst = (y * y).sum(0)                                              # n, in z-units
        sst_b = W @ (y * y) - (W @ y) ** 2 / n
        sse = {k: (y - p) ** 2 for k, p in (("j", pj), ("a", pa), ("b", pb))}
        with np.errstate(divide="ignore", invalid="ignore"):
            for key, other in (("a", "b"), ("b", "a")):
                # From the per-sample differences, so a joint model that is the other model gives exactly 0
                # (two sums of the same values in different memory orders can differ in the last bit).
                diff = sse[other] - sse["j"]
                d_obs = diff.sum(0) / sst
                d_boot = (W @ diff) / np.where(sst_b > 0, sst_b, np.nan)
                se = np.sqrt(np.nanvar(d_boot, axis=0))
                t = np.where(se > 0, d_obs / np.where(se > 0, se, 1.0),
                             np.where(d_obs > 0, np.inf, np.where(d_obs < 0, -np.inf, np.nan)))
                p = np.where(np.isnan(t), 1.0, student_t.sf(np.nan_to_num(t, nan=0.0), df))
                out[f"unique_{key}"][s] = np.where(ok, d_obs, 0.0)
                out[f"se_{key}"][s] = np.where(ok, se, 0.0)
                out[f"p_{key}"][s] = np.where(ok, np.clip(p, 0.0, 1.0), 1.0)
        out["valid"][s] = ok
    for key in ("a", "b"):
        q = fdr_bh(np.where(out["valid"], out[f"p_{key}"], np.nan))
        out[f"q_{key}"] = np.where(out["valid"], q, 1.0)
        out[f"significant_{key}"] = out["valid"] & (out[f"q_{key}"] <= level) & (out[f"unique_{key}"] > 0)
    out.update(block_length=int(block_length), block_length_auto=bool(auto), df=int(df), n_boot=int(n_boot),
               level=float(level))
    return out
