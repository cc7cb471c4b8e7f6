"""``summary.json``: the per-run record that scripts and people read.

Fields not computed yet (a stage not run) are absent, never faked.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from core._io import write_json_atomic
from core.config import RunConfig, config_to_dict
from core.outputs.reader import StageArrays
from core.vocabulary import NEGATIVE_CODE, PAIR, BinScheme

__all__ = ["condition_summary", "stats_summary", "truth_summary", "joint_summary", "build_summary", "write_json_atomic"]



def joint_summary(meta: dict, run) -> dict:
    """The joint model's band-weight choices, the medians of its variance partition and, on simulated data,
    how well it recovers the planted unique variance (Spearman over the voxels with signal)."""
    from scipy.stats import spearmanr
    part = {k: np.asarray(run.array("joint", k), dtype=np.float64) for k in ("unique_on", "unique_off", "shared")}
    out: dict[str, Any] = {"gammas_on": meta.get("gammas_on"), "share_by_gamma": meta.get("share_by_gamma"),
                           "seconds": meta.get("seconds"), "test": meta.get("test"),
                           "voxels": meta.get("voxels"), "n_fitted": meta.get("n_fitted"),
                           **{f"median_{k}": float(np.nanmedian(v)) for k, v in part.items()}}
    if run.has_array("joint", "unique_on_vs_uniform"):
        u = meta.get("uniform", {})
        focus = np.asarray(run.array("joint", "unique_on_vs_uniform"), dtype=np.float64)
        out["uniform"] = {"what": "the on + uniform joint model: unique_on_vs_uniform is the variance the spatial "
                                  "focus explains beyond the gain", "median_unique_on_vs_uniform":
                          float(np.nanmedian(focus)), "seconds": u.get("seconds"), "n_fitted": u.get("n_fitted"),
                          "n_significant_on": (u.get("test") or {}).get("n_significant_on",
                                                                        u.get("n_significant_on"))}
    truth = run.truth()
    if "truth_unique_on" in truth and "truth_null" in truth:
        # The voxels truth_summary scores too: planted with signal and significant (r > 0) in on or off.
        considered = ~np.asarray(truth["truth_null"], bool)
        if run.has_array("stats", "significant", "on") and run.has_array("stats", "significant", "off"):
            considered &= np.asarray(run.array("stats", "significant", "on")) | \
                np.asarray(run.array("stats", "significant", "off"))
        planted = {k: np.asarray(truth[f"truth_{k}"], np.float64) for k in ("unique_on", "unique_off", "shared")}
        pairs = {**{k: (planted[k], part[k]) for k in planted},
                 # Identically r2_on - r2_off: the joint model cancels out of the difference of the unique parts.
                 "unique_diff": (planted["unique_on"] - planted["unique_off"], part["unique_on"] - part["unique_off"])}
        for k, (a, b) in pairs.items():
            ok = considered & np.isfinite(b)
            out[f"truth_{k}_spearman"] = float(spearmanr(a[ok], b[ok]).statistic) if ok.sum() > 2 else None
        out["truth_voxels"] = int(considered.sum())
    return out


def condition_summary(r: np.ndarray, significant: np.ndarray, bins: np.ndarray, scheme: BinScheme,
                      significant_negative: np.ndarray | None = None) -> dict[str, Any]:
    """Counts of significant voxels (positive r: the encoded ones), per correlation bin (keyed by the scheme's
    labels), their median r, and the significant negative r counted on their own (``n_significant_negative``,
    from ``significant_negative`` or else the bins' negative code)."""
    out = {"n_significant": int(significant.sum()),
           "bins": {lab: int((bins == code).sum()) for code, lab in zip(scheme.codes, scheme.labels)}}
    if significant.any():
        out["median_r_significant"] = float(np.median(r[significant]))
    neg = significant_negative if significant_negative is not None else (bins == NEGATIVE_CODE) & (r < 0)
    out["n_significant_negative"] = int(np.sum(neg))
    return out


def stats_summary(cfg: RunConfig, meta: dict) -> dict[str, Any]:
    """The ``stats`` block: the rule and its settings, the permutation block used, the autocorrelation
    diagnostics per condition (median N_eff, the t-test's implied false-positive rate) and the warnings."""
    st = cfg.stats
    out: dict[str, Any] = {"rule": st.rule, "alternative": st.alternative, "level": st.level,
                           "n_permutations": st.n_permutations, "block_length_config": st.block_length,
                           "autocorrelation": {}, "warnings": list(meta.get("warnings", []))}
    for mode, c in meta.get("conditions", {}).items():
        if "autocorrelation" in c:
            ac = {k: v for k, v in c["autocorrelation"].items() if k != "pooled_products"}
            out["autocorrelation"][mode] = ac
        if "block" in c:
            out.setdefault("block", {})[mode] = c["block"]
            out.setdefault("block_length", {})[mode] = c["block_length"]
        if "ceiling" in c:
            out["ceiling"] = c["ceiling"]
    return out


def truth_summary(r_on, r_off, sig_on, sig_off, p_on, truth: dict[str, np.ndarray],
                  p_perm_on=None) -> dict[str, Any]:
    """Recovery of the planted truth.

    Parameters
    ----------
    r_on, r_off, p_on : arrays of shape (n_voxels,)
    sig_on, sig_off : bool arrays of shape (n_voxels,)
    truth : dict of array name (``truth_null``, ...) to array of shape (n_voxels,)

    Returns
    -------
    dict
        ``dominant_recovery``: among non-null voxels with an on/off contrast that are significant in either
        condition, the fraction where the condition with the higher r is the planted dominant one.
        ``null_fpr_p01``: fraction of null voxels with p <= 0.01 in the ``on`` condition (the parametric p;
        under autocorrelated noise it is expected above 0.01); ``null_fpr_perm_p01`` the same for the
        block-permutation p (runs with permutations). With ``truth_delta_r``: ``delta_r_spearman``,
        the rank correlation of the measured r_on - r_off with the planted advantage over the same voxels
        as the dominance; with ``truth_null_contrast``: ``null_contrast_mean_delta_r`` and its standard
        error over the null-contrast voxels (voxels as the independent units).
    """
    null = np.asarray(truth["truth_null"], bool)
    nc = np.asarray(truth.get("truth_null_contrast", np.zeros_like(null)), bool)
    considered = (~null) & (~nc) & (sig_on | sig_off)
    out: dict[str, Any] = {"n_null": int(null.sum()), "n_considered_dominance": int(considered.sum())}
    dominant_on = np.asarray(truth["truth_dominant_on"], bool)
    diff = np.asarray(r_on, np.float64) - np.asarray(r_off, np.float64)
    if considered.any():
        out["dominant_recovery"] = float(np.mean((diff > 0)[considered] == dominant_on[considered]))
        if "truth_delta_r" in truth and considered.sum() > 2:
            from scipy.stats import spearmanr
            out["delta_r_spearman"] = float(spearmanr(diff[considered],
                                                      np.asarray(truth["truth_delta_r"])[considered])[0])
    if null.any():
        out["null_fpr_p01"] = float(np.mean(p_on[null] <= 0.01))
    if nc.sum() > 1:
        out["n_null_contrast"] = int(nc.sum())
        out["null_contrast_mean_delta_r"] = float(diff[nc].mean())
        out["null_contrast_mean_delta_r_se"] = float(diff[nc].std(ddof=1) / np.sqrt(nc.sum()))
    if p_perm_on is not None and null.any():
        out["null_fpr_perm_p01"] = float(np.mean(p_perm_on[null] <= 0.01))
    return out


def build_summary(cfg: RunConfig, run_id: str, results: dict, *, device: str, timings: dict[str, float],
                  peak_rss_mb: float, versions: dict[str, str]) -> dict[str, Any]:
    """The summary of a run from its stage entries (``results``: stage name -> StageEntry)."""
    run = StageArrays(results)
    ds = results["dataset"]
    summary: dict[str, Any] = {
        "run_id": run_id, "preset": cfg.preset, "simulated": bool(ds.meta.get("simulated")),
        "n_train": ds.meta["n_train"], "n_test": ds.meta["n_test"], "n_voxels": ds.meta["n_voxels"],
        "device": device, "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "peak_rss_mb": round(peak_rss_mb, 1), "versions": versions, "config": config_to_dict(cfg),
    }
    if ds.meta.get("n_excluded"):
        summary["voxels_excluded"] = {"n_excluded": ds.meta["n_excluded"], "n_file_voxels": ds.meta["n_file_voxels"],
                                      "why": "NaN/inf in every test sample (voxels outside the brain in a published "
                                             "volume); the dataset stage's voxel_index maps rows to file columns"}
    if ds.meta.get("feature_seconds") is not None:
        summary["feature_seconds_in_dataset"] = ds.meta["feature_seconds"]
    if "encoding" in results:
        summary["encoding_seconds"] = {m: c["seconds"] for m, c in results["encoding"].meta.get("conditions", {}).items()
                                       if "seconds" in c}
    if "stats" in results:
        st = results["stats"]
        scheme = BinScheme.from_config(cfg)
        conds = {}
        for mode in cfg.features.modes:
            a = run.stats(mode)
            neg = np.asarray(a["significant_negative"]) if "significant_negative" in a else None
            conds[mode] = condition_summary(np.asarray(a["r"]), np.asarray(a["significant"]), np.asarray(a["bin"]),
                                            scheme, neg)
            extra = st.meta.get("conditions", {}).get(mode, {})
            if "n_invalid" in extra:
                conds[mode]["n_invalid"] = extra["n_invalid"]
        summary["conditions"] = conds
        summary["stats"] = stats_summary(cfg, st.meta)
        truth = run.truth()
        if "truth_null" in truth and set(PAIR) <= set(cfg.features.modes):
            on, off = run.stats("on"), run.stats("off")
            summary["truth"] = truth_summary(
                np.asarray(on["r"]), np.asarray(off["r"]), np.asarray(on["significant"]),
                np.asarray(off["significant"]), np.asarray(on["p"]), truth,
                np.asarray(on["p_perm"]) if "p_perm" in on else None)
    if "contrasts" in results:
        cm = results["contrasts"].meta
        summary["contrasts"] = {
            "test": cm.get("test"), "block_length": cm.get("block_length"), "n_boot": cm.get("n_boot"),
            "ci": cm.get("ci"), "level": cm.get("level"),
            **{k: {"label": v["label"], **v["all"]} for k, v in cm.get("contrasts", {}).items()}}
    if "joint" in results and run.has_array("joint", "unique_on"):
        summary["joint"] = joint_summary(results["joint"].meta, run)
    if "rsa" in results:
        rs = results["rsa"]
        summary["rsa"] = {k: v for k, v in rs.meta.items() if k in ("conditions", "agreement")}
        if run.has_array("rsa", "knn_jaccard"):
            summary["rsa"]["median_knn_jaccard"] = float(np.median(run.array("rsa", "knn_jaccard")))
    if "umap" in results and "trustworthiness" in results["umap"].meta:
        summary["umap"] = {"trustworthiness": results["umap"].meta["trustworthiness"],
                           "trustworthiness_voxels": "seeded subsample of at most 4,000 voxels, k = n_neighbors"}
    return summary
