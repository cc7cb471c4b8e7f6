"""Paired per-voxel tests of one condition's prediction accuracy against another's (r_a - r_b).

The test is a circular block bootstrap over test samples. One set of resampled sample indices serves every
voxel and both conditions of a contrast: in each resample the measured series and both predictions take
the same rows, both correlations are recomputed and their difference is one draw of the bootstrap
distribution of Δr. The resample enters only through how often it takes each sample (a count vector
``w``), so every sum a correlation needs is a matrix product ``W @ X`` with ``W`` of shape
(n_boot, n_samples): one product per sum for all voxels of a chunk at once.

What it assumes: the test samples form a stationary series whose dependence dies out within a block (the
block length is chosen from the data's autocorrelation unless given); the test conditions on the fitted
predictions (the ridge fits are not redone). What it resamples: test samples, in blocks.

- p-value for Δr = 0: ``p = 2 t_sf(|Δr| / SE, n/l - 1)``, two-sided, with SE the SD of the bootstrap draws of
  Δr and n/l the number of blocks: a block-resampled SE comes from about n/l independent blocks and is itself
  noisy, so the normal reference (a percentile or re-centred tail count) is anti-conservative with long blocks.
- Interval: ``Δr ± t_{(1+ci)/2, n/l-1} SE`` (it excludes 0 exactly when p < 1 - ci).
- q: Benjamini-Hochberg over the voxels with a defined Δr, per contrast.
- Outcome: +1 where q <= level and Δr > 0 (the first condition predicts better), -1 where q <= level and
  Δr < 0, 0 otherwise (no difference detectable at that FDR level).
"""
from __future__ import annotations

import numpy as np

from core._validation import InputError, check_positive_int
from core.stats import fdr_bh
from core.vocabulary import CONTRASTS

__all__ = ["BLOCK_FACTOR", "choose_block_length", "block_bootstrap_counts", "paired_contrasts",
           "tracked_voxels", "summarise_outcomes"]

#: The automatic block length is this multiple of the variance-optimal one (Politis & White's optimum minimises
#: the error of the variance estimate, and undercovers: its bias is what shortens the intervals).
BLOCK_FACTOR = 4
#: Voxels whose bootstrap draws are kept for the intervals of medians over voxels (per group, seeded).
TRACKED_PER_GROUP = 400
#: Voxels whose bootstrap draws are kept for the run-wide median's interval.
TRACKED_OVERALL = 4000


# --------------------------------------------------------------------------------------------------------------
# Block length and resampling
# --------------------------------------------------------------------------------------------------------------

def _median_acf(series: np.ndarray, max_lag: int) -> np.ndarray:
    """Median over columns of each column's autocorrelation at lags 0..max_lag, shape (max_lag + 1,)."""
    x = series - series.mean(0)
    var = (x * x).sum(0)
    ok = var > 0
    x = x[:, ok] / np.sqrt(var[ok])
    if x.shape[1] == 0:
        return np.r_[1.0, np.zeros(max_lag)]
    return np.array([1.0] + [float(np.median((x[k:] * x[:-k]).sum(0))) for k in range(1, max_lag + 1)])


