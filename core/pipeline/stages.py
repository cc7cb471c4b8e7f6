"""The stage functions of the pipeline, each a function of a :class:`~core.pipeline.stage.Context`.

Every stage returns ``(arrays, meta)``; the pipeline caches them. Arrays are named as the results schema
declares them (:func:`core.pipeline.schema.name`). Voxel series are stored voxel-major (``(n_voxels, n_test)``)
so the dashboard reads one voxel's series as one contiguous slice.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from core._validation import InputError
from core.config import RunConfig
from core.pipeline import schema
from core.pipeline.stage import Context, Stage
from core.vocabulary import CONDITIONS, PAIR, BinScheme

__all__ = ["STAGES"]


from core.cortex.assets import _cortex_assets
from core.pipeline.inputs import (
    _cortex_spec,
    _extract,
    _input_files_fingerprint,
    all_stimuli,
    build_model,
    check_user_dataset,
    load_dataset,
    open_run_stimuli,
    run_geometry,
    simulated_dataset_dir,
)
from core.pipeline.prewarm import _cortex_warm_marker, _prewarm_cortex, _prewarm_umap, _pycortex_cache, _pycortex_lock


def stage_dataset(ctx: Context):
    """Generate the simulated dataset (or check the user's files) and map voxels onto the cortex."""
    cfg = ctx.cfg
    spec = _cortex_spec(cfg)
    geometry = run_geometry(cfg, ctx.cache_dir)
    meta: dict = {"simulated": cfg.data.kind == "simulated"}
    if cfg.data.kind == "simulated":
        from core.data.simulate import write_simulated_dataset
        sim = cfg.simulation
        if geometry is None:
            raise InputError("the simulated dataset needs a pycortex subject; set data.subject = \"S1\"",
                             field="data.subject")
        model = build_model(cfg)
        feature_seconds = []

        def feature_fn(images):
            # All configured modes in one pass (the trunk runs once); the features stage then hits the cache.
            t0 = time.perf_counter()
            out = _extract(cfg, model, images, ctx.cache_dir, ctx.device, tuple(cfg.features.modes),
                           ctx.progress).features
            feature_seconds.append(time.perf_counter() - t0)
            return out

        folder = write_simulated_dataset(
            simulated_dataset_dir(cfg, ctx.cache_dir), n_train=sim.n_train, n_test=sim.n_test,
            image_size=sim.image_size, geometry=geometry, feature_fn=feature_fn, n_repeats=sim.n_repeats,
            plant_seed=None if sim.subject == 0 else 1_000_003 * sim.subject + sim.seed,
            n_latent=sim.n_latent, null_fraction=sim.null_fraction, length_scale=sim.smoothness_mm, seed=sim.seed,
            n_runs=sim.n_runs, tr=sim.tr, hrf=sim.hrf, ar_range=tuple(sim.ar_range),
            null_contrast_fraction=sim.null_contrast_fraction)
        meta["dataset_dir"] = str(folder)
        if feature_seconds:  # the ABN pass inside the simulation (0 entries: the dataset folder existed)
            meta["feature_seconds"] = round(sum(feature_seconds), 3)
    if cfg.data.kind != "simulated":
        check_user_dataset(cfg)
    # Checked above (or written by the simulation just now): the shapes and test responses are all it needs.
    ds = load_dataset(cfg, ctx.cache_dir, train=False, verify=False)
    r = ds.responses
    meta.update(n_train=r.n_train, n_test=int(r.Y_test.shape[0]), n_voxels=r.n_voxels,
                n_repeats=0 if r.Y_test_repeats is None else int(r.Y_test_repeats.shape[0]), name=ds.name,
                response_layout=r.layout, n_file_voxels=r.n_file_voxels or r.n_voxels, n_excluded=r.n_excluded)
    arrays: dict[str, np.ndarray] = {}
    if r.voxel_index is not None:
        arrays[schema.name("dataset", "voxel_index")] = r.voxel_index
        import logging
        logging.getLogger("attnbrain.dataset").warning(
            "%d of the %d voxels of %s are NaN in every test sample: left out (%d kept; the dataset stage's "
            "voxel_index holds their columns in the file)", r.n_excluded, r.n_file_voxels, r.source, r.n_voxels)
    if cfg.data.mapper:
        geometry = run_geometry(cfg, ctx.cache_dir, r.voxel_index, r.n_file_voxels or r.n_voxels)
    if geometry is not None:
        if geometry.n_voxels != r.n_voxels:
            raise InputError(f"{r.n_voxels} voxels in the responses but {geometry.n_voxels} in the cortex mask",
                             source=r.source, field="Y_train")
        arrays.update({schema.name("dataset", f): getattr(geometry, f) for f in schema.GEOMETRY_FIELDS
                       if hasattr(geometry, f)})
        meta["roi_names"] = geometry.roi_names
        meta["cortex"] = {"mapper": cfg.data.mapper} if cfg.data.mapper else \
            {"subject": spec.subject, "transform": spec.transform, "mask": spec.mask}
    for k, v in ds.truth.items():
        arrays[schema.name("dataset", f"truth_{k}")] = v
    return arrays, meta


def stage_features(ctx: Context):
    """ABN features of every stimulus in each mode (train then test rows) and the test attention maps."""
    cfg = ctx.cfg
    n_train, n_test = ctx["dataset"].meta["n_train"], ctx["dataset"].meta["n_test"]
    model = build_model(cfg)
    fs = _extract(cfg, model, all_stimuli(*open_run_stimuli(cfg, ctx.cache_dir, n_train, n_test)), ctx.cache_dir,
                  ctx.device, tuple(cfg.features.modes), ctx.progress)
    arrays = {schema.name("features", "X", m): fs.features[m] for m in cfg.features.modes}
    arrays[schema.name("features", "attention_test")] = fs.attention[n_train:]
    from core.model.abn import weights_fingerprint
    return arrays, {"n_train": int(n_train), "layer": fs.layer, "input_size": list(fs.input_size),
                    "weights": cfg.features.weights, "weights_fingerprint": weights_fingerprint(model),
                    "modes": list(cfg.features.modes)}


THUMB_SIZE = 96


def stage_thumbnails(ctx: Context):
    """Test stimuli as small thumbnails, and the same with the attention map overlaid (JET, alpha 0.4)."""
    from PIL import Image

    from core.model.overlay import attention_overlay
    cfg = ctx.cfg
    _, stimuli = open_run_stimuli(cfg, ctx.cache_dir, ctx["dataset"].meta["n_train"], ctx["dataset"].meta["n_test"])
    att = np.asarray(ctx.array("features", "attention_test"))
    n = len(stimuli)
    thumbs = np.empty((n, THUMB_SIZE, THUMB_SIZE, 3), np.uint8)
    overlays = np.empty_like(thumbs)
    for i in range(n):
        img = np.asarray(Image.fromarray(stimuli[i]).resize((THUMB_SIZE, THUMB_SIZE), Image.BILINEAR))
        thumbs[i] = img
        overlays[i] = attention_overlay(img, att[i], alpha=0.4)
    arrays = {schema.name("thumbnails", "thumbs"): thumbs, schema.name("thumbnails", "overlays"): overlays}
    return arrays, {"size": THUMB_SIZE, "n": n}


def _alphas(cfg: RunConfig) -> np.ndarray:
    e = cfg.encoding
    return np.logspace(e.alpha_min_log10, e.alpha_max_log10, e.n_alphas)


def stage_encoding(ctx: Context):
    """Ridge per voxel, alpha by cross-validation, for each feature set; predictions on the test set."""
    import torch

    from core.encoding import VoxelRidgeCV
    cfg = ctx.cfg
    r = load_dataset(cfg, ctx.cache_dir, verify=False).responses
    feats = ctx["features"]
    n_train = feats.meta["n_train"]
    arrays = {schema.name("encoding", "measured"): np.ascontiguousarray(r.Y_test.T)}
    meta = {"alphas": _alphas(cfg).tolist(), "conditions": {}}
    dtype = torch.float64 if cfg.encoding.dtype == "float64" else torch.float32
    for mode in cfg.features.modes:
        X = np.asarray(ctx.array("features", "X", mode))
        model = VoxelRidgeCV(alphas=_alphas(cfg), n_folds=cfg.encoding.n_folds, run_onsets=r.run_onsets,
                             delays=list(cfg.encoding.delays) or None, device=ctx.device, dtype=dtype,
                             progress=ctx.progress, alpha_search=cfg.encoding.alpha_search)
        t0 = time.perf_counter()
        model.fit(X[:n_train], r.Y_train)
        pred = model.predict(X[n_train:])
        seconds = time.perf_counter() - t0
        arrays[schema.name("encoding", "pred", mode)] = np.ascontiguousarray(np.asarray(pred, dtype=np.float32).T)
        arrays[schema.name("encoding", "alpha", mode)] = np.asarray(model.best_alphas_, dtype=np.float32)
        arrays[schema.name("encoding", "cv", mode)] = np.asarray(model.cv_scores_, dtype=np.float32)
        meta["conditions"][mode] = {"solver": getattr(model, "solver_", None), "cv_path": model.cv_path_,
                                    "seconds": round(seconds, 3)}
    return arrays, meta


def stage_stats(ctx: Context):
    """r, p, q, significance and correlation bin per voxel and condition; noise ceiling with repeats; the
    autocorrelation diagnostics (N_eff, the t-test's implied false-positive rate) and their warnings."""
    import logging

    from core.stats import noise_ceiling, voxel_stats
    cfg = ctx.cfg
    responses = load_dataset(cfg, ctx.cache_dir, train=False, verify=False).responses
    Y_test = responses.Y_test
    repeats = responses.Y_test_repeats
    # The ceiling depends on the measured responses only: once for all feature sets.
    ceiling = noise_ceiling(repeats) if repeats is not None else None
    arrays, meta = {}, {"conditions": {}, "warnings": []}
    log = logging.getLogger("attnbrain.stats")
    for mode in cfg.features.modes:
        pred = np.asarray(ctx.array("encoding", "pred", mode)).T
        st = voxel_stats(pred, Y_test, rule=cfg.stats.rule, level=cfg.stats.level,
                         edges=tuple(cfg.stats.bin_edges), Y_test_repeats=repeats, ceiling=ceiling,
                         n_perm=cfg.stats.n_permutations, block=cfg.stats.block_length,
                         alternative=cfg.stats.alternative, ceiling_min_ev=cfg.stats.ceiling_min_ev,
                         device=ctx.device)
        for k, v in st.items():
            if isinstance(v, np.ndarray):
                arrays[schema.name("stats", k, mode)] = v
        meta["conditions"][mode] = {k: v for k, v in st.items() if not isinstance(v, np.ndarray)}
        for w in st["warnings"]:
            log.warning("stats, condition %s: %s", mode, w)
            meta["warnings"].append(f"{mode}: {w}")
    return arrays, meta


def stage_contrasts(ctx: Context):
    """Paired block-bootstrap test of r_a - r_b per voxel for each contrast the run's conditions allow."""
    from core.contrasts import paired_contrasts, summarise_outcomes, tracked_voxels
    from core.vocabulary import CONTRAST_LABELS, CONTRASTS
    cfg, c = ctx.cfg, ctx.cfg.contrasts
    modes = cfg.features.modes
    names = [k for k, (a, b) in CONTRASTS.items() if a in modes and b in modes]
    measured = np.asarray(ctx.array("encoding", "measured"))
    preds = {m: np.asarray(ctx.array("encoding", "pred", m)) for m in {x for k in names for x in CONTRASTS[k]}}
    roi = np.asarray(ctx.array("dataset", "roi")) if ctx.has_array("dataset", "roi") else None
    rows, members = tracked_voxels(roi, measured.shape[0], c.seed)
    t0 = time.perf_counter()
    res = paired_contrasts(measured, preds, contrasts=names, n_boot=c.n_boot, block_length=c.block_length,
                           ci=c.ci, level=c.level, seed=c.seed, track=rows, device=ctx.device)
    seconds = time.perf_counter() - t0
    arrays = {schema.name("contrasts", f, k): res[f"{f}_{k}"] for k in names
              for f in ("delta", "delta_lo", "delta_hi", "p", "q", "outcome", "valid")}
    roi_names = ctx["dataset"].meta.get("roi_names", [])
    meta: dict = {"block_length": res["block_length"], "block_length_auto": res["block_length_auto"],
                  "n_boot": res["n_boot"], "ci": res["ci"], "level": res["level"], "seconds": round(seconds, 3),
                  "test": "circular block bootstrap over test samples (same resampled rows for the measured "
                          "series and both predictions); p from Δr / bootstrap SE against t with n/l - 1 df",
                  "contrasts": {}}
    for k in names:
        entry = {"label": CONTRAST_LABELS[k], "conditions": list(CONTRASTS[k]),
                 "all": summarise_outcomes(res, k, np.arange(measured.shape[0]), members["all"], c.ci)}
        if roi is not None:
            entry["rois"] = {roi_names[g] if g < len(roi_names) else str(g):
                             summarise_outcomes(res, k, np.flatnonzero(roi == g), members[g], c.ci)
                             for g in sorted(x for x in members if x != "all")}
        meta["contrasts"][k] = entry
    return arrays, meta


def _joint_pair(ctx: Context, a: str, b: str, X: dict, r, gammas: np.ndarray) -> tuple[dict, dict]:
    """One two-band joint model over conditions ``a`` and ``b`` (their encoding-stage models the grid's
    vertices), its test R^2 beside theirs, and the one-sided test of each band's unique variance."""
    import torch

    from core.encoding.banded import BandedRidgeCV, cv_screen, r2_per_voxel
    from core.partition import unique_variance_test
    cfg = ctx.cfg
    n_train = ctx["features"].meta["n_train"]
    pred = {m: np.asarray(ctx.array("encoding", "pred", m)).T for m in (a, b)}
    cv = {m: np.asarray(ctx.array("encoding", "cv", m)) for m in (a, b)}
    # The vertices (a alone, b alone) are the encoding stage's models: same folds, alphas, standardisation.
    known = {0: (cv[a], ctx.array("encoding", "alpha", a), pred[a]),
             len(gammas) - 1: (cv[b], ctx.array("encoding", "alpha", b), pred[b])}
    voxels = cv_screen(cv[a], cv[b]) if cfg.joint.voxels == "predicted" else None
    model = BandedRidgeCV(gammas=gammas, alphas=_alphas(cfg), n_folds=cfg.encoding.n_folds, run_onsets=r.run_onsets,
                          delays=list(cfg.encoding.delays) or None, device=ctx.device,
                          dtype=torch.float64 if cfg.encoding.dtype == "float64" else torch.float32,
                          progress=ctx.progress, alpha_search=cfg.encoding.alpha_search)
    t0 = time.perf_counter()
    model.fit([X[a][:n_train], X[b][:n_train]], r.Y_train, X_test=[X[a][n_train:], X[b][n_train:]], known=known,
              voxels=voxels)
    seconds = time.perf_counter() - t0
    r2 = {"joint": r2_per_voxel(model.predictions_, r.Y_test), a: r2_per_voxel(pred[a], r.Y_test),
          b: r2_per_voxel(pred[b], r.Y_test)}
    c = cfg.contrasts                 # the paired tests' bootstrap settings: resamples, blocks, FDR level, seed
    test = unique_variance_test(np.asarray(ctx.array("encoding", "measured")), model.predictions_.T,
                                pred[a].T, pred[b].T, n_boot=c.n_boot, block_length=c.block_length,
                                level=c.level, seed=c.seed)
    fitted = np.zeros(r.Y_test.shape[1], bool)
    fitted[model.fitted_voxels_] = True
    share = np.bincount(model.best_gamma_index_, minlength=len(gammas)) / max(1, model.best_gamma_index_.size)
    out = {"model": model, "r2": r2, "test": test, "fitted": fitted}
    meta = {f"gammas_{a}": gammas[:, 0].tolist(), "share_by_gamma": share.tolist(), "seconds": round(seconds, 3),
            "seconds_by_gamma": [round(x, 3) for x in model.seconds_], "reused": sorted(known),
            "voxels": cfg.joint.voxels, "n_fitted": int(fitted.sum()),
            "test": {"what": "one-sided circular block bootstrap of unique variance > 0 over test samples; "
                             "conservative where the joint model is one of the single models",
                     **{k: test[k] for k in ("block_length", "block_length_auto", "df", "n_boot", "level")},
                     f"n_significant_{a}": int(test["significant_a"].sum()),
                     f"n_significant_{b}": int(test["significant_b"].sum())}}
    return out, meta


def stage_joint(ctx: Context):
    """Banded ridge over the on and off features per voxel (band weight and alpha by cross-validation, the same
    folds, runs and delays as the encoding stage, whose single models are the grid's vertices), the partition of
    the test R^2 into unique-on, unique-off and shared variance; with the uniform-gain condition, a second joint
    model over on + uniform, whose unique-on part is the spatial focus beyond the gain."""
    from core.encoding.banded import band_weight_grid, partition_variance
    cfg = ctx.cfg
    if not cfg.joint.enabled or not {"on", "off"} <= set(cfg.features.modes):
        return {}, {"skipped": "joint.enabled is false" if not cfg.joint.enabled else
                    "the joint model needs both the on and off conditions (features.modes)"}
    r = load_dataset(cfg, ctx.cache_dir, verify=False).responses
    with_uniform = cfg.joint.uniform and "uniform" in cfg.features.modes
    X = {m: np.asarray(ctx.array("features", "X", m)) for m in ("on", "off") + (("uniform",) if with_uniform else ())}
    gammas = band_weight_grid(2, cfg.joint.n_steps)
    f32 = lambda v: np.asarray(v, dtype=np.float32)  # noqa: E731
    f64 = lambda v: np.asarray(v, dtype=np.float64)  # noqa: E731
    name = lambda field: schema.name("joint", field)  # noqa: E731

    fit, meta = _joint_pair(ctx, "on", "off", X, r, gammas)
    model, r2, test = fit["model"], fit["r2"], fit["test"]
    part = partition_variance(r2["joint"], r2["on"], r2["off"])
    arrays = {name("pred"): np.ascontiguousarray(model.predictions_.T), name("gamma_on"): f32(model.best_gammas_[:, 0]),
              name("alpha"): f32(model.best_alphas_), name("cv"): f32(model.cv_scores_),
              **{name(f"r2_{k}"): f32(v) for k, v in r2.items()},
              name("unique_on"): f32(part["unique_a"]), name("unique_off"): f32(part["unique_b"]),
              name("shared"): f32(part["shared"]), name("fitted"): fit["fitted"],
              **{name(f"{k}_unique_{m}"): f64(test[f"{k}_{x}"])
                 for k in ("p", "q") for m, x in (("on", "a"), ("off", "b"))}}
    meta["negative_estimates"] = ("kept: unique and shared variance are differences of test R^2 and go below 0 "
                                  "with noise")
    del fit, model
    if with_uniform:
        fit, meta_u = _joint_pair(ctx, "on", "uniform", X, r, gammas)
        r2u, test_u = fit["r2"], fit["test"]
        part_u = partition_variance(r2u["joint"], r2u["on"], r2u["uniform"])
        arrays.update({name("gamma_on_uniform"): f32(fit["model"].best_gammas_[:, 0]),
                       name("r2_on_uniform"): f32(r2u["joint"]), name("r2_uniform"): f32(r2u["uniform"]),
                       name("unique_on_vs_uniform"): f32(part_u["unique_a"]),
                       name("unique_uniform_vs_on"): f32(part_u["unique_b"]),
                       name("p_unique_on_vs_uniform"): f64(test_u["p_a"]),
                       name("q_unique_on_vs_uniform"): f64(test_u["q_a"]), name("fitted_uniform"): fit["fitted"]})
        meta["uniform"] = meta_u
    else:
        meta["uniform"] = {"skipped": "joint.uniform is false" if not cfg.joint.uniform else
                           "no uniform condition in features.modes"}
    return arrays, meta


def _significant(ctx: Context, modes) -> dict[str, np.ndarray]:
    """The voxels significant with r > 0 (core.stats.voxel_stats); with ``rsa.include_negative`` (the study's
    voxel set: every two-sided p <= 0.01) also those significant with r < 0."""
    sig = {m: np.asarray(ctx.array("stats", "significant", m)) for m in modes}
    if ctx.cfg.rsa.include_negative:
        sig = {m: s | np.asarray(ctx.array("stats", "significant_negative", m)) for m, s in sig.items()}
    return sig


def stage_rsa(ctx: Context):
    """kNN graph of the correlation-distance RDM per condition, and RDM summaries."""
    from core import rsa
    cfg = ctx.cfg
    dset = ctx["dataset"]
    modes = [m for m in PAIR if m in cfg.features.modes]
    sig = _significant(ctx, modes)
    r = None if cfg.rsa.include_negative else {m: np.asarray(ctx.array("stats", "r", m)) for m in modes}
    valid = np.ones(sig[modes[0]].shape, bool)
    for m in modes:
        valid &= np.asarray(ctx.array("stats", "valid", m))
    arrays, meta = {}, {"conditions": {}}
    shared = None
    if cfg.rsa.voxels != "significant":
        shared = rsa.select_voxels(sig, rule=cfg.rsa.voxels, r=r)
        shared = shared[valid[shared]]
    series = {}
    for m in modes:
        index = shared if shared is not None else rsa.select_voxels(sig, rule="significant", condition=m, r=r)
        index = index[valid[index]]
        arrays[schema.name("rsa", "voxels", m)] = index.astype(np.int64)
        if index.size <= cfg.rsa.k:
            meta["conditions"][m] = {"n_voxels": int(index.size), "skipped": "too few voxels for the kNN graph"}
            continue
        s = np.asarray(ctx.array("encoding", "pred", m))[index].T
        series[m] = s
        t0 = time.perf_counter()
        idx, dist = rsa.knn_correlation(s, k=cfg.rsa.k, device=ctx.device, progress=ctx.progress)
        arrays[schema.name("rsa", "knn_idx", m)], arrays[schema.name("rsa", "knn_dist", m)] = idx, dist
        meta["conditions"][m] = {"n_voxels": int(index.size), "knn_s": round(time.perf_counter() - t0, 3)}
        if ctx.has_array("dataset", "roi"):
            block, counts = rsa.roi_block_rdm(s, np.asarray(ctx.array("dataset", "roi"))[index],
                                              n_rois=len(dset.meta["roi_names"]))
            arrays[schema.name("rsa", "roi_rdm", m)], arrays[schema.name("rsa", "roi_counts")] = block, counts
    if shared is not None and len(series) == 2:
        on, off = arrays[schema.name("rsa", "knn_idx", "on")], arrays[schema.name("rsa", "knn_idx", "off")]
        arrays[schema.name("rsa", "knn_jaccard")] = rsa.knn_jaccard(on, off)
        meta["agreement"] = rsa.rdm_agreement(series["on"], series["off"], n_pairs=cfg.rsa.n_pairs,
                                              seed=cfg.rsa.seed, device=ctx.device,
                                              n_boot_samples=cfg.rsa.n_boot_samples,
                                              n_boot_voxels=cfg.rsa.n_boot_samples, block_length=cfg.rsa.block_length)
        meta["agreement"]["reference"] = _rdm_reference(ctx, shared, series)
    return arrays, meta


#: Voxel pairs of the RDM agreement's reference scales (bounded at any voxel count).
REFERENCE_PAIRS = 200_000


def _rdm_reference(ctx: Context, voxels: np.ndarray, series: dict) -> dict:
    """The agreement's reference scales on the shared voxels: uniform vs off, each predicted RDM vs the measured
    one, and the measured RDM's split-half ceiling (with repeats)."""
    from core import rsa
    cfg = ctx.cfg
    preds = dict(series)
    if "uniform" in cfg.features.modes:
        preds["uniform"] = np.asarray(ctx.array("encoding", "pred", "uniform"))[voxels].T
    measured = np.asarray(ctx.array("encoding", "measured"))[voxels].T
    repeats = load_dataset(cfg, ctx.cache_dir, train=False, verify=False).responses.Y_test_repeats
    if repeats is not None:
        repeats = np.asarray(repeats)[:, :, voxels]
    return rsa.rdm_reference_scales(preds, measured, repeats, n_pairs=REFERENCE_PAIRS, seed=cfg.rsa.seed)


def stage_umap(ctx: Context):
    """3-D UMAP of each condition's kNN graph (conditions side by side in worker processes when cores allow)."""
    from core.embedding.umap import embed_umap_each
    cfg = ctx.cfg
    modes = [m for m in PAIR if ctx.has_array("rsa", "knn_idx", m)]
    graphs = [(np.asarray(ctx.array("rsa", "knn_idx", m)), np.asarray(ctx.array("rsa", "knn_dist", m))) for m in modes]
    # The predicted series place the graph's disconnected parts relative to each other.
    series = [np.asarray(ctx.array("encoding", "pred", m))[np.asarray(ctx.array("rsa", "voxels", m))].T
              for m in modes]
    embeddings = embed_umap_each(graphs, series=series, n_components=3, n_neighbors=cfg.umap.n_neighbors,
                                 min_dist=cfg.umap.min_dist, random_state=cfg.umap.seed)
    meta = {"trustworthiness": {m: _trustworthiness(s, e, cfg.umap.n_neighbors, seed=cfg.umap.seed or 0)
                                for m, s, e in zip(modes, series, embeddings)}}
    return {schema.name("umap", "umap", m): e for m, e in zip(modes, embeddings)}, meta


#: Voxels in the seeded subsample on which the embedding's trustworthiness is reported.
TRUSTWORTHINESS_VOXELS = 4000


def _trustworthiness(series: np.ndarray, embedding: np.ndarray, k: int, seed: int) -> float:
    """sklearn's trustworthiness (correlation distance in the predicted series, Euclidean in the embedding)
    of a seeded subsample of voxels: 1 = every 3-D neighbourhood is a neighbourhood of the series too."""
    from sklearn.manifold import trustworthiness
    n = embedding.shape[0]
    sub = np.sort(np.random.default_rng([seed, 11]).choice(n, min(n, TRUSTWORTHINESS_VOXELS), replace=False))
    k = min(k, (sub.size - 1) // 2)
    if k < 1:
        return float("nan")
    return float(trustworthiness(series[:, sub].T, embedding[sub], n_neighbors=k, metric="correlation"))


def stage_cortex(ctx: Context):
    """Flatmap images per condition (coloured by bin), the pixel -> voxel lookup, and the WebGL viewer."""
    from core._io import file_lock
    cfg = ctx.cfg
    index = np.asarray(ctx.array("dataset", "voxel_index")) if ctx.has_array("dataset", "voxel_index") else None
    geometry = run_geometry(cfg, ctx.cache_dir, index, ctx["dataset"].meta.get("n_file_voxels"))
    if geometry is None:
        return {}, {"skipped": "no cortex mapping configured (data.subject is empty and no data.mapper)"}
    modes = [m for m in CONDITIONS if m in cfg.features.modes]
    bins = {m: np.asarray(ctx.array("stats", "bin", m)) for m in modes}
    if cfg.data.mapper:
        from core.cortex.flatmap import make_flatmaps
        flat = make_flatmaps(geometry, bins, ctx.workdir, cache_dir=_pycortex_cache(ctx.cache_dir),
                             scheme=BinScheme.from_config(cfg))
        return {}, {"flatmap": _relative_paths(flat, ctx.workdir),
                    "viewer_absent": "the 3-D viewer needs a pycortex subject (its surfaces); this run's cortex is a "
                                     "mapper file (flatmap and ROIs only)"}
    pc_cache = _pycortex_cache(ctx.cache_dir)
    title = f"{ctx.cfg.preset}{' (simulated)' if cfg.data.kind == 'simulated' else ''}"
    # Waits while the run's background preparation (_prewarm_cortex) is still building pycortex's caches.
    with file_lock(_pycortex_lock(ctx.cache_dir)):
        flat, datasets = _cortex_assets(geometry, bins, ctx.workdir, title, pc_cache, BinScheme.from_config(cfg))
        _cortex_warm_marker(cfg, ctx.cache_dir).touch()
    return {}, {"flatmap": _relative_paths(flat, ctx.workdir), "viewer": "viewer", "viewer_datasets": list(datasets)}


def _relative_paths(flat: dict, workdir: Path) -> dict:
    """make_flatmaps' paths relative to the entry folder: the workdir is renamed when the stage commits."""
    rel = lambda p: str(Path(p).relative_to(workdir))  # noqa: E731
    return {k: ({a: rel(b) for a, b in v.items()} if isinstance(v, dict) else rel(v)) for k, v in flat.items()}


STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("dataset", stage_dataset, (), ("data", "simulation", "features.weights", "features.layer",
                                          "features.input_size", "features.seed"),
          "generate or check the dataset; voxel geometry", extra=lambda cfg: _input_files_fingerprint(cfg)),
    Stage("features", stage_features, ("dataset",), ("features",), "ABN features, attention on/off/uniform"),
    Stage("thumbnails", stage_thumbnails, ("dataset", "features"), ("features",), "test thumbnails + attention"),
    Stage("encoding", stage_encoding, ("dataset", "features"), ("encoding",), "per-voxel ridge, CV alpha"),
    Stage("stats", stage_stats, ("dataset", "encoding"), ("stats",), "r, p, q, bins, noise ceiling"),
    Stage("contrasts", stage_contrasts, ("dataset", "encoding"), ("contrasts",),
          "paired test of r_on - r_off (and uniform) per voxel"),
    Stage("joint", stage_joint, ("dataset", "features", "encoding"), ("encoding", "joint", "contrasts"),
          "banded ridge over on + off, unique / shared variance"),
    Stage("rsa", stage_rsa, ("dataset", "encoding", "stats"), ("rsa",), "kNN RDM graph, summaries"),
    Stage("umap", stage_umap, ("rsa", "encoding"), ("umap",), "3-D UMAP per condition",
          prewarm=_prewarm_umap),
    Stage("cortex", stage_cortex, ("dataset", "stats"), ("data.subject", "data.transform", "data.mask",
                                                          "data.mapper", "stats.bin_edges"),
          "flatmaps, pixel lookup, WebGL viewer", isolated=True, prewarm=_prewarm_cortex),
)}
