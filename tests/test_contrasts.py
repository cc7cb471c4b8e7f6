"""The paired per-voxel test of r_a - r_b (core.contrasts): calibration under a planted null, power under a
planted advantage, agreement with a brute-force per-voxel bootstrap, and the contrasts stage's outputs."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from core._validation import InputError
from core.contrasts import (
    block_bootstrap_counts,
    choose_block_length,
    paired_contrasts,
    summarise_outcomes,
    tracked_voxels,
)
from core.vocabulary import CONTRAST_LABELS, CONTRASTS

N_TEST = 200


def _ar1(rng, shape, rho):
    """Unit-variance AR(1) series along the last axis."""
    e = rng.standard_normal(shape)
    x = np.empty(shape)
    x[..., 0] = e[..., 0]
    for t in range(1, shape[-1]):
        x[..., t] = rho * x[..., t - 1] + np.sqrt(1 - rho ** 2) * e[..., t]
    return x


def _planted(n_vox, *, noise_on, noise_off, seed, rho_y=0.6, rho_p=0.3):
    """Measured y = s + 1.5 e_y (AR(1) noise, rho_y), predictions s + noise * e (independent AR(1), rho_p), with
    s itself AR(1) 0.5: the true correlation with y is 1 / sqrt(3.25 (1 + noise^2))."""
    rng = np.random.default_rng(seed)
    s = _ar1(rng, (n_vox, N_TEST), 0.5)
    y = s + 1.5 * _ar1(rng, (n_vox, N_TEST), rho_y)
    on = s + noise_on * _ar1(rng, (n_vox, N_TEST), rho_p)
    off = s + noise_off * _ar1(rng, (n_vox, N_TEST), rho_p)
    return y, {"on": on, "off": off}


def test_false_positive_rate_at_001_under_planted_null():
    # Equal true correlation (both predictions carry the same noise level), autocorrelated noise in the
    # measured series (0.6) and in each prediction (0.3), automatic block length.
    n_vox = 4000
    y, preds = _planted(n_vox, noise_on=1.0, noise_off=1.0, seed=11)
    res = paired_contrasts(y, preds, n_boot=500, seed=1)
    n_fp = int((res["p_on_off"] <= 0.01).sum())
    # The voxels are independent, so the count is Binomial(n_vox, 0.01) for a calibrated test.
    lo, hi = stats.binom.ppf([0.005, 0.995], n_vox, 0.01)
    assert lo <= n_fp <= hi, f"{n_fp} of {n_vox} null voxels at p <= 0.01 (99% interval {lo:.0f}-{hi:.0f}); " \
                             f"block length {res['block_length']}"
    assert res["block_length_auto"] and res["block_length"] > 1


def test_power_on_planted_on_advantage():
    # On noise 0.3 vs off 1.0: true r 0.533 vs 0.392, a planted advantage of 0.141 (1 / sqrt(3.25 * 1.09) -
    # 1 / sqrt(6.5)), at 200 samples.
    y, preds = _planted(2000, noise_on=0.3, noise_off=1.0, seed=12)
    res = paired_contrasts(y, preds, n_boot=500, seed=2)
    power = float(np.mean(res["p_on_off"] <= 0.05))
    # The reference: a test that knew the true SE of Δr (its spread over these independent, identically
    # planted voxels) and used the same t critical value has this power; a bootstrap SE that tracks the true one
    # comes close, a broken one (e.g. inflated by a wrong resample) falls far below. Floor: 80% of it.
    sd = float(res["delta_on_off"].std())
    t_crit = stats.t.ppf(0.975, N_TEST // res["block_length"] - 1)
    effect = 0.141 / sd
    ideal = stats.norm.sf(t_crit - effect) + stats.norm.cdf(-t_crit - effect)
    assert ideal > 0.5, (ideal, sd)
    assert power > 0.8 * ideal, (power, ideal)
    # And the sign is right where it is detected: attention on helps.
    detected = res["p_on_off"] <= 0.05
    assert np.mean(res["delta_on_off"][detected] > 0) > 0.99


def test_interval_and_p_match_a_brute_force_loop_bootstrap():
    rng = np.random.default_rng(3)
    y, preds = _planted(40, noise_on=0.8, noise_off=1.0, seed=13)
    n_boot, block, seed = 300, 6, 4
    res = paired_contrasts(y, preds, n_boot=n_boot, block_length=block, seed=seed, dtype="float64",
                           track=np.arange(40))
    counts = block_bootstrap_counts(N_TEST, block, n_boot, seed)       # the same resamples
    t_crit = stats.t.ppf(0.975, N_TEST // block - 1)
    for v in rng.choice(40, 5, replace=False):
        draws = []
        for w in counts.astype(int):
            rows = np.repeat(np.arange(N_TEST), w)
            r_on = np.corrcoef(y[v, rows], preds["on"][v, rows])[0, 1]
            r_off = np.corrcoef(y[v, rows], preds["off"][v, rows])[0, 1]
            draws.append(r_on - r_off)
        draws = np.array(draws)
        d = np.corrcoef(y[v], preds["on"][v])[0, 1] - np.corrcoef(y[v], preds["off"][v])[0, 1]
        se = draws.std()
        # float64 sums against np.corrcoef on the expanded rows: rounding only (1e-10); the stored interval
        # is float32 (7 digits).
        np.testing.assert_allclose(res["boot_on_off"][:, v], draws, atol=1e-6)
        assert abs(res["delta_on_off"][v] - d) < 1e-6
        np.testing.assert_allclose([res["delta_lo_on_off"][v], res["delta_hi_on_off"][v]],
                                   [d - t_crit * se, d + t_crit * se], atol=1e-6)
        np.testing.assert_allclose(res["p_on_off"][v], 2 * stats.t.sf(abs(d) / se, N_TEST // block - 1),
                                   rtol=1e-6)


def test_counts_are_circular_blocks():
    counts = block_bootstrap_counts(50, 7, 200, 0)
    assert counts.shape == (200, 50) and np.all(counts.sum(1) == 50)
    # Every sample is drawn equally often on average (circular blocks have no edge effect): 200 x 50 draws.
    assert abs(counts.mean(0) - 1).max() < 0.35
    with pytest.raises(InputError, match="block_length"):
        block_bootstrap_counts(50, 0, 10, 0)


def test_block_length_grows_with_autocorrelation():
    rng = np.random.default_rng(5)
    iid = rng.standard_normal((N_TEST, 500))
    strong = _ar1(rng, (500, N_TEST), 0.9).T
    assert choose_block_length(iid) <= 2
    assert choose_block_length(strong) >= 8
    assert choose_block_length(strong) <= N_TEST // 4


def test_outcome_follows_q_and_sign():
    y, preds = _planted(600, noise_on=0.2, noise_off=1.5, seed=14)
    preds["uniform"] = preds["off"] + 0.3 * np.random.default_rng(0).standard_normal(preds["off"].shape)
    res = paired_contrasts(y, preds, n_boot=200, level=0.05, seed=0)
    assert res["contrasts"] == list(CONTRASTS)
    for c in CONTRASTS:
        sig = res[f"valid_{c}"] & (res[f"q_{c}"] <= 0.05)
        want = np.where(sig, np.sign(res[f"delta_{c}"]), 0)
        assert np.array_equal(res[f"outcome_{c}"], want.astype(np.int8))
        assert res[f"outcome_{c}"].dtype == np.int8
        np.testing.assert_allclose(res[f"q_{c}"], stats.false_discovery_control(res[f"p_{c}"]), rtol=1e-12)
    # Planted r 0.545 vs 0.308 (a difference of ~4 SE): most voxels come out helped, none hurt.
    assert (res["outcome_on_off"] == 1).mean() > 0.5 and not (res["outcome_on_off"] == -1).any()
    assert CONTRAST_LABELS["on_off"] == "on - off"


def test_constant_voxel_is_invalid_not_nan():
    y, preds = _planted(50, noise_on=1.0, noise_off=1.0, seed=15)
    y[3] = 1.0
    res = paired_contrasts(y, preds, n_boot=100, block_length=4, seed=0)
    assert not res["valid_on_off"][3] and res["p_on_off"][3] == 1 and res["outcome_on_off"][3] == 0
    for f in ("delta", "delta_lo", "delta_hi", "p", "q"):
        assert np.all(np.isfinite(res[f"{f}_on_off"]))


def test_summary_counts_and_median_interval():
    y, preds = _planted(900, noise_on=0.6, noise_off=1.0, seed=16)
    groups = np.repeat([0, 1, 2], 300)
    rows, members = tracked_voxels(groups, 900, 0)
    res = paired_contrasts(y, preds, n_boot=300, seed=0, track=rows)
    s = summarise_outcomes(res, "on_off", np.arange(900), members["all"], 0.95)
    assert s["n_helped"] + s["n_hurt"] + s["n_no_difference"] == 900
    assert s["median_delta"] == pytest.approx(np.median(res["delta_on_off"]))
    lo, hi = s["median_delta_ci"]
    # The planted advantage is 0.083 for every voxel; the median over 900 voxels is far more precise than one
    # voxel's Δr (SE ~0.04), so its interval holds the truth and is much narrower than a voxel's.
    assert lo < 0.083 < hi and hi - lo < 0.04
    g = summarise_outcomes(res, "on_off", np.flatnonzero(groups == 1), members[1], 0.95)
    assert g["n_voxels"] == 300 and g["median_delta_ci_voxels"] == 300


def test_bad_inputs_are_named():
    y, preds = _planted(20, noise_on=1.0, noise_off=1.0, seed=17)
    with pytest.raises(InputError, match="pred_on"):
        paired_contrasts(y, {"on": preds["on"][:, :50], "off": preds["off"]})
    with pytest.raises(InputError, match="contrasts"):
        paired_contrasts(y, preds, contrasts=["on_uniform"])
    with pytest.raises(InputError, match="block_length"):
        paired_contrasts(y, preds, block_length=150)


def test_float32_sums_agree_with_float64():
    y, preds = _planted(300, noise_on=0.8, noise_off=1.0, seed=18)
    r64 = paired_contrasts(y, preds, n_boot=200, block_length=5, seed=1, dtype="float64")
    r32 = paired_contrasts(y, preds, n_boot=200, block_length=5, seed=1)
    # z-scored series: float32 sums of 200 terms keep r to ~1e-6, so interval ends to 1e-4 and p to 1e-3.
    for f in ("delta_lo", "delta_hi"):
        np.testing.assert_allclose(r32[f"{f}_on_off"], r64[f"{f}_on_off"], atol=1e-4)
    np.testing.assert_allclose(r32["p_on_off"], r64["p_on_off"], atol=1e-3)


def test_synthetic_run_holds_the_contrasts_stage(tmp_path):
    from core.outputs.reader import open_results
    from core.testing.synthetic import make_synthetic_results
    res = open_results(make_synthetic_results(tmp_path, n_voxels=400, n_test=40, with_assets=False,
                                              with_thumbnails=False))
    assert res.contrast_names() == list(CONTRASTS)
    a = res.contrast("on_off")
    assert set(a) == {"delta", "delta_lo", "delta_hi", "p", "q", "outcome", "valid"}
    # Stored Δr is the stats stage's r_on - r_off wherever both are valid (float32 storage).
    on, off = res.stats("on"), res.stats("off")
    ok = np.asarray(a["valid"])
    np.testing.assert_allclose(np.asarray(a["delta"])[ok], (np.asarray(on["r"]) - np.asarray(off["r"]))[ok], atol=1e-5)
    s = res.summary["contrasts"]["on_off"]
    assert s["n_helped"] + s["n_hurt"] + s["n_no_difference"] == s["n_voxels"] == int(ok.sum())
    assert s["label"] == "on - off" and len(s["median_delta_ci"]) == 2
    rois = res.stage("contrasts").meta["contrasts"]["on_off"]["rois"]
    assert sum(r["n_voxels"] for r in rois.values()) == int(ok.sum())
    assert {"outcome_on_off", "q_delta_on_off", "delta_lo_uniform_off"} <= set(res.table.columns)
    agreement = res.stage("rsa").meta["agreement"]
    assert {"pearson_ci", "pearson_ci_voxels", "pearson_mc_se", "reference"} <= set(agreement)
    assert 0 < agreement["reference"]["ceiling"]["pearson"] <= 1


@pytest.mark.parametrize("override, field", [({"contrasts": {"n_boot": 0}}, "contrasts.n_boot"),
                                             ({"contrasts": {"block_length": -1}}, "contrasts.block_length"),
                                             ({"contrasts": {"level": 1.0}}, "contrasts.level"),
                                             ({"contrasts": {"ci": 0.0}}, "contrasts.ci"),
                                             ({"rsa": {"n_boot_samples": -5}}, "rsa.n_boot_samples")])
def test_config_checks_the_contrast_settings(override, field):
    from core.config import make_config
    with pytest.raises(InputError, match=field.replace(".", r"\.")):
        make_config("demo", override)
    assert make_config("demo", {"contrasts": {"n_boot": 500, "block_length": 4}}).contrasts.block_length == 4
