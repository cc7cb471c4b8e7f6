"""Inference on autocorrelated test series (core.autocorr, core.stats): the t-test's inflation and its warning,
the block permutation's calibration with the automatic block length, a brute-force check of the permutation
p, the effective degrees of freedom against Monte Carlo, the sign rule and the noise-ceiling rule.

The planted null throughout: a voxel's measured series and its prediction are independent AR(1) series (the
prediction smooth too, as a movie's features are), so every rejection is a false positive.
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch
from scipy.signal import lfilter

from core import autocorr
from core.config import make_config
from core.pipeline import schema
from core.pipeline.stage import Context
from core.pipeline.stages import stage_rsa
from core.pipeline.store import StageEntry
from core.pipeline.summary import build_summary
from core.stats import block_permutation_p, pearson_r, voxel_stats
from core.vocabulary import NEGATIVE_CODE

N, V, LEVEL = 600, 4000, 0.01
PHIS = (0.3, 0.6, 0.8)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # Small arrays on a shared 2-core machine: one thread avoids OpenMP synchronisation stalls.
    n_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n_threads)


def _ar1(rng, shape, phi, burn=300):
    """Stationary AR(1) columns (unit innovations; the burn-in forgets the zero start)."""
    e = rng.standard_normal((shape[0] + burn, *shape[1:]))
    return lfilter([1.0], [1.0, -phi], e, axis=0)[burn:]


def _binomial_99(n_tests: int, level: float) -> tuple[float, float]:
    lo, hi = scipy.stats.binom.interval(0.99, n_tests, level)
    return lo / n_tests, hi / n_tests


@pytest.fixture(scope="module")
def null_runs():
    """voxel_stats of V null voxels per phi, rule "perm" with the automatic block (1000 permutations)."""
    out = {}
    for i, phi in enumerate(PHIS):
        rng = np.random.default_rng([17, i])
        pred, Y = _ar1(rng, (N, V), phi), _ar1(rng, (N, V), phi)
        out[phi] = (pred, Y, voxel_stats(pred, Y, rule="perm", level=LEVEL, n_perm=1000, seed=i))
    return out


# ------------------------------------------------------------------------------------------ the t-test

def test_t_test_is_inflated_under_autocorrelation_and_the_warning_says_by_how_much(null_runs):
    _, hi = _binomial_99(V, LEVEL)
    rates = {phi: float(np.mean(st["p"] <= LEVEL)) for phi, (_, _, st) in null_runs.items()}
    # Documents the problem: at phi = 0.8 the study's t-test rejects far above the 99% binomial bound
    # (theory for two AR(0.8) series: N_eff = N (1 - phi^2) / (1 + phi^2) ~ 0.22 N, rate ~ 0.2).
    assert rates[0.8] > hi and rates[0.8] > 0.1, rates
    assert rates[0.3] < rates[0.6] < rates[0.8]
    pred, Y, st_perm = null_runs[0.8]
    st = voxel_stats(pred, Y, rule="p", level=LEVEL)
    ac = st["autocorrelation"]
    assert ac["median_n_eff"] < 0.35 * N                        # theory 0.22 N; estimation bias is upward
    # The implied rate is the prediction of the measured one: within 0.03 of it (binomial sd 0.006 plus the
    # N_eff estimate's bias of ~+7% at phi = 0.8).
    assert abs(ac["implied_fpr"] - rates[0.8]) < 0.03, (ac, rates[0.8])
    assert len(st["warnings"]) == 1 and "anti-conservative" in st["warnings"][0]
    assert f"N = {N}" in st["warnings"][0] and f"{ac['median_n_eff']:.0f}" in st["warnings"][0]
    # The permutation rule does not warn about the t-test.
    assert not any("t-test" in w for w in st_perm["warnings"])


def test_no_warning_on_white_noise():
    rng = np.random.default_rng(3)
    pred, Y = rng.standard_normal((N, 2000)), rng.standard_normal((N, 2000))
    st = voxel_stats(pred, Y, rule="p", level=LEVEL)
    assert st["warnings"] == []
    # White series: N_eff ~ N (the estimate's noise, sd ~ 2 sqrt(K) / N ~ 0.03 of the factor, averages out).
    assert abs(st["autocorrelation"]["median_n_eff"] / N - 1) < 0.05
    assert abs(st["autocorrelation"]["implied_fpr"] - LEVEL) < 0.002


# ------------------------------------------------------------------------------------------ block permutation

@pytest.mark.parametrize("phi", PHIS)
def test_block_permutation_with_the_automatic_block_is_calibrated(null_runs, phi):
    _, _, st = null_runs[phi]
    lo, hi = _binomial_99(V, LEVEL)
    rate = float(np.mean(st["p_perm"] <= LEVEL))
    assert lo <= rate <= hi, (phi, rate, st["block"])
    assert not st["block"]["limited"] and st["block"]["coverage"] >= autocorr.BLOCK_COVERAGE
    # BH over null voxels admits (almost) nothing: the FDR of an all-null map bounds P(any) by the level.
    assert st["n_significant"] + st["n_significant_negative"] <= 2


def test_block_length_grows_with_the_autocorrelation(null_runs):
    needed = [null_runs[phi][2]["block"]["needed"] for phi in PHIS]
    blocks = [null_runs[phi][2]["block"]["block"] for phi in PHIS]
    assert needed[0] < needed[1] < needed[2], needed
    assert blocks[0] <= blocks[1] < blocks[2], blocks
    # Theory for two AR(phi) series: c(k) = phi^(2k); the chosen block keeps >= 95% of Var(r) under it too.
    for phi, b in zip(PHIS, blocks):
        c = phi ** (2 * np.arange(1, autocorr.max_lag(N) + 1))
        assert autocorr.perm_variance_coverage(c, b) >= 0.93, (phi, b)


@pytest.mark.parametrize("alternative", ["two-sided", "greater"])
def test_block_permutation_p_matches_a_brute_force_loop(alternative):
    rng = np.random.default_rng(4)
    n, v, block, n_perm, seed = 63, 5, 6, 300, 7      # 10 blocks, 3 trailing samples stay in place
    pred = _ar1(rng, (n, v), 0.5)
    Y = 0.3 * pred + _ar1(rng, (n, v), 0.5)
    Y[:, 1] = -Y[:, 1]                                 # a negative correlation: "greater" must not count it
    p = block_permutation_p(pred, Y, n_perm=n_perm, block=block, seed=seed, alternative=alternative)
    gen = torch.Generator().manual_seed(seed)          # the documented permutation stream
    n_blocks = n // block
    stat = np.abs if alternative == "two-sided" else (lambda x: x)
    obs = stat(np.array([np.corrcoef(pred[:, j], Y[:, j])[0, 1] for j in range(v)]))
    count = np.zeros(v)
    for _ in range(n_perm):
        perm = torch.randperm(n_blocks, generator=gen).numpy()
        idx = np.concatenate([np.arange(b * block, (b + 1) * block) for b in perm] +
                             [np.arange(n_blocks * block, n)])
        for j in range(v):
            count[j] += stat(np.corrcoef(pred[:, j], Y[idx, j])[0, 1]) >= obs[j] - 1e-12
    # Same permutations, same counts: equal up to float rounding of (count + 1) / (n_perm + 1).
    np.testing.assert_allclose(p, (count + 1) / (n_perm + 1), rtol=0, atol=1e-12)
    if alternative == "greater":
        assert p[1] > 0.5


# ------------------------------------------------------------------------------------------ effective N

def test_effective_n_matches_monte_carlo():
    rng = np.random.default_rng(8)
    phi_x, phi_y = 0.5, 0.8
    pred, Y = _ar1(rng, (N, V), phi_x), _ar1(rng, (N, V), phi_y)
    r = pearson_r(pred, Y)
    n_eff_mc = 1.0 / np.var(r)                         # Var(r) = 1 / N_eff under H0; relative sd sqrt(2 / V) = 2%
    theory = N * (1 - phi_x * phi_y) / (1 + phi_x * phi_y)
    assert abs(n_eff_mc / theory - 1) < 0.07           # 3 MC sd: the reference itself agrees with Bartlett
    diag = autocorr.series_autocorrelation(pred, Y, np.ones(V, bool))
    # Per-voxel estimates from 600 samples: autocorrelations are biased toward 0 by O(1 / N) per lag, which
    # overstates N_eff by a few per cent; the median is within 10% of the Monte-Carlo value.
    assert abs(np.median(diag["n_eff"]) / n_eff_mc - 1) < 0.10, (np.median(diag["n_eff"]), n_eff_mc)


def test_autocorrelation_matches_a_direct_sum():
    rng = np.random.default_rng(1)
    a = _ar1(rng, (50, 3), 0.7)
    rho = autocorr.autocorrelation(a, 5)
    c = a - a.mean(0)
    ref = np.array([[np.sum(c[:-k, j] * c[k:, j]) / np.sum(c[:, j] ** 2) for j in range(3)] for k in range(1, 6)])
    np.testing.assert_allclose(rho, ref, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------------------------------ sign

def _signed_run(rng, n=120, v=300):
    """Three conditions; voxels 0-59 predicted (r ~ +0.5), 60-99 anti-predicted (r ~ -0.5), the rest null."""
    rho = np.zeros(v)
    rho[:60], rho[60:100] = 0.5, -0.5
    pred = {m: rng.standard_normal((n, v)) for m in ("off", "on", "uniform")}
    Y = rho * pred["on"] + np.sqrt(1 - rho ** 2) * rng.standard_normal((n, v))
    return pred, Y, rho


def test_negative_r_is_its_own_category_and_never_enters_the_rsa_set(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import core.pipeline.stages as stages
    # The RSA stage reads the test repeats for its reference scales; this run has none.
    monkeypatch.setattr(stages, "load_dataset", lambda *a, **k: SimpleNamespace(
        responses=SimpleNamespace(Y_test_repeats=None)))
    rng = np.random.default_rng(12)
    pred, Y, _ = _signed_run(rng)
    for m in pred:   # the off and uniform predictions share the planted sign with on
        pred[m] = 0.5 * pred["on"] + 0.5 * pred[m] if m != "on" else pred[m]
    cfg = make_config("demo", {"stats": {"rule": "p"}, "rsa": {"k": 5, "n_pairs": 2000},
                               "umap": {"n_neighbors": 5}})
    stats_arrays, stats_meta = {}, {"conditions": {}, "warnings": []}
    for m, p in pred.items():
        st = voxel_stats(p, Y, rule="p", level=0.01)
        assert st["n_significant_negative"] > 20 and np.all(st["r"][st["significant"]] > 0)
        assert np.all(st["bin"][st["significant_negative"]] == NEGATIVE_CODE)
        assert st["n_significant"] == int(st["significant"].sum())
        stats_arrays.update({schema.name("stats", k, m): v for k, v in st.items() if isinstance(v, np.ndarray)})
        stats_meta["conditions"][m] = {k: v for k, v in st.items() if not isinstance(v, np.ndarray)}
    n_test, n_vox = Y.shape
    entries = {
        "dataset": StageEntry("dataset", "d", tmp_path, {}, {"n_train": 10, "n_test": n_test, "n_voxels": n_vox,
                                                            "simulated": False}),
        "encoding": StageEntry("encoding", "e", tmp_path,
                               {schema.name("encoding", "measured"): np.ascontiguousarray(Y.T, dtype=np.float32),
                                **{schema.name("encoding", "pred", m): np.ascontiguousarray(p.T, dtype=np.float32)
                                   for m, p in pred.items()}}, {}),
        "stats": StageEntry("stats", "s", tmp_path, stats_arrays, stats_meta),
    }
    arrays, _ = stage_rsa(Context(cfg, "cpu", tmp_path, entries, progress=False))
    for m in ("off", "on"):
        voxels = arrays[schema.name("rsa", "voxels", m)]
        assert voxels.size > 30
        assert np.all(stats_arrays[schema.name("stats", "r", "on")][voxels] > 0)
        assert not np.isin(voxels, np.arange(60, 100)).any()       # the planted negative voxels
    # The study's voxel set (paper presets: rsa.include_negative) keeps the significant negative r as well.
    study_cfg = make_config("demo", {"stats": {"rule": "p"}, "rsa": {"k": 5, "n_pairs": 2000, "include_negative": True},
                                     "umap": {"n_neighbors": 5}})
    study, _ = stage_rsa(Context(study_cfg, "cpu", tmp_path, entries, progress=False))
    neg_on = stats_arrays[schema.name("stats", "significant_negative", "on")]
    assert np.isin(np.flatnonzero(neg_on), study[schema.name("rsa", "voxels", "on")]).all() and neg_on.any()
    assert make_config("paper").rsa.include_negative and not make_config("demo").rsa.include_negative
    summary = build_summary(cfg, "sign", entries, device="cpu", timings={}, peak_rss_mb=0.0, versions={})
    for m in pred:
        c = summary["conditions"][m]
        assert c["n_significant_negative"] == int(stats_arrays[schema.name("stats", "significant_negative", m)].sum())
        assert c["n_significant"] == int(stats_arrays[schema.name("stats", "significant", m)].sum())
    assert summary["stats"]["rule"] == "p" and "on" in summary["stats"]["autocorrelation"]


def test_one_sided_alternative_never_admits_negative_r():
    rng = np.random.default_rng(13)
    pred, Y, _ = _signed_run(rng)
    two = voxel_stats(pred["on"], Y, rule="p")
    one = voxel_stats(pred["on"], Y, rule="p", alternative="greater")
    assert two["n_significant_negative"] > 20 and one["n_significant_negative"] == 0
    # One-sided p is half the two-sided p for r > 0, so it admits at least the same positive voxels.
    pos = two["r"] > 0
    np.testing.assert_allclose(one["p"][pos], two["p"][pos] / 2, rtol=1e-12)
    assert np.all(one["significant"] >= two["significant"])
    perm = voxel_stats(pred["on"], Y, rule="perm", alternative="greater", n_perm=2000)
    assert perm["n_significant_negative"] == 0 and np.all(perm["p_perm"][60:100] > 0.5)


# ------------------------------------------------------------------------------------------ noise ceiling

def test_r_norm_is_nan_where_the_ceiling_is_unreliable():
    rng = np.random.default_rng(14)
    n, v, n_rep = 200, 600, 4
    sd = np.where(np.arange(v) < 300, 1.0, 0.0)          # half the voxels carry no repeatable signal at all
    signal = rng.standard_normal((n, v)) * sd
    R = signal[None] + rng.standard_normal((n_rep, n, v))
    pred = signal + rng.standard_normal((n, v))
    st = voxel_stats(pred, R.mean(0), Y_test_repeats=R, ceiling_min_ev=0.1)
    ok = st["ceiling_valid"]
    np.testing.assert_array_equal(ok, st["valid"] & (st["cc_max"] > 0) & (st["ev"] >= 0.1))
    assert np.isnan(st["r_norm"][~ok]).all() and np.isfinite(st["r_norm"][ok]).all()
    # Signal voxels (EV = 0.5) pass; pure-noise voxels (EV ~ 0, null sd ~ 0.04 here) essentially never.
    assert ok[:300].mean() > 0.99 and ok[300:].mean() < 0.01
    # No clipping: r_norm is exactly r / cc_max where reliable.
    np.testing.assert_allclose(st["r_norm"][ok], st["r"][ok] / st["cc_max"][ok], rtol=1e-15)


def test_config_accepts_the_new_rules_and_names_bad_values():
    from core._validation import InputError
    cfg = make_config("demo", {"stats": {"rule": "perm", "n_permutations": 500, "block_length": 12,
                                         "alternative": "greater"}})
    assert cfg.stats.rule == "perm" and cfg.stats.block_length == 12
    paper = make_config("paper")
    # The study's rule: two-sided t-test p <= 0.01, uncorrected, no permutations.
    assert (paper.stats.rule, paper.stats.alternative, paper.stats.level, paper.stats.n_permutations) == \
        ("p", "two-sided", 0.01, 0)
    assert make_config("paper-sim").stats == paper.stats
    # The demo on the user's files gets the block permutation (autocorrelated fMRI series); on the simulated
    # dataset (independent test images) and wherever the config names a rule, what the config says.
    user = make_config("demo", {"data": {"kind": "files"}})
    assert (user.stats.rule, user.stats.n_permutations) == ("perm", 1000)
    assert make_config("demo").stats.rule == "p"
    assert make_config("demo", {"data": {"kind": "files"}, "stats": {"rule": "q"}}).stats.rule == "q"
    assert make_config("paper", {"data": {"kind": "files"}}).stats == paper.stats
    for bad, field in (({"rule": "perm", "n_permutations": 0}, "stats.n_permutations"),
                       ({"alternative": "less"}, "stats.alternative"),
                       ({"block_length": -1}, "stats.block_length")):
        with pytest.raises(InputError, match=field):
            make_config("demo", {"stats": bad})


def test_configured_block_length_is_used_and_a_too_short_series_is_flagged():
    rng = np.random.default_rng(15)
    pred, Y = _ar1(rng, (120, 200), 0.5), _ar1(rng, (120, 200), 0.5)
    st = voxel_stats(pred, Y, n_perm=100, block=7)
    assert st["block_length"] == 7 and st["block"]["rule"] == "stats.block_length"
    np.testing.assert_array_equal(st["p_perm"], block_permutation_p(pred, Y, n_perm=100, block=7))
    # 64 very smooth samples: 8 blocks of 8 keep well under 95% of r's null variance; the run says so.
    pred, Y = _ar1(rng, (64, 300), 0.95), _ar1(rng, (64, 300), 0.95)
    st = voxel_stats(pred, Y, rule="perm", n_perm=200)
    assert st["block"]["limited"] and st["block"]["coverage"] < 0.95 and st["block_length"] == 8
    assert any("too few for this autocorrelation" in w for w in st["warnings"])


@pytest.mark.parametrize("kwargs, match", [
    ({"alternative": "less"}, r"alternative.*'less'"),
    ({"block": -1}, r"block length >= 0"),
    ({"rule": "perm", "n_perm": 0}, r"n_perm > 0"),
])
def test_bad_inference_inputs_raise_input_error(kwargs, match):
    from core._validation import InputError
    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match=match):
        voxel_stats(rng.standard_normal((30, 4)), rng.standard_normal((30, 4)), **kwargs)
