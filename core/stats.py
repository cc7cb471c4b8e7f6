"""Voxelwise test statistics of encoding-model predictions: Pearson r, parametric and block-permutation p,
Benjamini-Hochberg q, the noise ceiling from test repeats, and the study's correlation bins.

Voxels whose correlation is undefined (a constant or non-finite measured or predicted series) are excluded:
:func:`voxel_stats` flags them in ``valid``, counts them in ``n_invalid`` and gives them neutral values
(r = 0, p = q = 1, bin = -1). The one output that holds NaN is ``r_norm``, where the noise ceiling is
unreliable (``ceiling_valid`` False). docs/inference.md says what each rule assumes and resamples.
"""
from __future__ import annotations

import sys

import numpy as np
from scipy import special

from core import autocorr
from core._validation import InputError, check_ndim
from core.vocabulary import DEFAULT_BINS, NEGATIVE_CODE, NS_CODE, RULES, BinScheme

# torch is imported only by the block permutation test (the one statistic that runs on a device): the
# dashboard calls significance_mask / correlation_bins and its workers should not load torch (~300 MB RSS).

__all__ = [
    "ALTERNATIVES",
    "CEILING_MIN_EV",
    "block_permutation_p",
    "correlation_bins",
    "critical_r_t",
    "fdr_bh",
    "noise_ceiling",
    "pearson_r",
    "pvalues_t",
    "significance_mask",
    "voxel_stats",
]

#: Alternatives of the tests: "two-sided" (|r|; the study's) or "greater" (r > 0: encoding is about positive
#: prediction).
ALTERNATIVES = ("two-sided", "greater")
#: Default least explainable variance (bias-corrected, :func:`noise_ceiling`) for a reliable noise ceiling.
CEILING_MIN_EV = 0.1

_CHUNK = 8192  # voxels per chunk for the float64 passes over (n_samples, n_voxels) arrays


# --------------------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------------------

def _to_numpy(a, field: str, source: str) -> np.ndarray:
    torch = sys.modules.get("torch")  # a tensor can only exist if torch was imported
    if torch is not None and isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    a = np.asarray(a)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise InputError(f"expected a real numeric array, found dtype {a.dtype}", source=source, field=field)
    return a


def _pair(pred, Y, source: str) -> tuple[np.ndarray, np.ndarray]:
    pred = _to_numpy(pred, "pred", source)
    Y = _to_numpy(Y, "Y", source)
    check_ndim(pred, (2,), source=source, field="pred", layout="(n_samples, n_voxels)")
    check_ndim(Y, (2,), source=source, field="Y", layout="(n_samples, n_voxels)")
    if pred.shape != Y.shape:
        raise InputError(f"pred has shape {pred.shape} but Y has shape {Y.shape}; predictions and measured "
                         "responses must cover the same test samples (rows) and voxels (columns)",
                         source=source, field="pred")
    if pred.shape[0] < 3:
        raise InputError(f"a correlation test needs at least 3 samples, found {pred.shape[0]}",
                         source=source, field="pred")
    return pred, Y


def _check_level(level, field: str = "level") -> float:
    if isinstance(level, bool) or not isinstance(level, (int, float, np.floating)) or not 0 < level < 1:
        raise InputError(f"expected a level strictly between 0 and 1, found {level!r}", source="stats",
                         field=field)
    return float(level)


def _check_edges(edges) -> np.ndarray:
    if isinstance(edges, BinScheme):
        edges = edges.edges
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or e.size == 0 or not np.all(np.isfinite(e)) or np.any(np.diff(e) <= 0):
        raise InputError(f"expected a non-empty, strictly increasing sequence of bin edges, found {edges!r}",
                         source="stats", field="edges")
    if e.size > 127:
        raise InputError(f"at most 127 bins fit the int8 bin codes, found {e.size} edges", source="stats",
                         field="edges")
    return e


# --------------------------------------------------------------------------------------------------------------
# Correlation and its parametric test
# --------------------------------------------------------------------------------------------------------------

