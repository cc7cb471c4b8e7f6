"""Autocorrelation of test series and what it does to a correlation test: effective degrees of freedom, the
t-test's actual false-positive rate, and the block length of the block permutation test.

Under H0 (a voxel's measured series independent of its prediction, both stationary), the sampling variance of
Pearson r is not 1 / N but (Bartlett 1935; Bayley & Hammersley 1946)

    Var(r) ~= (1 / N) (1 + 2 sum_{k >= 1} (1 - k / N) rho_x(k) rho_y(k)) = 1 / N_eff,

with rho_x, rho_y the autocorrelations of the two series. The t-test with N - 2 degrees of freedom assumes
N_eff = N; when both series are smooth in time (movie stimuli, haemodynamics) N_eff is much smaller and the
test rejects too often. The same sum tells how long the blocks of a block permutation must be: shuffling blocks
of length b keeps the lag-k products only within blocks, so the permutation null's variance is
``1 + 2 sum_{k < b} (1 - k / b) c(k)`` against the true ``1 + 2 sum_k c(k)``, ``c(k) = rho_x(k) rho_y(k)``.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps

from core._validation import InputError

__all__ = ["MAX_LAG_FRACTION", "BLOCK_COVERAGE", "MIN_BLOCKS", "MAX_BLOCKS", "WARN_FPR_RATIO", "autocorrelation",
           "max_lag", "effective_n", "implied_fpr", "choose_block_length", "perm_variance_coverage"]

#: Autocorrelations are estimated up to lag ``n // MAX_LAG_FRACTION`` (the longest block the chooser allows).
MAX_LAG_FRACTION = 8
#: The automatic block keeps at least this share of the null variance of r (see :func:`choose_block_length`).
BLOCK_COVERAGE = 0.95
#: At least this many blocks (fewer leave too few distinct block orders: 8! = 40,320).
MIN_BLOCKS = 8
#: At most this many blocks: the permutation cost and memory per voxel grow with the square of the number of blocks
#: (:func:`core.stats.block_permutation_p`), and 24! orders are vastly more than any number of permutations drawn.
MAX_BLOCKS = 24
#: The t-test warning fires when its implied false-positive rate exceeds the nominal level by this factor.
WARN_FPR_RATIO = 1.5

_CHUNK = 8192


def max_lag(n: int) -> int:
    """Largest lag used for ``n`` samples: ``max(1, n // MAX_LAG_FRACTION)``."""
    return max(1, int(n) // MAX_LAG_FRACTION)


def autocorrelation(a, n_lags: int) -> np.ndarray:
    """Sample autocorrelation of each column, lags 1..n_lags (the biased, positive-definite estimator).

    Parameters
    ----------
    a : array of shape (n_samples, n_series)
    n_lags : int
        Largest lag (< n_samples).

    Returns
    -------
    rho : ndarray of shape (n_lags, n_series), float64
        ``rho[k - 1] = sum_t a~_t a~_{t+k} / sum_t a~_t^2`` with ``a~`` the centred series; NaN for a constant
        or non-finite column.
    """
    a = np.asarray(a)
    if a.ndim != 2:
        raise InputError(f"expected a 2-D array (n_samples, n_series), found shape {a.shape}", source="autocorrelation",
                         field="a")
    n, v = a.shape
    if not 1 <= n_lags < n:
        raise InputError(f"expected 1 <= n_lags < {n}, found {n_lags}", source="autocorrelation", field="n_lags")
    out = np.full((n_lags, v), np.nan)
    for start in range(0, v, _CHUNK):
        # Voxel-major rows: the transforms run along contiguous memory (3x faster than along columns).
        x = np.array(a[:, start:start + _CHUNK].T, dtype=np.float64, order="C")
        out[:, start:start + _CHUNK] = _acf_rows(x, n_lags).T
    return out


def _acf_rows(x: np.ndarray, n_lags: int) -> np.ndarray:
    """Autocorrelations (n_rows, n_lags) of the rows of a float64 array (centred here, in place)."""
    from scipy.fft import next_fast_len
    n = x.shape[1]
    nfft = next_fast_len(2 * n - 1, real=True)  # zero padding to >= 2n - 1: linear, not circular, correlation
    with np.errstate(invalid="ignore", over="ignore"):
        x -= x.mean(1, keepdims=True)
        f = np.fft.rfft(x, nfft, axis=1)
        f *= f.conj()
        acov = np.fft.irfft(f, nfft, axis=1)[:, : n_lags + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = np.isfinite(acov[:, 0]) & (acov[:, 0] > 0)
        return np.where(ok[:, None], acov[:, 1:] / np.where(ok, acov[:, 0], 1.0)[:, None], np.nan)


def effective_n(rho_x, rho_y, n: int) -> np.ndarray:
    """Bartlett / Bayley-Hammersley effective number of samples of a correlation between two series.

    ``N_eff = N / (1 + 2 sum_{k=1}^{K} (1 - k / N) rho_x(k) rho_y(k))``, the sum over the lags given (``K`` rows).

    Parameters
    ----------
    rho_x, rho_y : arrays of shape (K, n_series)
        Autocorrelations of the two series at lags 1..K (:func:`autocorrelation`).
    n : int
        Samples per series.

    Returns
    -------
    n_eff : ndarray of shape (n_series,), float64
        Bounded to [3, 10 N] (an estimated sum can come out below -1/2 by chance for short, rough series); NaN
        where an autocorrelation is NaN.
    """
    rx, ry = np.asarray(rho_x, dtype=np.float64), np.asarray(rho_y, dtype=np.float64)
    if rx.shape != ry.shape or rx.ndim != 2:
        raise InputError(f"expected two arrays of one shape (n_lags, n_series), found {rx.shape} and {ry.shape}",
                         source="effective_n", field="rho_y")
    k = np.arange(1, rx.shape[0] + 1, dtype=np.float64)[:, None]
    factor = 1.0 + 2.0 * np.sum((1.0 - k / n) * rx * ry, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.clip(n / np.maximum(factor, 0.1), 3.0, 10.0 * n)


def implied_fpr(n_eff, n: int, level: float, alternative: str = "two-sided") -> np.ndarray:
    """Actual false-positive rate of the t-test at nominal ``level`` when r's null has ``n_eff`` samples.

    The test rejects where |r| (or r, for ``"greater"``) exceeds the critical r of a t-test with n - 2 degrees of
    freedom; under H0, r is distributed as with n_eff independent samples (t with n_eff - 2 degrees of freedom).

    Returns
    -------
    fpr : ndarray of the shape of ``n_eff``
    """
    n_eff = np.asarray(n_eff, dtype=np.float64)
    sides = 2.0 if alternative == "two-sided" else 1.0
    t_c = sps.t.isf(level / sides, n - 2)
    r_c = t_c / np.sqrt(n - 2 + t_c ** 2)
    df = np.maximum(n_eff - 2.0, 1.0)
    return np.clip(sides * sps.t.sf(r_c * np.sqrt(df / (1.0 - r_c ** 2)), df), 0.0, 1.0)


def perm_variance_coverage(c, block: int) -> float:
    """Share of the null variance of r that a block permutation with blocks of ``block`` samples keeps.

    Parameters
    ----------
    c : array of shape (K,)
        Pooled lag products ``rho_x(k) rho_y(k)`` at lags 1..K.
    block : int
    """
    c = np.asarray(c, dtype=np.float64)
    k = np.arange(1, c.size + 1, dtype=np.float64)
    total = 1.0 + 2.0 * c.sum()
    kept = 1.0 + 2.0 * np.sum(np.clip(1.0 - k / block, 0.0, None) * c)
    return float(kept / total) if total > 0 else 1.0


def choose_block_length(c, n: int, coverage: float = BLOCK_COVERAGE) -> dict:
    """The automatic block length of the block permutation test.

    Rule: ``needed`` = the shortest block b >= 2 whose permutation null keeps at least ``coverage`` of the null
    variance of r (:func:`perm_variance_coverage` with the lag products pooled over voxels), at most
    ``n // MIN_BLOCKS``; the block is then at least ``ceil(n / MAX_BLOCKS)`` (a longer block only costs
    resolution of the null, never validity) and lengthened to ``n // (n // b)`` so the blocks tile the series
    with fewer than ``n // b`` samples left over (those stay in place).

    Parameters
    ----------
    c : array of shape (K,)
        Pooled ``rho_pred(k) rho_resid(k)`` at lags 1..K (mean over voxels).
    n : int
        Test samples.
    coverage : float
        Variance share to keep (0.95 by default: the two-sided 1% test then rejects about 1.2% of null voxels
        where the share is exact).

    Returns
    -------
    choice : dict
        ``block`` (int), ``n_blocks`` (int), ``needed`` (the shortest block meeting ``coverage``, int),
        ``coverage`` (the share the block keeps, float) and ``limited`` (True when even the longest allowed block
        keeps less than ``coverage``: too few samples for this autocorrelation).
    """
    c = np.nan_to_num(np.asarray(c, dtype=np.float64))
    hi = max(2, n // MIN_BLOCKS)
    needed, limited = hi, True
    for b in range(2, hi + 1):
        if perm_variance_coverage(c, b) >= coverage:
            needed, limited = b, False
            break
    block = min(max(needed, math.ceil(n / MAX_BLOCKS)), max(1, n // 2))
    n_blocks = max(2, n // block)
    block = n // n_blocks
    return {"block": int(block), "n_blocks": int(n_blocks), "needed": int(needed),
            "coverage": round(perm_variance_coverage(c, block), 4), "limited": bool(limited)}


def series_autocorrelation(pred: np.ndarray, Y: np.ndarray, valid: np.ndarray) -> dict:
    """Per-voxel autocorrelation diagnostics of predicted and measured test series.

    The measured series enters as its residual from the prediction (``z_y - r z_pred`` of the z-scored series):
    its noise, which is what r's null distribution depends on, also in voxels that are predicted well.

    Parameters
    ----------
    pred, Y : arrays of shape (n_samples, n_voxels)
        Checked beforehand (same shape, at least 3 samples).
    valid : bool array of shape (n_voxels,)
        Voxels with a defined r; the others get NaN.

    Returns
    -------
    diag : dict
        ``n_eff`` (float64 (n_voxels,), NaN where invalid), ``pooled_products`` (float64 (K,): mean over valid
        voxels of rho_pred(k) rho_resid(k), k = 1..K), ``rho1_pred`` and ``rho1_resid`` (medians of the lag-1
        autocorrelations), ``n_lags`` (K = :func:`max_lag`).
    """
    n, v = pred.shape
    k = max_lag(n)
    n_eff = np.full(v, np.nan)
    sums = np.zeros(k)
    count = 0
    rho1_x, rho1_y = np.full(v, np.nan), np.full(v, np.nan)
    for start in range(0, v, _CHUNK):
        sl = slice(start, start + _CHUNK)
        ok = valid[sl]
        if not ok.any():
            continue
        # Voxel-major float64 copies; invalid rows (constant or non-finite) give NaN and are dropped below.
        x = np.array(pred[:, sl].T, dtype=np.float64, order="C")
        y = np.array(Y[:, sl].T, dtype=np.float64, order="C")
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            x -= x.mean(1, keepdims=True)
            y -= y.mean(1, keepdims=True)
            x /= np.sqrt((x * x).mean(1, keepdims=True))
            y /= np.sqrt((y * y).mean(1, keepdims=True))
            y -= (x * y).mean(1, keepdims=True) * x          # the residual: y's noise
        rx, ry = _acf_rows(x, k).T, _acf_rows(y, k).T       # (k, chunk)
        rx[:, ~ok] = np.nan
        ry[:, ~ok] = np.nan
        n_eff[sl] = effective_n(rx, ry, n)
        sums += np.nan_to_num(rx * ry).sum(1)
        count += int(ok.sum())
        rho1_x[sl], rho1_y[sl] = rx[0], ry[0]
    pooled = sums / max(count, 1)
    with np.errstate(all="ignore"):
        return {"n_eff": n_eff, "pooled_products": pooled, "n_lags": int(k),
                "rho1_pred": float(np.nanmedian(rho1_x)) if count else float("nan"),
                "rho1_resid": float(np.nanmedian(rho1_y)) if count else float("nan")}
