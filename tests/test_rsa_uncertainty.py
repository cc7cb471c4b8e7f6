"""The RDM agreement's intervals (test samples in blocks, voxels) against brute-force resampling of the full
RDMs, and its reference scales (the measured RDM's split-half ceiling) on planted cases."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata, spearmanr

from core.contrasts import block_bootstrap_counts
from core.rsa import rdm_agreement, rdm_reference_scales
from core.rsa.resample import sample_resamples, split_half_ceiling, voxel_resamples

N_VOX, N_SAMPLES = 60, 100


def _conditions(seed):
    """on/off stand-ins on 60 voxels x 100 samples: shared latent structure, own mixing and noise."""
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((N_SAMPLES, 8))
    shared = rng.standard_normal((8, N_VOX))
    make = lambda: latent @ (shared + 0.8 * rng.standard_normal((8, N_VOX))) \
        + 2.0 * rng.standard_normal((N_SAMPLES, N_VOX))  # noqa: E731
    return make(), make()


def _upper(x):
    return x[np.triu_indices(x.shape[0], k=1)]


def test_sample_interval_matches_brute_force_bootstrap_over_test_samples():
    a, b = _conditions(0)
    n_boot, block, seed = 150, 5, 3
    res = rdm_agreement(a, b, n_pairs=10 ** 6, seed=seed, device="cpu", n_boot_samples=n_boot, n_boot_voxels=0,
                        block_length=block)
    assert res["all_pairs"] and res["pearson_mc_se"] == 0.0
    # Brute force: the full RDMs of each resample's rows (np.corrcoef), same resamples.
    counts = block_bootstrap_counts(N_SAMPLES, block, n_boot, seed).astype(int)
    brute_p, brute_s = [], []
    for w in counts:
        rows = np.repeat(np.arange(N_SAMPLES), w)
        da, db = 1 - _upper(np.corrcoef(a[rows].T)), 1 - _upper(np.corrcoef(b[rows].T))
        brute_p.append(np.corrcoef(da, db)[0, 1])
        brute_s.append(spearmanr(da, db)[0])
    # Same resamples, float32 pair distances: agreement within 1e-5 per resample, so the SDs within 1e-4.
    assert res["pearson_sd_samples"] == pytest.approx(np.std(brute_p, ddof=1), abs=1e-4)
    assert res["spearman_sd_samples"] == pytest.approx(np.std(brute_s, ddof=1), abs=1e-4)
    lo, hi = np.percentile(brute_p, [2.5, 97.5])
    assert res["pearson_ci"][1] - res["pearson_ci"][0] == pytest.approx(hi - lo, abs=1e-4)
    # The interval no longer collapses to the pair noise (zero here): a test-sample SD of ~0.02-0.03.
    assert res["pearson_ci"][1] - res["pearson_ci"][0] > 0.04
    assert res["pearson_ci"][0] < res["pearson"] < res["pearson_ci"][1]


def test_sample_interval_width_matches_independent_test_sets():
    # The spread the interval stands for: agreement over fresh draws of the test samples from the same
    # generator (voxel structure fixed). 40 fresh sets estimate an SD to about +-11 %; 150 resamples the bootstrap
    # SD to about +-6 %; a factor 1.5 covers both (the bootstrap also adds n/l blocks' own bias, a few %).
    rng = np.random.default_rng(1)
    shared = rng.standard_normal((8, N_VOX))
    mix_a, mix_b = shared + 0.8 * rng.standard_normal((8, N_VOX)), shared + 0.8 * rng.standard_normal((8, N_VOX))

    def draw():
        latent = rng.standard_normal((N_SAMPLES, 8))
        return (latent @ mix_a + 2.0 * rng.standard_normal((N_SAMPLES, N_VOX)),
                latent @ mix_b + 2.0 * rng.standard_normal((N_SAMPLES, N_VOX)))
    fresh = []
    for _ in range(40):
        a, b = draw()
        fresh.append(np.corrcoef(1 - _upper(np.corrcoef(a.T)), 1 - _upper(np.corrcoef(b.T)))[0, 1])
    a, b = draw()
    res = rdm_agreement(a, b, n_pairs=10 ** 6, device="cpu", n_boot_samples=150, n_boot_voxels=0, block_length=1)
    sd = np.std(fresh, ddof=1)
    assert sd / 1.5 < res["pearson_sd_samples"] < sd * 1.5, (sd, res["pearson_sd_samples"])


def test_voxel_resamples_match_brute_force():
    a, b = _conditions(2)
    i, j = np.triu_indices(N_VOX, k=1)
    za, zb = (a - a.mean(0)) / a.std(0), (b - b.mean(0)) / b.std(0)
    x, y = 1 - (za.T @ za / N_SAMPLES)[i, j], 1 - (zb.T @ zb / N_SAMPLES)[i, j]
    vp, vs = voxel_resamples(x, y, i, j, N_VOX, 20, seed=5)
    c = np.random.default_rng([5, 13]).multinomial(N_VOX, np.full(N_VOX, 1 / N_VOX), size=20)
    for b_, counts in enumerate(c):
        picked = np.repeat(np.arange(N_VOX), counts)
        p, q = np.triu_indices(picked.size, k=1)
        keep = picked[p] != picked[q]                       # pairs of a voxel with its own copy left out
        da = 1 - np.corrcoef(a[:, picked].T)[p[keep], q[keep]]
        db = 1 - np.corrcoef(b[:, picked].T)[p[keep], q[keep]]
        assert vp[b_] == pytest.approx(np.corrcoef(da, db)[0, 1], abs=1e-9)
        # A voxel drawn twice repeats its pairs, which must tie in rank; BLAS may round the copies
        # one ulp apart, so the reference ranks distances rounded to 1e-12.
        ra, rb = rankdata(np.round(da, 12)), rankdata(np.round(db, 12))
        assert vs[b_] == pytest.approx(np.corrcoef(ra, rb)[0, 1], abs=1e-9)


def test_split_half_ceiling_is_one_without_noise_and_below_with_it():
    rng = np.random.default_rng(4)
    signal = rng.standard_normal((N_SAMPLES, 8)) @ rng.standard_normal((8, N_VOX))
    i, j = np.triu_indices(N_VOX, k=1)
    clean = split_half_ceiling(np.stack([signal] * 4), i, j)
    assert clean["pearson"] == pytest.approx(1.0, abs=1e-12) and clean["spearman"] == pytest.approx(1.0, abs=1e-12)
    noisy = np.stack([signal + 3.0 * rng.standard_normal(signal.shape) for _ in range(4)])
    c = split_half_ceiling(noisy, i, j)
    assert 0 < c["pearson_half"] < c["pearson"] < 1
    assert c["pearson"] == pytest.approx(2 * c["pearson_half"] / (1 + c["pearson_half"]), rel=1e-12)
    # The noise-free RDM agrees with the measured (4-repeat average) RDM about as the ceiling says: the
    # Spearman-Brown value estimates the correlation of the measured RDM with a second, independent one, which
    # is the square of its correlation with the truth (classical test theory); within 0.1 at 1,770 pairs.
    ref = rdm_reference_scales({"off": signal, "on": signal}, noisy.mean(0), noisy, n_pairs=10 ** 6)
    assert ref["measured"]["on"]["pearson"] ** 2 == pytest.approx(ref["ceiling"]["pearson"], abs=0.1)
    assert "uniform_off" not in ref


def test_reference_scales_uniform_and_bad_input():
    a, b = _conditions(6)
    u = 0.5 * (a + b)
    ref = rdm_reference_scales({"off": a, "on": b, "uniform": u}, a + b, None, n_pairs=500, seed=1)
    assert ref["n_pairs"] == 500 and "ceiling" not in ref
    assert -1 <= ref["uniform_off"]["pearson"] <= 1
    with pytest.raises(Exception, match="measured"):
        rdm_reference_scales({"off": a[:, :50]}, a, None)


def test_sample_resamples_on_a_pair_subset_is_bounded():
    a, b = _conditions(7)
    i, j = np.triu_indices(N_VOX, k=1)
    counts = block_bootstrap_counts(N_SAMPLES, 4, 10, 0)
    p, s = sample_resamples(a, b, i[:300], j[:300], counts)
    assert p.shape == s.shape == (10,) and np.all(np.abs(p) <= 1)