def _defined(a: np.ndarray, axis: int = 0) -> np.ndarray:
    """Series (columns; rows with ``axis=1``) with a defined correlation: all finite and not constant
    (max > min)."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(a).all(axis) & (a.max(axis) > a.min(axis))


def pearson_r(pred, Y) -> np.ndarray:
    """Pearson correlation between predicted and measured series, voxel by voxel.

    Parameters
    ----------
    pred : array of shape (n_samples, n_voxels)
        Predicted responses.
    Y : array of shape (n_samples, n_voxels)
        Measured responses.

    Returns
    -------
    r : ndarray of shape (n_voxels,), float64
        NaN where the correlation is undefined (either series constant or holding NaN/inf), like
        ``scipy.stats.pearsonr``; :func:`voxel_stats` turns those into an explicit ``valid`` mask.
    """
    pred, Y = _pair(pred, Y, "pearson_r")
    r = np.full(pred.shape[1], np.nan)
    # Blocks of voxels whose float64 copies (~2 MB each) stay in cache through the six passes below.
    step = max(64, (2 << 20) // (8 * pred.shape[0]))
    for start in range(0, pred.shape[1], step):
        cols = slice(start, start + step)
        # Voxel-major copies, one voxel's series per contiguous row, so that every pass runs along rows (the
        # pipeline's predictions arrive voxel-major: theirs is a plain copy). At the study's 600 x 70,933:
        # 0.46 s against 1.9 s for column-wise passes over 8,192-voxel blocks with boolean-indexed copies.
        a = np.array(pred[:, cols].T, dtype=np.float64, order="C")
        b = np.array(Y[:, cols].T, dtype=np.float64, order="C")
        ok = _defined(a, axis=1) & _defined(b, axis=1)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):  # rows with NaN/inf end as NaN
            a -= a.mean(1, keepdims=True)
            b -= b.mean(1, keepdims=True)
            num = np.einsum("ij,ij->i", a, b)
            den = np.sqrt(np.einsum("ij,ij->i", a, a) * np.einsum("ij,ij->i", b, b))
            r[cols] = np.where(ok, np.clip(num / den, -1.0, 1.0), np.nan)
    return r


def _check_alternative(alternative, source: str) -> str:
    if alternative not in ALTERNATIVES:
        raise InputError(f"expected alternative 'two-sided' (the study's) or 'greater' (r > 0), found "
                         f"{alternative!r}", source=source, field="alternative")
    return alternative


def pvalues_t(r, n_samples: int, alternative: str = "two-sided") -> np.ndarray:
    """p-value of Pearson r under H0: rho = 0 (t distribution with n - 2 degrees of freedom).

    Assumes independent samples (no autocorrelation in at least one of the two series) and normal errors;
    :func:`core.autocorr.effective_n` says how far time series are from that. With t = r sqrt(df / (1 - r^2)),
    the two-sided p is the regularised incomplete beta function I_{1 - r^2}(df / 2, 1 / 2); computing it this
    way stays accurate for |r| close to 1.

    Parameters
    ----------
    r : array of shape (n_voxels,)
        Correlations; NaN stays NaN.
    n_samples : int
        Number of samples each r was computed from (>= 3).
    alternative : {"two-sided", "greater"}
        "two-sided": P(|R| >= |r|) (the study's); "greater": P(R >= r), the test of positive prediction.

    Returns
    -------
    p : ndarray of shape (n_voxels,), float64
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 3:
        raise InputError(f"expected an integer number of samples >= 3, found {n_samples!r}", source="pvalues_t",
                         field="n_samples")
    _check_alternative(alternative, "pvalues_t")
    r = np.asarray(r, dtype=np.float64)
    df = n_samples - 2
    a = np.clip(np.abs(r), 0.0, 1.0)
    two = np.clip(special.betainc(df / 2.0, 0.5, (1.0 - a) * (1.0 + a)), 0.0, 1.0)
    if alternative == "two-sided":
        return two
    # The t distribution is symmetric: the upper tail is half the two-sided p for r >= 0.
    return np.where(r >= 0, two / 2.0, 1.0 - two / 2.0)


def critical_r_t(n_samples: int, level: float = 0.01, alternative: str = "two-sided") -> float:
    """The smallest r > 0 whose t-test p (:func:`pvalues_t`) is at most ``level`` with ``n_samples`` samples.

    ``r_crit = t / sqrt(df + t^2)`` with ``t`` the t distribution's upper ``level / 2`` (two-sided) or
    ``level`` (greater) quantile and ``df = n_samples - 2``. Below it no voxel is significant under the
    uncorrected t-test however good its prediction, so correlation bins under it cannot fill.
    """
    from scipy.stats import t as t_dist
    _check_alternative(alternative, "critical_r_t")
    level = _check_level(level)
    df = int(n_samples) - 2
    if df < 1:
        raise InputError(f"expected at least 3 samples, found {n_samples}", source="critical_r_t", field="n_samples")
    t = float(t_dist.isf(level / 2 if alternative == "two-sided" else level, df))
    return t / float(np.sqrt(df + t * t))


def fdr_bh(p) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values).

    Parameters
    ----------
    p : array of shape (n_tests,)
        p-values in [0, 1]; NaN entries are not tests (they do not count in the number of tests) and get
        NaN back.

    Returns
    -------
    q : ndarray of shape (n_tests,), float64
        ``q_(i) = min_{j >= i} p_(j) m / j`` over the sorted finite p-values, capped at 1.
    """
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 1:
        raise InputError(f"expected a 1-D array of p-values, found shape {p.shape}", source="fdr_bh", field="p")
    finite = np.isfinite(p)
    if np.any((p[finite] < 0) | (p[finite] > 1)):
        raise InputError("expected p-values in [0, 1], found values outside", source="fdr_bh", field="p")
    q = np.full_like(p, np.nan)
    pf = p[finite]
    m = pf.size
    if m:
        order = np.argsort(pf, kind="stable")
        ranked = pf[order] * m / np.arange(1, m + 1)
        ranked = np.minimum.accumulate(ranked[::-1])[::-1]
        out = np.empty(m)
        out[order] = np.minimum(ranked, 1.0)
        q[finite] = out
    return q


# --------------------------------------------------------------------------------------------------------------
# Block permutation test
# --------------------------------------------------------------------------------------------------------------

def _zscore64(a: "torch.Tensor") -> "torch.Tensor":
    import torch
    a = a - a.mean(0)
    sd = torch.sqrt((a * a).mean(0))
    return a / torch.where(sd > 0, sd, torch.ones_like(sd))


def block_permutation_p(pred, Y, *, n_perm: int = 1000, block: int = 10, seed: int = 0, device="cpu",
                        alternative: str = "two-sided", memory_budget_gb: float = 0.5) -> np.ndarray:
    """p-value of Pearson r by shuffling blocks of the predicted series against the measured series.

    fMRI noise and movie features are autocorrelated, so neighbouring samples are not exchangeable and the
    parametric t-test is anti-conservative. The series are cut into ``n_samples // block`` blocks of ``block``
    consecutive samples; a permutation reorders the predicted blocks against the measured ones, which keeps the
    autocorrelation of both series within blocks and breaks their alignment. Blocks are shuffled rather than
    circularly shifted: n samples have only n - 1 circular shifts (p >= 1 / n, too coarse for p <= 0.01 under
    BH at 200 test samples), while b blocks have b! orders. The test assumes blocks that are exchangeable under
    H0 (stationary series whose lag products have died out within about a block; the lag products across block
    boundaries are what it misses, see :func:`core.autocorr.perm_variance_coverage`). The same permutations
    serve every voxel. The last ``n_samples % block`` samples stay in place.

    The block cross-products ``M[i, j] = sum_s pred[i*block + s] Y[j*block + s]`` (z-scored series) are formed
    once per voxel; each permutation pi then costs only ``sum_i M[i, pi(i)]``, i.e. pred block i is paired with
    measured block pi(i) (the same null as moving pred block pi^-1(i) to position i).

    Parameters
    ----------
    pred : array of shape (n_samples, n_voxels)
        Predicted responses.
    Y : array of shape (n_samples, n_voxels)
        Measured responses.
    n_perm : int
        Number of random block permutations.
    block : int
        Block length in samples (at least 2 full blocks are needed).
    seed : int
        Seed of the permutations (``torch.randperm`` with a CPU ``torch.Generator``, identical on every device).
    device : str or torch.device
        Where the work runs.
    alternative : {"two-sided", "greater"}
        Statistic |r| or r.
    memory_budget_gb : float
        Working memory for the per-voxel block cross-products.

    Returns
    -------
    p : ndarray of shape (n_voxels,), float64
        ``(1 + #{stat_perm >= stat_obs}) / (1 + n_perm)`` (stat = |r| or r); NaN where r is undefined.
    """
    pred, Y = _pair(pred, Y, "block_permutation_p")
    _check_alternative(alternative, "block_permutation_p")
    for name, value in (("n_perm", n_perm), ("block", block)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"expected a positive integer, found {value!r}", source="block_permutation_p",
                             field=name)
    n, n_voxels = pred.shape
    n_blocks = n // block
    if n_blocks < 2:
        raise InputError(f"{n} samples hold fewer than 2 blocks of {block}; use a shorter block",
                         source="block_permutation_p", field="block")
    import torch

    from core.device import resolve_device
    dev = resolve_device(device)
    gen = torch.Generator().manual_seed(int(seed))
    perms = torch.stack([torch.randperm(n_blocks, generator=gen) for _ in range(n_perm)])
    # Permutation p as a row of 0/1 over the n_blocks^2 cross-products: all permutations' sums are one matrix
    # product with M (BLAS, ~10x faster on the CPU than gathering the entries, and exact in float64).
    onehot = torch.zeros((n_perm, n_blocks * n_blocks), dtype=torch.float64)
    onehot.scatter_(1, torch.arange(n_blocks) * n_blocks + perms, 1.0)
    onehot = onehot.to(dev)
    stat = (lambda x: x.abs()) if alternative == "two-sided" else (lambda x: x)

    full = n_blocks * block
    budget = memory_budget_gb * 1024 ** 3
    # Per voxel: its n_blocks^2 cross-products and its n_perm permuted sums (float64).
    v_chunk = max(1, int(budget // (8 * (n_blocks * n_blocks + n_perm + 2 * n))))
    p_out = np.full(n_voxels, np.nan)
    defined = _defined(pred) & _defined(Y)
    diagonal = torch.arange(n_blocks, device=dev) * (n_blocks + 1)
    for start in range(0, n_voxels, v_chunk):
        cols = np.arange(start, min(start + v_chunk, n_voxels))
        cols = cols[defined[cols]]
        if cols.size == 0:
            continue
        zp = _zscore64(torch.as_tensor(pred[:, cols], device=dev, dtype=torch.float64))
        zy = _zscore64(torch.as_tensor(Y[:, cols], device=dev, dtype=torch.float64))
        tail = (zp[full:] * zy[full:]).sum(0)
        bp = zp[:full].reshape(n_blocks, block, -1).permute(2, 0, 1)   # (v, n_blocks, block)
        by = zy[:full].reshape(n_blocks, block, -1).permute(2, 1, 0)   # (v, block, n_blocks)
        M = torch.bmm(bp, by).reshape(cols.size, -1).T.contiguous()    # (n_blocks^2, v)
        del bp, by, zp, zy
        r_obs = (M[diagonal].sum(0) + tail) / n
        # Count ties as exceedances (conservative); the tolerance absorbs summation-order rounding.
        threshold = stat(r_obs) - 1e-12
        r_perm = (onehot @ M + tail) / n                                # (n_perm, v)
        exceed = (stat(r_perm) >= threshold).sum(0)
        del M, r_perm
        p_out[cols] = ((exceed + 1).double() / (n_perm + 1)).cpu().numpy()
    return p_out


# --------------------------------------------------------------------------------------------------------------
# Noise ceiling
# --------------------------------------------------------------------------------------------------------------

def noise_ceiling(Y_repeats) -> dict:
    """Explainable variance and the correlation ceiling from repeated presentations of the test set.

    With N repeats y_1..y_N of a voxel's test series, their mean y_bar, total power TP = mean_r Var(y_r) and
    signal power SP = (N Var(y_bar) - TP) / (N - 1) (Sahani & Linden 2003; unbiased for the variance of the
    repeatable signal):

    - ``ev = SP / TP``: the bias-corrected explainable-variance fraction (identical to the Gallant lab's
      ``explainable_variance(..., bias_correction=True)``: ev_raw - (1 - ev_raw) / (N - 1) with
      ev_raw = Var(y_bar) / TP). It can be slightly negative for voxels without repeatable signal.
    - ``cc_max = sqrt(SP / Var(y_bar))``: the largest correlation that a perfect (noise-free) prediction can
      reach against the repeat-averaged response (Hsu, Borst & Theunissen 2004; Schoppe et al. 2016, where
      CC_norm = CC_abs / CC_max). NaN where SP <= 0.

    Variances use ddof=1; both ratios do not depend on that choice.

    Parameters
    ----------
    Y_repeats : array of shape (n_repeats, n_samples, n_voxels)
        Test responses, one slice per repeat (n_repeats >= 2).

    Returns
    -------
    ceiling : dict
        ``ev`` and ``cc_max``, ndarrays of shape (n_voxels,) float64 (NaN for constant or non-finite voxels),
        and ``n_repeats`` (int).
    """
    R = _to_numpy(Y_repeats, "Y_repeats", "noise_ceiling")
    check_ndim(R, (3,), source="noise_ceiling", field="Y_repeats", layout="(n_repeats, n_samples, n_voxels)")
    n_rep, n, n_voxels = R.shape
    if n_rep < 2 or n < 2:
        raise InputError(f"expected at least 2 repeats of at least 2 samples, found shape {R.shape}",
                         source="noise_ceiling", field="Y_repeats")
    ev = np.full(n_voxels, np.nan)
    cc = np.full(n_voxels, np.nan)
    for start in range(0, n_voxels, _CHUNK):
        cols = slice(start, start + _CHUNK)
        block = R[:, :, cols].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            total = block.var(axis=1, ddof=1).mean(0)
            var_mean = block.mean(0).var(axis=0, ddof=1)
            signal = (n_rep * var_mean - total) / (n_rep - 1)
            ok = np.isfinite(total) & (total > 0)
            ev[cols] = np.where(ok, signal / np.where(ok, total, 1.0), np.nan)
            has_signal = ok & (signal > 0) & (var_mean > 0)
            cc[cols] = np.where(has_signal, np.sqrt(np.clip(signal / np.where(has_signal, var_mean, 1.0), 0, 1)),
                                np.nan)
    return {"ev": ev, "cc_max": cc, "n_repeats": int(n_rep)}


# --------------------------------------------------------------------------------------------------------------
# Significance and bins
# --------------------------------------------------------------------------------------------------------------

def significance_mask(p, q=None, rule: str = "p", level: float = 0.01) -> np.ndarray:
    """Which voxels count as significant.

    Parameters
    ----------
    p : array of shape (n_voxels,)
        p-values (parametric or permutation).
    q : array of shape (n_voxels,) or None
        BH q-values; required for ``rule="q"``.
    rule : {"p", "q"}
        "p": p <= level, uncorrected (the study's rule, level 0.01); "q": BH-FDR q <= level.
    level : float
        Threshold in (0, 1).

    Returns
    -------
    significant : ndarray of shape (n_voxels,), bool
        NaN p or q counts as not significant.
    """
    level = _check_level(level)
    if rule == "p":
        values = p
    elif rule == "q":
        if q is None:
            raise InputError("rule 'q' needs the q-values; pass q=fdr_bh(p)", source="significance_mask",
                             field="q")
        values = q
    else:
        raise InputError(f"expected rule 'p' (uncorrected) or 'q' (FDR), found {rule!r}",
                         source="significance_mask", field="rule")
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.isfinite(values) & (values <= level)


def correlation_bins(r, significant, edges=DEFAULT_BINS.edges) -> np.ndarray:
    """Bin significant voxels by correlation, as in the study's Fig. 3.

    Parameters
    ----------
    r : array of shape (n_voxels,)
        Correlations.
    significant : array of shape (n_voxels,), bool
        Which voxels are significant.
    edges : sequence of float or core.vocabulary.BinScheme
        Strictly increasing lower bin edges; bin k holds ``edges[k] <= r < edges[k + 1]``, the last bin
        ``r >= edges[-1]``. Default: the study's (:data:`core.vocabulary.DEFAULT_BINS`), 0-0.1, 0.1-0.2,
        0.2-0.3, >= 0.3. Any number of edges is binned here; a run's edges are its config's scheme.

    Returns
    -------
    bins : ndarray of shape (n_voxels,), int8
        0..len(edges)-1 for significant voxels; :data:`~core.vocabulary.NEGATIVE_CODE` (-2) for significant
        voxels with r < edges[0] (the bins start at the first edge, so these get their own code instead of
        being dropped silently); :data:`~core.vocabulary.NS_CODE` (-1) for voxels that are not significant
        or have NaN r.
    """
    e = _check_edges(edges)
    r = np.asarray(r, dtype=np.float64)
    significant = np.asarray(significant)
    if significant.shape != r.shape or significant.dtype != bool:
        raise InputError(f"expected a boolean array of shape {r.shape}, found dtype {significant.dtype} shape "
                         f"{significant.shape}", source="correlation_bins", field="significant")
    bins = np.full(r.shape, NS_CODE, dtype=np.int8)
    use = significant & np.isfinite(r)
    k = np.searchsorted(e, r[use], side="right") - 1
    bins[use] = np.where(k < 0, NEGATIVE_CODE, k).astype(np.int8)
    return bins


def voxel_stats(pred, Y_test, *, rule: str = "p", level: float = 0.01, edges=DEFAULT_BINS.edges,
                Y_test_repeats=None, ceiling: dict | None = None, n_perm: int = 0, block: int = 0, seed: int = 0,
                alternative: str = "two-sided", ceiling_min_ev: float = CEILING_MIN_EV, device="cpu") -> dict:
    """Every per-voxel statistic the results store and the dashboard need.

    Parameters
    ----------
    pred : array of shape (n_test, n_voxels)
        Predicted test responses.
    Y_test : array of shape (n_test, n_voxels)
        Measured test responses (the repeat average when there are repeats).
    rule : {"p", "q", "perm"}
        Significance: "p" = t-test p <= level uncorrected (the study's rule, with ``alternative="two-sided"``
        and level 0.01), "q" = BH q of the t-test p <= level, "perm" = BH q of the block-permutation p <= level
        (needs ``n_perm > 0``).
    level : float
        Significance level in (0, 1).
    edges : sequence of float or core.vocabulary.BinScheme
        Correlation bin edges (see :func:`correlation_bins`).
    Y_test_repeats : array of shape (n_repeats, n_test, n_voxels) or None
        Single-repeat test responses, for the noise ceiling.
    ceiling : dict or None
        ``noise_ceiling(Y_test_repeats)`` computed beforehand: it depends on the measured responses only, so
        one computation serves every feature set (at paper scale it is half of this function's time).
        Used instead of ``Y_test_repeats``.
    n_perm : int
        Number of block permutations (0 = no permutation test).
    block : int
        Block length of the permutation test; 0 = automatic (:func:`core.autocorr.choose_block_length`).
    seed : int
        Seed of the permutations.
    alternative : {"two-sided", "greater"}
        Of every p (t-test and permutation).
    ceiling_min_ev : float
        Least explainable variance for a reliable noise ceiling (see ``ceiling_valid``).
    device : str or torch.device
        Where the permutation test runs.

    Returns
    -------
    stats : dict
        Arrays of shape (n_voxels,): ``r`` (float64), ``p`` (t-test, float64), ``q`` (BH over the valid voxels),
        ``significant`` (bool: passes the rule with r > 0, the positive predictions that count as encoded),
        ``significant_negative`` (bool: passes the rule with r < 0, its own category), ``bin`` (int8; -2 for
        significant r below the first edge), ``valid`` (bool), ``n_eff`` (Bayley-Hammersley effective samples,
        0 where invalid); with ``n_perm > 0`` also ``p_perm`` and ``q_perm``; with repeats ``ev``, ``cc_max``
        (0 where undefined), ``r_norm`` = r / cc_max, unclipped, NaN where ``ceiling_valid`` is False, and
        ``ceiling_valid`` (bool: r valid, cc_max defined and ev >= ceiling_min_ev). Scalars and dicts:
        ``n_voxels``, ``n_invalid``, ``n_significant``, ``n_significant_negative``, ``rule``, ``alternative``,
        ``level``, ``edges``, ``autocorrelation`` (median N_eff, the t-test's implied false-positive rate, the
        pooled lag products), ``block_length`` / ``block`` (the permutation block and how it was chosen, with
        permutations) and ``warnings`` (list of str). Invalid voxels (undefined r) get r = 0, p = q = 1,
        significant False, bin -1.
    """
    if rule not in RULES:
        raise InputError(f"expected rule 'p' (uncorrected), 'q' (FDR) or 'perm' (block permutation), "
                         f"found {rule!r}", source="voxel_stats", field="rule")
    level = _check_level(level)
    e = _check_edges(edges)
    _check_alternative(alternative, "voxel_stats")
    if rule == "perm" and not n_perm:
        raise InputError("rule 'perm' needs permutations; set n_perm > 0 (e.g. 1000)", source="voxel_stats",
                         field="n_perm")
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 0:
        raise InputError(f"expected a block length >= 0 (0 = automatic), found {block!r}", source="voxel_stats",
                         field="block")
    pred, Y_test = _pair(pred, Y_test, "voxel_stats")
    n, n_voxels = Y_test.shape

    r = pearson_r(pred, Y_test)
    valid = np.isfinite(r)
    p = pvalues_t(r, n, alternative)
    q = fdr_bh(p)
    out = {"r": np.where(valid, r, 0.0), "p": np.where(valid, p, 1.0), "q": np.where(valid, q, 1.0)}
    diag = autocorr.series_autocorrelation(pred, Y_test, valid)
    out["n_eff"] = np.where(valid, diag["n_eff"], 0.0)
    warnings: list[str] = []
    ac = _autocorrelation_summary(diag, n, level, alternative, valid)
    if rule in ("p", "q") and (ac["implied_fpr"] or 0.0) > autocorr.WARN_FPR_RATIO * level:
        warnings.append(
            f"the t-test is anti-conservative here: the residual and predicted series are autocorrelated "
            f"(median lag-1 autocorrelation {ac['rho1_resid']:.2f} and {ac['rho1_pred']:.2f}), median effective "
            f"samples N_eff = {ac['median_n_eff']:.0f} of N = {n}, so p <= {level:g} holds for about "
            f"{ac['implied_fpr']:.3f} of null voxels, not {level:g} ({ac['implied_fpr'] / level:.1f}x); "
            "use stats.rule = \"perm\" (block permutation)")
    extra: dict = {}
    if n_perm:
        choice = autocorr.choose_block_length(diag["pooled_products"], n)
        if block:
            choice = {"block": int(block), "n_blocks": int(n // block), "rule": "stats.block_length",
                      "coverage": round(autocorr.perm_variance_coverage(diag["pooled_products"], block), 4),
                      "limited": False}
        else:
            choice["rule"] = (f"auto: shortest block keeping >= {autocorr.BLOCK_COVERAGE:g} of r's null variance, "
                              f"{autocorr.MIN_BLOCKS}-{autocorr.MAX_BLOCKS} blocks")
            if choice["limited"]:
                warnings.append(
                    f"{n} test samples are too few for this autocorrelation: the longest allowed block "
                    f"({choice['block']} samples, {choice['n_blocks']} blocks) keeps only {choice['coverage']:.2f} "
                    "of r's null variance, so the permutation p is somewhat anti-conservative")
        p_perm = block_permutation_p(pred, Y_test, n_perm=n_perm, block=choice["block"], seed=seed, device=device,
                                     alternative=alternative)
        out["p_perm"] = np.where(valid, p_perm, 1.0)
        out["q_perm"] = np.where(valid, fdr_bh(np.where(valid, p_perm, np.nan)), 1.0)
        extra = {"block_length": choice["block"], "block": choice, "n_permutations": int(n_perm)}
        if rule == "perm":
            # BH rejects k voxels only where p_(k) <= level k / m; at p's floor 1 / (n_perm + 1) that needs
            # k >= m / (level (n_perm + 1)) voxels.
            need = int(np.ceil(valid.sum() / (level * (n_perm + 1))))
            if need > 0.1 * valid.sum():
                warnings.append(f"{n_perm} permutations give p >= {1 / (n_perm + 1):.2g}: BH at q <= {level:g} "
                                f"can only admit voxels when at least {need} are that extreme; raise "
                                "stats.n_permutations")
    if rule == "perm":
        passes = significance_mask(out["q_perm"], rule="p", level=level)
    else:
        passes = significance_mask(out["p"], out["q"], rule=rule, level=level)
    passes &= valid
    out["significant"] = passes & (out["r"] > 0)
    out["significant_negative"] = passes & (out["r"] < 0)
    out["bin"] = correlation_bins(out["r"], passes, e)
    out["valid"] = valid

    if ceiling is None and Y_test_repeats is not None:
        R = _to_numpy(Y_test_repeats, "Y_test_repeats", "voxel_stats")
        if R.ndim != 3 or R.shape[1:] != Y_test.shape:
            raise InputError(f"expected shape (n_repeats, {n}, {n_voxels}) matching Y_test, found {R.shape}",
                             source="voxel_stats", field="Y_test_repeats")
        ceiling = noise_ceiling(R)
    if ceiling is not None:
        if np.shape(ceiling.get("cc_max")) != (n_voxels,) or np.shape(ceiling.get("ev")) != (n_voxels,):
            raise InputError(f"expected noise_ceiling() output for {n_voxels} voxels, found 'cc_max' of shape "
                             f"{np.shape(ceiling.get('cc_max'))}", source="voxel_stats", field="ceiling")
        defined = np.isfinite(ceiling["cc_max"]) & valid
        with np.errstate(invalid="ignore"):
            ok = defined & (np.nan_to_num(ceiling["ev"], nan=-np.inf) >= ceiling_min_ev)
        out["ev"] = np.nan_to_num(ceiling["ev"], nan=0.0)
        out["cc_max"] = np.where(defined, ceiling["cc_max"], 0.0)
        out["r_norm"] = np.where(ok, out["r"] / np.where(ok, ceiling["cc_max"], 1.0), np.nan)
        out["ceiling_valid"] = ok
        extra["ceiling"] = {"min_ev": float(ceiling_min_ev), "n_valid": int(ok.sum()),
                            "n_repeats": int(ceiling.get("n_repeats", 0))}

    out.update(n_voxels=int(n_voxels), n_invalid=int((~valid).sum()), n_significant=int(out["significant"].sum()),
               n_significant_negative=int(out["significant_negative"].sum()), rule=rule, alternative=alternative,
               level=level, edges=[float(x) for x in e], autocorrelation=ac, warnings=warnings, **extra)
    return out


def _autocorrelation_summary(diag: dict, n: int, level: float, alternative: str, valid: np.ndarray) -> dict:
    """The JSON-able part of :func:`core.autocorr.series_autocorrelation` and the t-test's implied rate."""
    def num(x, digits):  # None, not NaN, in JSON (summary.json is read by browsers' JSON.parse)
        return round(float(x), digits) if np.isfinite(x) else None
    n_eff = diag["n_eff"][valid & np.isfinite(diag["n_eff"])]
    if n_eff.size == 0:
        return {"n": int(n), "median_n_eff": None, "implied_fpr": None, "nominal": level, "rho1_pred": None,
                "rho1_resid": None, "n_lags": diag["n_lags"]}
    fpr = float(np.mean(autocorr.implied_fpr(n_eff, n, level, alternative)))
    return {"n": int(n), "median_n_eff": num(np.median(n_eff), 2), "nominal": level, "implied_fpr": num(fpr, 5),
            "rho1_pred": num(diag["rho1_pred"], 4), "rho1_resid": num(diag["rho1_resid"], 4),
            "n_lags": diag["n_lags"], "pooled_products": [num(x, 5) for x in diag["pooled_products"][:20]]}
