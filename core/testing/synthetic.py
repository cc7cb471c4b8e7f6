"""A complete, realistic results folder made from synthetic arrays in seconds, for the dashboard's tests and
benchmark: every stage entry of the results-store contract, its arrays named by the results schema and
committed through the store (so the schema's checks run on them).

Nothing here runs the network, the ridge models or pycortex. The voxels sit on two synthetic hemispheres
(flat sheets with ROIs); their measured and predicted test series are planted so that early visual ROIs
are predicted better with attention off and object/scene ROIs with attention on; r, p, q, bins and the noise
ceiling then come from :func:`core.stats.voxel_stats` on those series, and the ROI RDMs, kNN overlap and RDM
agreement from :mod:`core.rsa`, so every number the dashboard shows is consistent with the series it plots.
The cortex entry holds flatmap images, the pixel -> voxel lookup, ROI outlines and a minimal stand-in for
the pycortex WebGL viewer that speaks the same postMessage bridge.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

from core._validation import InputError, check_positive_int
from core.pipeline import schema
from core.testing.synthetic_cortex import write_cortex_assets
from core.vocabulary import DEFAULT_BINS, PAIR, BinScheme

__all__ = ["SYNTHETIC_ROI_NAMES", "make_synthetic_results"]

#: ROI names of the synthetic cortex, in the order of the ``roi`` codes (0 = no ROI), as pycortex S1 sorts them.
SYNTHETIC_ROI_NAMES = ["other", "EBA", "FFA", "OFA", "OPA", "PPA", "RSC", "V1", "V2", "V3"]
_EARLY = ("V1", "V2", "V3")
_OBJECT = ("EBA", "FFA", "OFA", "OPA", "PPA", "RSC")
# Centre (u lateral from the medial edge, v anterior from the occipital pole, both in [-1, 1]) and radius of
# the object/scene ROIs on each synthetic hemisphere; V1-V3 are bands around the occipital pole instead.
_ROI_DISCS = {"OFA": (0.45, -0.45, 0.14), "FFA": (0.30, -0.05, 0.16), "EBA": (0.75, -0.30, 0.14),
              "PPA": (0.05, 0.10, 0.15), "OPA": (0.70, -0.70, 0.13), "RSC": (-0.35, 0.30, 0.14)}
_POLE = (0.0, -1.0)
_BANDS = {"V1": (0.0, 0.28), "V2": (0.28, 0.45), "V3": (0.45, 0.62)}
_MODES = ("on", "off", "uniform")
_THUMB = 96
_FEATURE_DIM = 32


def make_synthetic_results(out, *, n_voxels: int = 2000, n_test: int = 60, k: int = 15, seed: int = 0,
                           with_assets: bool = True, rsa_voxels: str = "union", flatmap_height: int = 256,
                           with_thumbnails: bool = True, bin_edges=DEFAULT_BINS.edges) -> Path:
    """Write a finished run made of synthetic arrays into a results folder.

    Parameters
    ----------
    out : str or Path
        Results folder (created if missing); the run lands in ``out/<run_id>``.
    n_voxels : int
        Number of voxels (at least 200, so every ROI has voxels).
    n_test : int
        Number of test samples of every series (at least 10).
    k : int
        Neighbours per voxel in the kNN graphs (the voxel itself included, as in the pipeline).
    seed : int
        Seeds everything; the same arguments give the same folder.
    with_assets : bool
        Write the ``cortex`` entry (flatmaps, lookup, ROI outlines, minimal viewer). Without it the run
        looks like one whose dataset has no cortex mapping.
    rsa_voxels : {"union", "all"}
        Voxels embedded in the kNN graphs and UMAPs: significant in either condition (the pipeline's
        default) or every voxel (the worst case for the dashboard's payload).
    flatmap_height : int
        Height in pixels of the flatmap images and lookup.
    with_thumbnails : bool
        Write the ``thumbnails`` entry (stimulus thumbnails and attention overlays).
    bin_edges : sequence of 4 floats
        The run's ``stats.bin_edges`` (checked as the config checks them): the bins of the stats, the
        summary, the flatmaps and the viewer.

    Returns
    -------
    Path
        The results folder ``out`` (what ``open_results`` and ``python -m dashboard --results`` take).
    """
    from core.config import config_to_dict, make_config
    from core.pipeline.store import ResultsStore
    from core.pipeline.summary import build_summary, write_json_atomic

    n_voxels = check_positive_int(n_voxels, field="n_voxels", source="make_synthetic_results")
    n_test = check_positive_int(n_test, field="n_test", source="make_synthetic_results")
    k = check_positive_int(k, field="k", source="make_synthetic_results")
    if n_voxels < 200:
        raise InputError(f"expected at least 200 voxels so every synthetic ROI has some, found {n_voxels}",
                         source="make_synthetic_results", field="n_voxels")
    if n_test < 10:
        raise InputError(f"expected at least 10 test samples, found {n_test}", source="make_synthetic_results",
                         field="n_test")
    if rsa_voxels not in ("union", "all"):
        raise InputError(f"expected 'union' or 'all', found {rsa_voxels!r}", source="make_synthetic_results",
                         field="rsa_voxels")
    out = Path(out)
    n_train = 2 * n_test
    cfg = make_config("demo", {
        "data": {"subject": "synthetic", "transform": "synthetic", "mask": "synthetic"},
        "simulation": {"n_train": n_train, "n_test": n_test, "n_voxels": n_voxels, "seed": seed},
        "rsa": {"k": k, "voxels": rsa_voxels}, "umap": {"n_neighbors": min(15, k)},
        "stats": {"bin_edges": [float(e) for e in bin_edges]},
    })
    scheme = BinScheme.from_config(cfg)
    cfg = dataclasses.replace(cfg, preset="synthetic")
    # Only other edges extend the key: a run with the default bins has the same id however they are passed.
    key = [n_voxels, n_test, k, seed, with_assets, rsa_voxels, flatmap_height, with_thumbnails]
    if scheme != DEFAULT_BINS:
        key.append(list(scheme.edges))
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:10]
    run_id = f"synthetic-{digest}"
    rng = np.random.default_rng(seed)

    geom = _geometry(n_voxels, rng)
    series = _series(geom, n_test, rng)
    stages: dict[str, tuple[dict, dict]] = {}
    stages["dataset"] = ({**{schema.name("dataset", f): geom[f] for f in schema.GEOMETRY_FIELDS},
                          **{schema.name("dataset", f"truth_{k_}"): v for k_, v in series["truth"].items()}},
                         {"simulated": True, "synthetic": True, "roi_names": SYNTHETIC_ROI_NAMES,
                          "n_train": n_train, "n_test": n_test, "n_voxels": n_voxels, "n_repeats": 2,
                          "name": f"synthetic:{run_id}",
                          "cortex": {"subject": "synthetic", "transform": "synthetic", "mask": "synthetic"}})
    features, attention = _features(n_train, n_test, rng)
    stages["features"] = ({**features, schema.name("features", "attention_test"): attention},
                          {"n_train": n_train, "layer": "pool", "input_size": [112, 112], "weights": "synthetic",
                           "modes": list(_MODES)})
    if with_thumbnails:
        stages["thumbnails"] = (_thumbnails(attention, rng), {"size": _THUMB, "n": n_test})
    stats_arrays, stats_meta = _stats(series, cfg, rng)        # also adds the cv_* scores to the encoding
    stages["encoding"] = (series["encoding"], {"alphas": np.logspace(-2, 8, 21).tolist(),
                                               "conditions": {m: {"solver": "synthetic"} for m in _MODES}})
    stages["stats"] = (stats_arrays, stats_meta)
    stages["contrasts"] = _contrasts(series, geom)
    stages["joint"] = _joint(series)
    stages["rsa"] = _rsa(series, stats_arrays, geom, k=k, rule=rsa_voxels, rng=rng)
    stages["umap"] = (_umap(stages["rsa"][0], geom, rng), {"synthetic": True})

    store = ResultsStore(out)
    entries, keys = {}, {}
    # What the pipeline's config would fix (k, the conditions); the other sizes come from the entries before.
    dims = {"k": k}
    try:
        for stage, (arrays, meta) in stages.items():
            key = f"{digest}{stage[:2]}"
            entries[stage] = store.commit(store.new_workdir(stage, key), stage, key, arrays, meta, inputs=entries,
                                          dims=dims, conditions=_MODES)
            keys[stage] = key
        if with_assets:
            key = f"{digest}cx"
            workdir = store.new_workdir("cortex", key)
            cortex_meta = write_cortex_assets(workdir, geom, stats_arrays, flatmap_height, rng, scheme,
                                              SYNTHETIC_ROI_NAMES)
            entries["cortex"] = store.commit(workdir, "cortex", key, {}, cortex_meta, inputs=entries, dims=dims,
                                             conditions=_MODES)
            keys["cortex"] = key
        summary = build_summary(cfg, run_id, entries, device="cpu", timings={stage: 0.0 for stage in entries},
                                peak_rss_mb=0.0, versions={"numpy": np.__version__})
        summary["stage_keys"] = keys
        store.register_run(run_id, config_to_dict(cfg), keys)
        write_json_atomic(out / run_id / "summary.json", summary)
    finally:
        store.close()
    return out


# --------------------------------------------------------------------------------------------- geometry
def _geometry(n_voxels: int, rng: np.random.Generator) -> dict:
    """Voxels in two elliptical sheets (hemispheres), a few layers thick, with ROIs on each sheet."""
    n_layers = 4
    # Cells inside an ellipse are pi/4 of the box; 1.6x more cells than voxels leaves gaps like a real mask.
    cells_needed = int(np.ceil(1.6 * n_voxels / n_layers / (np.pi / 4)))
    nj = int(np.ceil(np.sqrt(cells_needed / 2 / 0.9)))
    ni_h = int(np.ceil(0.9 * nj))            # per hemisphere: slightly taller than wide
    i_l, j = np.meshgrid(np.arange(ni_h), np.arange(nj), indexing="ij")
    u = (i_l + 0.5) / ni_h * 2 - 1
    v = (j + 0.5) / nj * 2 - 1
    inside = (u ** 2 + v ** 2) <= 1.0
    sheet = np.flatnonzero(inside.ravel())
    n_cells = 2 * sheet.size * n_layers
    if n_cells < n_voxels:
        raise InputError(f"internal sizing error: {n_cells} cells for {n_voxels} voxels",
                         source="make_synthetic_results")
    # Cell c = (hemisphere, sheet position, layer) in C order, so voxel order is volume order, as in a mask.
    pick = np.sort(rng.choice(n_cells, n_voxels, replace=False))
    hemi_idx, sheet_pos, layer = np.unravel_index(pick, (2, sheet.size, n_layers))
    il, jj = np.unravel_index(sheet[sheet_pos], (ni_h, nj))
    # The lateral surface is at the volume's outer edge (low i left, high i right), the medial one at the middle.
    i = np.where(hemi_idx == 0, ni_h - 1 - il, ni_h + il)
    ijk = np.stack([i, jj, layer], axis=1).astype(np.int16)
    uu = (il + 0.5) / ni_h * 2 - 1          # lateral coordinate (-1 medial .. 1 lateral)
    vv = (jj + 0.5) / nj * 2 - 1            # -1 occipital pole .. 1 anterior
    spacing = 2.0
    gap = 6.0
    # On the flatmap the hemispheres sit side by side, medial edges facing each other across a gap.
    x_flat = np.where(hemi_idx == 0, -1, 1) * (gap + (uu + 1) * ni_h * spacing / 2)
    jitter = rng.uniform(-0.35, 0.35, (n_voxels, 2)) * spacing
    flat_xy = np.stack([x_flat, vv * nj * spacing / 2], axis=1) + jitter
    roi = np.zeros(n_voxels, dtype=np.int16)
    # ROI membership on the sheet, the pole ROIs first so the object discs paint over their edges.
    pole_d = np.hypot(uu - _POLE[0], vv - _POLE[1])
    for name, (lo, hi) in _BANDS.items():
        roi[(pole_d >= lo) & (pole_d < hi)] = SYNTHETIC_ROI_NAMES.index(name)
    for name, (cu, cv, rad) in _ROI_DISCS.items():
        roi[np.hypot(uu - cu, vv - cv) < rad] = SYNTHETIC_ROI_NAMES.index(name)
    unmapped = rng.random(n_voxels) < 0.01
    return {"ijk": ijk, "flat_xy": flat_xy.astype(np.float32), "hemi": hemi_idx.astype(np.int8), "roi": roi,
            "unmapped": unmapped, "xyz_mm": (ijk.astype(np.float32) * 2.5 - 60.0).astype(np.float32),
            "uv": np.stack([uu, vv], axis=1), "spacing": spacing}


# --------------------------------------------------------------------------------------------- series
def _unit_columns(a: np.ndarray) -> np.ndarray:
    a = a - a.mean(0)
    return a / np.maximum(np.sqrt((a * a).mean(0)), 1e-12)


def _series(geom: dict, n_test: int, rng: np.random.Generator) -> dict:
    """Measured (two repeats) and predicted test series with ROI-dependent signal and on/off dominance."""
    n = len(geom["roi"])
    names = np.asarray(SYNTHETIC_ROI_NAMES)[geom["roi"]]
    early = np.isin(names, _EARLY)
    objects = np.isin(names, _OBJECT)
    n_latent = 10
    latent = rng.standard_normal((n_test, n_latent))
    # Each ROI has its own response profile over the latent sources, plus a smooth drift across the sheet.
    centres = rng.standard_normal((len(SYNTHETIC_ROI_NAMES), n_latent))
    drift = rng.standard_normal((2, n_latent))
    w = centres[geom["roi"]] + geom["uv"] @ drift * 0.8 + 0.6 * rng.standard_normal((n, n_latent))
    true = _unit_columns(latent @ w.T)                                       # (n_test, n)

    signal = np.where(early, 0.30, np.where(objects, 0.22, 0.03)) * np.exp(0.35 * rng.standard_normal(n))
    null = ~early & ~objects & (rng.random(n) < 0.3)
    signal = np.clip(np.where(null, 0.0, signal), 0.0, 0.8)
    repeats = np.stack([np.sqrt(signal) * true + np.sqrt(1 - signal) * np.sqrt(2) * rng.standard_normal((n_test, n))
                        for _ in range(2)])
    measured = repeats.mean(0)

    # How faithfully each feature set reproduces the true response: attention on wins in object/scene ROIs,
    # off in early visual cortex; uniform (same gain, no focus) sits in between.
    fidelity = {
        "on": np.where(objects, 0.92, np.where(early, 0.70, 0.80)),
        "off": np.where(objects, 0.66, np.where(early, 0.92, 0.80)),
    }
    fidelity["uniform"] = (fidelity["on"] + fidelity["off"]) / 2
    # With attention on, the object/scene ROIs share more of one profile: wider-range similarity.
    shared = _unit_columns(latent @ centres[[SYNTHETIC_ROI_NAMES.index(r) for r in _OBJECT]].mean(0)[:, None])
    encoding: dict[str, np.ndarray] = {schema.name("encoding", "measured"): np.ascontiguousarray(measured.T,
                                                                                                  dtype=np.float32)}
    for m in _MODES:
        base = true
        if m == "on":
            base = _unit_columns(np.where(objects, 0.6 * true + 0.4 * shared, true))
        c = fidelity[m]
        pred = c * base + np.sqrt(1 - c ** 2) * rng.standard_normal((n_test, n))
        pred = pred * (0.5 + rng.random(n))                                  # predictions have their own scale
        encoding[schema.name("encoding", "pred", m)] = np.ascontiguousarray(pred.T, dtype=np.float32)
        encoding[schema.name("encoding", "alpha", m)] = (10.0 ** rng.uniform(0, 6, n)).astype(np.float32)
    # The partition of the signal into on-only, off-only and shared parts, consistent with the fidelities:
    # the condition that reproduces the response better owns a unique part.
    gap = fidelity["on"] ** 2 - fidelity["off"] ** 2
    unique_on, unique_off = signal * np.clip(gap, 0, None), signal * np.clip(-gap, 0, None)
    truth = {"signal_fraction": signal.astype(np.float32), "on_share": np.where(objects, 0.7, np.where(early, 0.3, 0.5)
                                                                               ).astype(np.float32),
             "unique_on": unique_on.astype(np.float32), "unique_off": unique_off.astype(np.float32),
             "shared": (signal - unique_on - unique_off).astype(np.float32),
             "delta_r": (np.sqrt(signal) * (fidelity["on"] - fidelity["off"])).astype(np.float32),
             "ar_phi": np.full(n, 0.0, np.float32),
             "dominant_on": fidelity["on"] > fidelity["off"], "null": null,
             "null_contrast": ~null & (fidelity["on"] == fidelity["off"]), "early_visual": early,
             "object_scene": objects}
    return {"encoding": encoding, "repeats": repeats, "measured": measured, "truth": truth}


def _stats(series: dict, cfg, rng: np.random.Generator) -> tuple[dict, dict]:
    from core.stats import voxel_stats
    arrays, meta = {}, {"conditions": {}}
    enc = series["encoding"]
    for m in _MODES:
        st = voxel_stats(np.asarray(enc[schema.name("encoding", "pred", m)]).T, series["measured"], rule=cfg.stats.rule,
                         level=cfg.stats.level, edges=tuple(cfg.stats.bin_edges), Y_test_repeats=series["repeats"])
        for key, value in st.items():
            if isinstance(value, np.ndarray):
                arrays[schema.name("stats", key, m)] = value
        meta["conditions"][m] = {key: v for key, v in st.items() if not isinstance(v, np.ndarray)}
        # Cross-validated training scores track the test r with some scatter, as real ones do.
        cv = 0.8 * st["r"] + 0.05 * rng.standard_normal(st["r"].size)
        enc[schema.name("encoding", "cv", m)] = cv.astype(np.float32)
    return arrays, meta


def _contrasts(series: dict, geom: dict) -> tuple[dict, dict]:
    """The contrasts stage from the synthetic series, by the pipeline's own test (fewer resamples)."""
    from core.contrasts import paired_contrasts, summarise_outcomes, tracked_voxels
    from core.vocabulary import CONTRAST_LABELS, CONTRASTS
    enc = series["encoding"]
    measured = np.asarray(enc[schema.name("encoding", "measured")])
    preds = {m: np.asarray(enc[schema.name("encoding", "pred", m)]) for m in _MODES}
    roi = np.asarray(geom["roi"])
    rows, members = tracked_voxels(roi, measured.shape[0], 0)
    res = paired_contrasts(measured, preds, n_boot=200, seed=0, track=rows)
    arrays = {schema.name("contrasts", f, k): res[f"{f}_{k}"] for k in res["contrasts"]
              for f in ("delta", "delta_lo", "delta_hi", "p", "q", "outcome", "valid")}
    meta: dict = {k: res[k] for k in ("block_length", "block_length_auto", "n_boot", "ci", "level")}
    meta.update(synthetic=True, test="circular block bootstrap over test samples", contrasts={})
    for k in res["contrasts"]:
        meta["contrasts"][k] = {
            "label": CONTRAST_LABELS[k], "conditions": list(CONTRASTS[k]),
            "all": summarise_outcomes(res, k, np.arange(measured.shape[0]), members["all"], res["ci"]),
            "rois": {SYNTHETIC_ROI_NAMES[g]: summarise_outcomes(res, k, np.flatnonzero(roi == g), members[g], res["ci"])
                     for g in sorted(x for x in members if x != "all")}}
    return arrays, meta


def _joint(series: dict) -> tuple[dict, dict]:
    """A joint stage from the synthetic series: per voxel the convex mix of two conditions' predictions (weights
    0, 0.25, .., 1) with the best test R^2 (standing in for the cross-validated banded ridge), then the
    pipeline's own partition and unique-variance test (fewer resamples); on + off, and on + uniform."""
    from core.encoding.banded import partition_variance, r2_per_voxel
    from core.partition import unique_variance_test
    enc = series["encoding"]
    y = np.asarray(enc[schema.name("encoding", "measured")], dtype=np.float64)

    def fitted(p):
        # A prediction on the response's scale, shrunk as least squares would (R^2 = r^2): the synthetic
        # predictions are unit series, whose raw R^2 would say nothing.
        z = (p - p.mean(1, keepdims=True)) / np.where((sd := p.std(1, keepdims=True)) > 0, sd, 1.0)
        yc = y - y.mean(1, keepdims=True)
        r = (z * yc).mean(1, keepdims=True) / np.where((sy := y.std(1, keepdims=True)) > 0, sy, 1.0)
        return y.mean(1, keepdims=True) + r * sy * z
    raw = {m: np.asarray(enc[schema.name("encoding", "pred", m)], dtype=np.float64) for m in _MODES}
    gammas = np.linspace(1.0, 0.0, 5)

    def pair(a, b):
        scores = np.stack([r2_per_voxel(fitted(g * raw[a] + (1 - g) * raw[b]).T, y.T) for g in gammas])
        best = np.argmax(np.nan_to_num(scores, nan=-np.inf), axis=0)
        g = gammas[best][:, None]
        joint = fitted(g * raw[a] + (1 - g) * raw[b])
        single = {m: fitted(raw[m]) for m in (a, b)}
        r2 = {"joint": r2_per_voxel(joint.T, y.T), **{m: r2_per_voxel(single[m].T, y.T) for m in (a, b)}}
        part = partition_variance(r2["joint"], r2[a], r2[b])
        test = unique_variance_test(y, joint, single[a], single[b], n_boot=200, seed=0)
        return dict(joint=joint, best=best, scores=scores, r2=r2, part=part, test=test)

    f32 = lambda a: np.asarray(a, dtype=np.float32)  # noqa: E731
    name = lambda field: schema.name("joint", field)  # noqa: E731
    j, u = pair("on", "off"), pair("on", "uniform")
    every = np.ones(y.shape[0], bool)
    arrays = {name("pred"): f32(j["joint"]), name("gamma_on"): f32(gammas[j["best"]]),
              name("alpha"): np.ones(y.shape[0], np.float32), name("cv"): f32(np.nan_to_num(j["scores"].max(0))),
              **{name(f"r2_{k}"): f32(v) for k, v in j["r2"].items()},
              name("unique_on"): f32(j["part"]["unique_a"]), name("unique_off"): f32(j["part"]["unique_b"]),
              name("shared"): f32(j["part"]["shared"]), name("fitted"): every,
              **{name(f"{k}_unique_{m}"): np.asarray(j["test"][f"{k}_{x}"], dtype=np.float64)
                 for k in ("p", "q") for m, x in (("on", "a"), ("off", "b"))},
              name("gamma_on_uniform"): f32(gammas[u["best"]]), name("r2_on_uniform"): f32(u["r2"]["joint"]),
              name("r2_uniform"): f32(u["r2"]["uniform"]), name("unique_on_vs_uniform"): f32(u["part"]["unique_a"]),
              name("unique_uniform_vs_on"): f32(u["part"]["unique_b"]),
              name("p_unique_on_vs_uniform"): np.asarray(u["test"]["p_a"], dtype=np.float64),
              name("q_unique_on_vs_uniform"): np.asarray(u["test"]["q_a"], dtype=np.float64),
              name("fitted_uniform"): every}
    test = j["test"]
    meta = {"synthetic": True, "gammas_on": gammas.tolist(),
            "share_by_gamma": (np.bincount(j["best"], minlength=5) / j["best"].size).tolist(),
            "voxels": "all", "n_fitted": int(y.shape[0]),
            "test": {"what": "one-sided circular block bootstrap of unique variance > 0 over test samples",
                     **{k: test[k] for k in ("block_length", "block_length_auto", "df", "n_boot", "level")},
                     "n_significant_on": int(test["significant_a"].sum()),
                     "n_significant_off": int(test["significant_b"].sum())},
            "uniform": {"synthetic": True, "n_significant_on": int(u["test"]["significant_a"].sum())}}
    return arrays, meta


# --------------------------------------------------------------------------------------------- rsa + umap
def _knn(z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """kNN by correlation distance: candidates from a 10-D PCA of the unit series, exact distances, self first.

    Parameters
    ----------
    z : array of shape (n_test, n)
        Centred, unit-RMS series; the correlation of columns a, b is ``z[:, a] @ z[:, b] / n_test``.
    """
    from scipy.spatial import cKDTree
    n_test, n = z.shape
    k_eff = min(k, n)
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    scores = vt[:10].T * np.sqrt(n)                                          # (n, <=10)
    _, cand = cKDTree(scores).query(scores, k=min(n, 3 * k_eff))
    cand = np.atleast_2d(cand)
    dist = np.empty(cand.shape)
    step = max(1, 2 ** 22 // (n_test * cand.shape[1]))                      # bounds the gathered block
    for start in range(0, n, step):
        c = cand[start:start + step]
        dist[start:start + step] = 1.0 - np.einsum("tn,tnc->nc", z[:, start:start + step], z[:, c]) / n_test
    dist[cand == np.arange(n)[:, None]] = -1.0                               # self always first
    order = np.argsort(dist, axis=1, kind="stable")[:, :k_eff]
    idx = np.take_along_axis(cand, order, 1)
    dist = np.take_along_axis(dist, order, 1)
    dist[:, 0] = 0.0
    return idx.astype(np.int64), np.clip(dist, 0.0, 2.0).astype(np.float32)


def _rsa(series: dict, st: dict, geom: dict, *, k: int, rule: str, rng) -> tuple[dict, dict]:
    from core import rsa
    sig = {m: np.asarray(st[schema.name("stats", "significant", m)]) & np.asarray(st[schema.name("stats", "valid", m)])
           for m in PAIR}
    voxels = rsa.select_voxels(sig, rule=rule)
    arrays: dict[str, np.ndarray] = {}
    meta: dict = {"conditions": {}, "synthetic": True, "knn": "approximate candidates, exact distances"}
    zs = {}
    for m in PAIR:
        arrays[schema.name("rsa", "voxels", m)] = voxels.astype(np.int64)
        s = np.asarray(series["encoding"][schema.name("encoding", "pred", m)])[voxels].T.astype(np.float64)
        zs[m] = s
        arrays[schema.name("rsa", "knn_idx", m)], arrays[schema.name("rsa", "knn_dist", m)] = _knn(_unit_columns(s), k)
        arrays[schema.name("rsa", "roi_rdm", m)], arrays[schema.name("rsa", "roi_counts")] = rsa.roi_block_rdm(
            s, np.asarray(geom["roi"])[voxels].astype(np.int64), n_rois=len(SYNTHETIC_ROI_NAMES))
        meta["conditions"][m] = {"n_voxels": int(voxels.size)}
    arrays[schema.name("rsa", "knn_jaccard")] = rsa.knn_jaccard(arrays[schema.name("rsa", "knn_idx", "on")],
                                                         arrays[schema.name("rsa", "knn_idx", "off")])
    meta["agreement"] = rsa.rdm_agreement(zs["on"], zs["off"], n_pairs=min(200_000, voxels.size * 20),
                                          n_boot=200, seed=0, device="cpu", n_boot_samples=100, n_boot_voxels=100,
                                          n_pairs_resampled=5000)
    enc = series["encoding"]
    preds = {m: np.asarray(enc[schema.name("encoding", "pred", m)])[voxels].T for m in _MODES}
    meta["agreement"]["reference"] = rsa.rdm_reference_scales(
        preds, np.asarray(series["measured"])[:, voxels], np.asarray(series["repeats"])[:, :, voxels],
        n_pairs=20_000, seed=0)
    return arrays, meta


def _umap(rsa_arrays: dict, geom: dict, rng: np.random.Generator) -> dict:
    """Clustered 3-D coordinates: one blob per ROI (object/scene blobs closer together with attention on)."""
    out = {}
    for m in PAIR:
        voxels = rsa_arrays[schema.name("rsa", "voxels", m)]
        roi = np.asarray(geom["roi"])[voxels]
        centres = rng.normal(0, 6.0, (len(SYNTHETIC_ROI_NAMES), 3))
        if m == "on":
            obj = [SYNTHETIC_ROI_NAMES.index(r) for r in _OBJECT]
            centres[obj] = 0.35 * centres[obj] + 0.65 * centres[obj].mean(0)
        # A voxel's neighbours pull it towards them, so the kNN graph and the layout agree.
        coords = centres[roi] + rng.normal(0, 1.0, (voxels.size, 3))
        nbr = rsa_arrays[schema.name("rsa", "knn_idx", m)][:, 1:]
        if nbr.shape[1]:
            coords = 0.5 * coords + 0.5 * coords[nbr].mean(1)
        out[schema.name("umap", "umap", m)] = coords.astype(np.float32)
    return out


# --------------------------------------------------------------------------------------------- stimuli
def _features(n_train: int, n_test: int, rng) -> tuple[dict, np.ndarray]:
    n = n_train + n_test
    base = rng.standard_normal((n, _FEATURE_DIM)).astype(np.float32)
    feats = {schema.name("features", "X", m): (base + 0.3 * rng.standard_normal((n, _FEATURE_DIM))).astype(np.float32)
             for m in _MODES}
    yy, xx = np.mgrid[0:7, 0:7]
    centre = rng.uniform(1, 5, (n_test, 2))
    attention = np.exp(-((xx[None] - centre[:, 0, None, None]) ** 2 + (yy[None] - centre[:, 1, None, None]) ** 2)
                       / 3.0).astype(np.float32)
    return feats, attention


def _thumbnails(attention: np.ndarray, rng) -> dict:
    """Procedural scenes (a shape on a gradient) with their attention maps overlaid."""
    from PIL import Image, ImageDraw

    from core.model.overlay import attention_overlay
    n = attention.shape[0]
    thumbs = np.empty((n, _THUMB, _THUMB, 3), np.uint8)
    overlays = np.empty_like(thumbs)
    ramp = np.linspace(0, 1, _THUMB)[:, None, None]
    for i in range(n):
        top, bottom = rng.integers(40, 220, 3), rng.integers(40, 220, 3)
        bg = (top * (1 - ramp) + bottom * ramp).repeat(_THUMB, axis=1).astype(np.uint8)
        img = Image.fromarray(bg)
        draw = ImageDraw.Draw(img)
        cy, cx = np.unravel_index(np.argmax(attention[i]), attention[i].shape)
        x, y = (cx + 0.5) / attention.shape[2] * _THUMB, (cy + 0.5) / attention.shape[1] * _THUMB
        r = float(rng.uniform(10, 22))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if i % 3 == 0:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
        elif i % 3 == 1:
            draw.rectangle([x - r, y - r, x + r, y + r], fill=colour)
        else:
            draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=colour)
        thumbs[i] = np.asarray(img)
        overlays[i] = attention_overlay(thumbs[i], attention[i], alpha=0.4)
    return {schema.name("thumbnails", "thumbs"): thumbs, schema.name("thumbnails", "overlays"): overlays}