def choose_block_length(series, *, max_voxels: int = 2000, seed: int = 0) -> int:
    """Block length for the circular block bootstrap from the series' autocorrelation.

    Politis & White (2004, with Patton, Politis & White 2009's correction) for the circular bootstrap of a
    mean, applied to the median autocorrelation over (a seeded subsample of) the columns: the flat-top lag
    window's cut-off ``M = 2 m``, with ``m`` the first lag after which 5 lags in a row stay within
    ``2 / sqrt(n)`` of 0; ``G = sum_k λ(k/M) |k| R(k)``, ``g = sum_k λ(k/M) R(k)``,
    ``b = (2 G^2 / ((4/3) g^2))^(1/3) n^(1/3)``, rounded up and clipped to [1, n / 4].

    Parameters
    ----------
    series : array of shape (n_samples, n_columns)
        The series whose dependence the blocks must keep: for Δr, the paired contributions
        ``z_y (z_a - z_b)`` of each voxel.
    max_voxels : int
        Columns used (a seeded subsample beyond that).
    seed : int

    Returns
    -------
    int
    """
    s = np.asarray(series, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] < 8:
        raise InputError(f"expected an (n_samples >= 8, n_columns) array, found shape {s.shape}",
                         source="choose_block_length", field="series")
    n = s.shape[0]
    if s.shape[1] > max_voxels:
        cols = np.random.default_rng([seed, 5]).choice(s.shape[1], max_voxels, replace=False)
        s = s[:, np.sort(cols)]
    max_lag = min(n // 2, 50)
    acf = _median_acf(s, max_lag)
    # Politis & White's band is 2 sqrt(log10(n) / n) for one series. The median over many columns is more
    # precise when they are independent, but voxels share their signal, so no more than the plain 2 / sqrt(n).
    bound = 2.0 / np.sqrt(n)
    run = 5
    m = max_lag
    for k in range(1, max_lag - run + 2):
        if np.all(np.abs(acf[k:k + run]) < bound):
            m = k - 1
            break
    M = max(2 * m, 1)
    lags = np.arange(0, min(M, max_lag) + 1)
    t = lags / M
    lam = np.where(t <= 0.5, 1.0, 2.0 * (1.0 - t))
    g = acf[0] + 2.0 * np.sum(lam[1:] * acf[lags[1:]])
    G = 2.0 * np.sum(lam[1:] * lags[1:] * acf[lags[1:]])
    if g <= 0 or G == 0:
        return 1
    b = (2.0 * G * G / ((4.0 / 3.0) * g * g)) ** (1.0 / 3.0) * n ** (1.0 / 3.0)
    return int(np.clip(np.ceil(b), 1, max(1, n // 4)))


def block_bootstrap_counts(n_samples: int, block_length: int, n_boot: int, seed: int) -> np.ndarray:
    """How often each sample is drawn in each circular block bootstrap resample.

    A resample is ``ceil(n / l)`` blocks of ``l`` consecutive samples (wrapping from the last sample to the
    first) with uniform random starts, cut to ``n`` samples.

    Returns
    -------
    counts : ndarray of shape (n_boot, n_samples), float64
        Row b sums to n_samples.
    """
    n = check_positive_int(n_samples, field="n_samples", source="block_bootstrap_counts")
    lb = check_positive_int(block_length, field="block_length", source="block_bootstrap_counts")
    B = check_positive_int(n_boot, field="n_boot", source="block_bootstrap_counts")
    n_blocks = -(-n // lb)
    rng = np.random.default_rng([seed, 3])
    starts = rng.integers(0, n, size=(B, n_blocks))
    idx = ((starts[:, :, None] + np.arange(lb)) % n).reshape(B, -1)[:, :n]
    counts = np.zeros((B, n))
    np.add.at(counts, (np.repeat(np.arange(B), n), idx.ravel()), 1.0)
    return counts


# --------------------------------------------------------------------------------------------------------------
# The paired test
# --------------------------------------------------------------------------------------------------------------

def _zscore_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Voxel-major float64 z-scores of an (n_voxels, n_samples) block, and which rows are defined."""
    a = np.asarray(a, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(a).all(1) & (a.max(1) > a.min(1))
    a = np.where(ok[:, None], a, 0.0)
    a = a - a.mean(1, keepdims=True)
    sd = np.sqrt((a * a).mean(1, keepdims=True))
    return a / np.where(sd > 0, sd, 1.0), ok


def _boot_r(W, zy, zp, Sy, inv_sd_y, n):
    """Correlations in every resample from the count-weighted sums; W (B, n), zy/zp (n, v) -> (B, v).

    ``inv_sd_y`` is 1 / the resampled SD of y (NaN where y came out constant); a constant resampled
    prediction also gives NaN."""
    import torch
    Sp = W @ zp
    cov = (W @ (zy * zp)).div_(n).sub_(Sy * Sp / (n * n))
    var_p = (W @ (zp * zp)).div_(n).sub_(Sp.div_(n).square_())
    return cov.mul_(inv_sd_y).mul_(torch.where(var_p > 0, var_p, torch.nan).rsqrt_())


def _check_inputs(measured, preds, source):
    Y = np.asarray(measured)
    if Y.ndim != 2:
        raise InputError(f"expected a 2-D array (n_voxels, n_samples), found shape {Y.shape}", source=source,
                         field="measured")
    for m, p in preds.items():
        if np.shape(p) != Y.shape:
            raise InputError(f"expected shape {Y.shape} like the measured series (voxel-major, same test "
                             f"samples), found {np.shape(p)}", source=source, field=f"pred_{m}")
    if Y.shape[1] < 8:
        raise InputError(f"a block bootstrap needs at least 8 test samples, found {Y.shape[1]}", source=source,
                         field="measured")
    return Y


def paired_contrasts(measured, preds: dict, *, contrasts=None, n_boot: int = 1000, block_length: int = 0,
                     ci: float = 0.95, level: float = 0.05, seed: int = 0, chunk: int = 2048,
                     track: np.ndarray | None = None, dtype: str = "float32", device="cpu") -> dict:
    """Block-bootstrap test of r_a - r_b per voxel for each contrast (a, b).

    Parameters
    ----------
    measured : array of shape (n_voxels, n_samples)
        Measured test series (voxel-major, as the encoding stage stores them).
    preds : dict of condition -> array of shape (n_voxels, n_samples)
        Predicted test series of each condition.
    contrasts : sequence of str, optional
        Names from :data:`core.vocabulary.CONTRASTS`; default: every one whose two conditions are in preds.
    n_boot : int
        Bootstrap resamples (shared by all voxels and contrasts).
    block_length : int
        Block length in samples; 0: :data:`BLOCK_FACTOR` times :func:`choose_block_length` of the first
        contrast's per-sample contributions to Δr (its influence function), at most n_samples / 4.
    ci : float
        Coverage of the percentile interval.
    level : float
        FDR level of the outcome.
    seed : int
        Seeds the resamples.
    chunk : int
        Voxels per pass: memory ~ ``(n_boot * chunk * 8 bytes) * 12``.
    track : array of int, optional
        Voxel rows whose bootstrap draws are returned (``boot_<contrast>``, shape (n_boot, len(track))), for
        intervals of summaries over voxels.
    dtype : {"float64", "float32"}
        Precision of the resample sums (float32 keeps r to ~1e-6: the series are z-scored first).
    device : str or torch.device
        Where the resample sums run (the resamples themselves are drawn on the CPU, identical everywhere).

    Returns
    -------
    dict
        Per contrast c: ``delta_c``, ``delta_lo_c``, ``delta_hi_c`` (float32, 0 where undefined), ``p_c``,
        ``q_c`` (float64, 1 where undefined), ``outcome_c`` (int8), ``valid_c`` (bool); ``boot_c`` with
        ``track`` (and ``tracked``, the rows); scalars ``block_length``, ``block_length_auto`` (bool), ``n_boot``, ``ci``, ``level``,
        ``contrasts`` (list).
    """
    import torch
    Y = _check_inputs(measured, preds, "paired_contrasts")
    n_vox, n = Y.shape
    if contrasts is None:
        contrasts = [c for c, (a, b) in CONTRASTS.items() if a in preds and b in preds]
    for c in contrasts:
        if c not in CONTRASTS or not set(CONTRASTS[c]) <= set(preds):
            raise InputError(f"expected a contrast of {sorted(CONTRASTS)} whose conditions have predictions "
                             f"({sorted(preds)}), found {c!r}", source="paired_contrasts", field="contrasts")
    n_boot = check_positive_int(n_boot, field="n_boot", source="paired_contrasts")
    for name, v in (("ci", ci), ("level", level)):
        if not 0 < v < 1:
            raise InputError(f"expected a value strictly between 0 and 1, found {v!r}", source="paired_contrasts",
                             field=name)
    if isinstance(block_length, bool) or not isinstance(block_length, (int, np.integer)) or block_length < 0:
        raise InputError(f"expected 0 (auto) or a positive integer, found {block_length!r}",
                         source="paired_contrasts", field="block_length")
    auto = block_length == 0
    if auto:
        a, b = CONTRASTS[contrasts[0]]
        sub = np.sort(np.random.default_rng([seed, 5]).choice(n_vox, min(n_vox, 2000), replace=False))
        zy, _ = _zscore_rows(Y[sub])
        za, _ = _zscore_rows(np.asarray(preds[a])[sub])
        zb, _ = _zscore_rows(np.asarray(preds[b])[sub])
        ra, rb = (zy * za).mean(1, keepdims=True), (zy * zb).mean(1, keepdims=True)
        # Each sample's contribution to Δr (its influence function): the blocks must keep its dependence.
        influence = zy * (za - zb) - ra / 2 * (zy * zy + za * za) + rb / 2 * (zy * zy + zb * zb)
        block_length = min(BLOCK_FACTOR * choose_block_length(influence.T, seed=seed), n // 4)
    if block_length > n // 2:
        raise InputError(f"a block of {block_length} samples leaves fewer than 2 blocks in {n} test samples",
                         source="paired_contrasts", field="block_length")
    tdt = torch.float64 if dtype == "float64" else torch.float32
    from core.device import resolve_device
    dev = resolve_device(device)
    # The resamples are drawn on the CPU (numpy), so they are the same on every device.
    W = torch.as_tensor(block_bootstrap_counts(n, int(block_length), n_boot, seed), dtype=tdt).to(dev)
    conds = sorted({m for c in contrasts for m in CONTRASTS[c]})
    out: dict = {}
    for c in contrasts:
        out[f"delta_{c}"] = np.zeros(n_vox, np.float32)
        out[f"delta_lo_{c}"] = np.zeros(n_vox, np.float32)
        out[f"delta_hi_{c}"] = np.zeros(n_vox, np.float32)
        out[f"p_{c}"] = np.ones(n_vox)
        out[f"valid_{c}"] = np.zeros(n_vox, bool)
    track = None if track is None else np.asarray(track, dtype=np.int64)
    if track is not None:
        out["tracked"] = track
        for c in contrasts:
            out[f"boot_{c}"] = np.full((n_boot, track.size), np.nan, np.float32)
    from scipy.stats import t as student_t
    # The bootstrap SE of Δr comes from about n / l independent blocks, so it is itself noisy: referring
    # Δr / SE to a t distribution with n / l - 1 degrees of freedom (not the normal) keeps the test's level
    # with long blocks (the fixed-b view of a block-resampled variance).
    df = max(n // int(block_length) - 1, 1)
    t_crit = float(student_t.ppf((1.0 + ci) / 2.0, df))
    for start in range(0, n_vox, chunk):
        stop = min(start + chunk, n_vox)
        zy, oky = _zscore_rows(Y[start:stop])
        tzy = torch.as_tensor(zy.T.copy(), dtype=tdt).to(dev)
        Sy = W @ tzy
        var_y = (W @ (tzy * tzy)).div_(n).sub_((Sy / n).square())
        inv_sd_y = torch.where(var_y > 0, var_y, torch.nan).rsqrt_()
        r_obs, r_boot, ok = {}, {}, {}
        for m in conds:
            zp, okp = _zscore_rows(np.asarray(preds[m])[start:stop])
            ok[m] = oky & okp
            r_obs[m] = (zy * zp).mean(1)
            r_boot[m] = _boot_r(W, tzy, torch.as_tensor(zp.T.copy(), dtype=tdt).to(dev), Sy, inv_sd_y, n)
        if track is not None:
            sel = np.flatnonzero((track >= start) & (track < stop))
        for c in contrasts:
            a, b = CONTRASTS[c]
            valid = ok[a] & ok[b]
            d = r_obs[a] - r_obs[b]
            db = r_boot[a] - r_boot[b]                                   # (B, v)
            # A resample whose series came out constant has no r; it sits out of this voxel's distribution.
            if bool(torch.isnan(db).any()):
                se = torch.sqrt(torch.nanmean((db - torch.nanmean(db, 0)) ** 2, 0)).cpu().numpy()
            else:
                se = db.std(0, correction=0).cpu().numpy()
            with np.errstate(divide="ignore", invalid="ignore"):
                z = np.where(se > 0, np.abs(d) / np.where(se > 0, se, 1.0), np.where(d == 0, 0.0, np.inf))
            p = 2.0 * student_t.sf(z, df)
            half = t_crit * se
            s = slice(start, stop)
            out[f"delta_{c}"][s] = np.where(valid, d, 0.0)
            out[f"delta_lo_{c}"][s] = np.where(valid, d - half, 0.0)
            out[f"delta_hi_{c}"][s] = np.where(valid, d + half, 0.0)
            out[f"p_{c}"][s] = np.where(valid, np.clip(p, 0.0, 1.0), 1.0)
            out[f"valid_{c}"][s] = valid
            if track is not None and sel.size:
                out[f"boot_{c}"][:, sel] = db[:, torch.as_tensor(track[sel] - start, device=dev)].cpu().numpy()
    for c in contrasts:
        valid = out[f"valid_{c}"]
        q = fdr_bh(np.where(valid, out[f"p_{c}"], np.nan))
        out[f"q_{c}"] = np.where(valid, q, 1.0)
        sig = valid & (out[f"q_{c}"] <= level)
        out[f"outcome_{c}"] = (np.sign(out[f"delta_{c}"]) * sig).astype(np.int8)
    out.update(block_length=int(block_length), block_length_auto=bool(auto), n_boot=int(n_boot), ci=float(ci),
               level=float(level), contrasts=list(contrasts))
    return out


# --------------------------------------------------------------------------------------------------------------
# Summaries over voxels
# --------------------------------------------------------------------------------------------------------------

def tracked_voxels(groups: np.ndarray | None, n_voxels: int, seed: int) -> tuple[np.ndarray, dict]:
    """A seeded subsample of voxels whose bootstrap draws are kept: up to :data:`TRACKED_OVERALL` of all
    voxels, and up to :data:`TRACKED_PER_GROUP` of each group (ROI).

    Returns
    -------
    rows : ndarray of int64, ascending
        Voxel rows kept.
    members : dict
        ``"all"`` -> positions in ``rows`` of the run-wide subsample; group code -> positions of that group's.
    """
    rng = np.random.default_rng([seed, 9])
    picks = {"all": np.sort(rng.choice(n_voxels, min(n_voxels, TRACKED_OVERALL), replace=False))}
    if groups is not None:
        g = np.asarray(groups)
        for code in np.unique(g):
            rows = np.flatnonzero(g == code)
            picks[int(code)] = np.sort(rng.choice(rows, min(rows.size, TRACKED_PER_GROUP), replace=False))
    rows = np.unique(np.concatenate(list(picks.values())))
    return rows, {k: np.searchsorted(rows, v) for k, v in picks.items()}


def summarise_outcomes(res: dict, contrast: str, voxels: np.ndarray, boot_positions: np.ndarray | None,
                       ci: float) -> dict:
    """Counts and shares helped / hurt / no difference, and the median Δr with its bootstrap interval.

    Parameters
    ----------
    res : dict
        :func:`paired_contrasts` output (with ``boot_<contrast>`` when ``boot_positions`` is given).
    voxels : array of int or bool mask
        The voxels summarised (an ROI, or all).
    boot_positions : array of int, optional
        Columns of ``boot_<contrast>`` that hold the subsample of these voxels whose draws were kept: the
        median's interval is ``median ± z SD`` with SD that of the per-resample median over them (it resamples
        test samples; the voxels are fixed).
    """
    v = np.asarray(voxels)
    valid = res[f"valid_{contrast}"][v]
    out_codes = res[f"outcome_{contrast}"][v][valid]
    delta = res[f"delta_{contrast}"][v][valid].astype(np.float64)
    n = int(valid.sum())
    s = {"n_voxels": n, "n_helped": int((out_codes == 1).sum()), "n_hurt": int((out_codes == -1).sum()),
         "n_no_difference": int((out_codes == 0).sum())}
    if n:
        s.update(share_helped=s["n_helped"] / n, share_hurt=s["n_hurt"] / n, median_delta=float(np.median(delta)))
        if boot_positions is not None and len(boot_positions):
            draws = res[f"boot_{contrast}"][:, boot_positions].astype(np.float64)
            rows = res["tracked"][boot_positions]
            keep = res[f"valid_{contrast}"][rows]
            if keep.any():
                # The SD of the subsample's median over resamples, around the median of all voxels. Not its
                # percentiles: each resample adds its own noise to every voxel's Δr, and the median of a noisier
                # mixture (helped voxels among unaffected ones) is shifted, so the percentiles sit off-centre.
                from scipy.stats import norm
                med = np.nanmedian(draws[:, keep], axis=1)
                half = float(norm.ppf((1 + ci) / 2) * np.nanstd(med, ddof=1))
                s["median_delta_ci"] = [s["median_delta"] - half, s["median_delta"] + half]
                s["median_delta_ci_voxels"] = int(keep.sum())
    return s
