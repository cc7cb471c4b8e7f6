"""The stage functions of the pipeline, each a function of a :class:`~core.pipeline.Context`.

Every stage returns ``(arrays, meta)``; the pipeline caches them. Voxel series are stored voxel-major
(``(n_voxels, n_test)``) so the dashboard reads one voxel's series as one contiguous slice.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from ._validation import InputError
from .config import RunConfig, config_hash
from .datasets import CortexSpec, Dataset, load_responses, open_stimuli
from .pipeline import Context, Stage

__all__ = ["STAGES", "check_user_dataset", "load_dataset", "open_run_stimuli", "simulated_dataset_dir", "build_model"]


def _cortex_spec(cfg: RunConfig) -> CortexSpec | None:
    d = cfg.data
    return CortexSpec(d.subject, d.transform, d.mask) if d.subject else None


def build_model(cfg: RunConfig):
    from .abn import build_abn
    return build_abn(cfg.features.weights, seed=cfg.features.seed)


def feature_batch_size(cfg: RunConfig, device) -> int:
    """``features.batch_size``, with 0 (auto) meaning 32 images per pass on the CPU and 128 on CUDA, where
    batches of 32 leave the GPU waiting on kernel launches and the per-batch copies back."""
    if cfg.features.batch_size:
        return int(cfg.features.batch_size)
    kind = getattr(device, "type", str(device).split(":")[0])
    return 128 if kind == "cuda" else 32


def decode_workers(images, device) -> int:
    """DataLoader processes that decode a lazy stimulus source (image files, ...) while the network runs.

    None for an in-memory array (a batch is one slice, nothing to decode). On CUDA up to 8: a 224-px PNG or
    JPEG takes ~1-3 ms to decode on one core, and the GPU takes ~6,000 images/s in three modes. On the CPU
    one: the network, at ~6 images/s on 2 cores, is what the run waits for.
    """
    if isinstance(images, np.ndarray):
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    kind = getattr(device, "type", str(device).split(":")[0])
    if kind == "cuda":
        return max(1, min(8, cores - 2))
    return 1 if cores >= 2 else 0


def _extract(cfg: RunConfig, model, images, cache_dir: Path, device, modes, progress: bool):
    from .features import extract_features_cached
    return extract_features_cached(model, images, cache_dir=cache_dir / "features", modes=modes,
                                   layer=cfg.features.layer, batch_size=feature_batch_size(cfg, device),
                                   device=device, input_size=cfg.features.input_size,
                                   num_workers=decode_workers(images, device), progress=progress)


class _Concat:
    """Train then test stimuli as one lazily read sequence (one feature pass, one cache entry)."""

    def __init__(self, a, b):
        self.a, self.b = a, b
        self.name = f"{getattr(a, 'name', 'train')}+{getattr(b, 'name', 'test')}"

    def __len__(self):
        return len(self.a) + len(self.b)

    def __getitem__(self, i):
        return self.a[i] if i < len(self.a) else self.b[i - len(self.a)]

    def fingerprint(self) -> str | None:
        """Both parts' fingerprints (see :meth:`core.datasets.FolderImages.fingerprint`), or None."""
        parts = [getattr(x, "fingerprint", lambda: None)() for x in (self.a, self.b)]
        return None if None in parts else "+".join(parts)


def all_stimuli(train, test):
    """Train then test stimuli as one sequence (an array when both are arrays)."""
    if hasattr(train, "as_array") and hasattr(test, "as_array"):
        return np.concatenate([train.as_array(), test.as_array()])
    return _Concat(train, test)


def simulated_dataset_dir(cfg: RunConfig, cache_dir: Path) -> Path:
    from .simulate import SIM_FORMAT_VERSION
    key = config_hash(cfg, "simulation", "data.subject", "data.transform", "data.mask", "features.weights",
                      "features.layer", "features.input_size", "features.seed", extra=SIM_FORMAT_VERSION)
    return cache_dir / "datasets" / f"sim-{key}"


def _simulated_folder(cfg: RunConfig, cache_dir: Path | None) -> Path:
    folder = simulated_dataset_dir(cfg, Path(cache_dir))
    json.loads((folder / "dataset.json").read_text())  # fails early if the dataset stage never finished
    return folder


def open_run_stimuli(cfg: RunConfig, cache_dir: Path | None, n_train: int, n_test: int, *, verify: bool = False):
    """The run's (train, test) stimulus sources; ``n_train`` / ``n_test`` samples (a movie is cut to them).

    ``verify`` opens every file of an image folder once to check it is a readable image (the preflight's
    check); the stages, which read stimuli that check has passed, do not.
    """
    if cfg.data.kind == "simulated":
        folder = _simulated_folder(cfg, cache_dir)
        return open_stimuli(folder / "stimuli_train.npy"), open_stimuli(folder / "stimuli_test.npy")
    d = cfg.data
    kw = dict(key=d.stimuli_key, movie_tr=d.movie_tr, movie_offset=d.movie_offset, size=cfg.features.input_size,
              verify=verify)
    # The test movie starts at its own offset; one TR per sample as for training.
    return (open_stimuli(d.stimuli_train, n_samples=n_train, **kw),
            open_stimuli(d.stimuli_test, n_samples=n_test, **kw))


def load_dataset(cfg: RunConfig, cache_dir: Path | None = None, *, train: bool = True,
                 verify: bool = True) -> Dataset:
    """Open the configured dataset (the simulated one must have been generated by the dataset stage).

    ``train=False`` leaves the training responses unread (``responses.Y_train`` is None); ``verify=False``
    skips opening every image file of a stimulus folder (see :func:`open_run_stimuli`).
    """
    if cfg.data.kind == "simulated":
        folder = _simulated_folder(cfg, cache_dir)
        responses = load_responses(folder / "responses.h5", train=train)
        with np.load(folder / "truth.npz") as z:
            truth = {k: z[k] for k in z.files}
        stim_train, stim_test = open_run_stimuli(cfg, cache_dir, responses.n_train, responses.Y_test.shape[0])
        return Dataset(stimuli_train=stim_train, stimuli_test=stim_test, responses=responses,
                       cortex=_cortex_spec(cfg), simulated=True, truth=truth, name=f"simulated:{folder.name}")
    responses = load_responses(cfg.data.responses, train=train)
    stim_train, stim_test = open_run_stimuli(cfg, cache_dir, responses.n_train, responses.Y_test.shape[0],
                                             verify=verify)
    return Dataset(stimuli_train=stim_train, stimuli_test=stim_test, responses=responses, cortex=_cortex_spec(cfg),
                   simulated=False, name=Path(cfg.data.responses).stem)


def _input_files_fingerprint(cfg: RunConfig):
    """Path, size and modification time of the user's input files: edited data means a new dataset key."""
    if cfg.data.kind == "simulated":
        from .simulate import SIM_FORMAT_VERSION
        return {"simulation_format": SIM_FORMAT_VERSION}
    out = []
    for p in (cfg.data.responses, cfg.data.stimuli_train, cfg.data.stimuli_test):
        path = Path(p)
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        out.append([(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.exists()])
    return out


#: Fingerprints (paths, sizes, modification times) of user input files fully checked in this process.
_CHECKED_INPUTS: set[str] = set()


def check_user_dataset(cfg: RunConfig) -> None:
    """Every check of the user's files (:func:`~core.datasets.validate_dataset`: all responses read and checked,
    every image file opened and verified), once per process for the same files and settings: ``precompute.py``
    runs it before it touches the results folder, and the dataset stage then does not read the ~2.5 GB of a
    study-sized dataset a second time. Files changed in between (size or time) are checked again."""
    from .datasets import validate_dataset
    from .config import config_to_dict
    key = json.dumps([config_to_dict(cfg), _input_files_fingerprint(cfg)], sort_keys=True, default=str)
    if key not in _CHECKED_INPUTS:
        validate_dataset(load_dataset(cfg))
        _CHECKED_INPUTS.add(key)


# --------------------------------------------------------------------------------------------- stages

def run_geometry(cfg: RunConfig, cache_dir: Path):
    """The voxel geometry of the run: the mask's, or the simulation's seeded subset of it (None: no cortex)."""
    from .cortex import load_geometry
    spec = _cortex_spec(cfg)
    if spec is None:
        return None
    geometry = load_geometry(spec.subject, spec.transform, spec.mask, cache_dir / "cortex")
    sim = cfg.simulation
    if cfg.data.kind == "simulated" and sim.n_voxels:
        if sim.n_voxels > geometry.n_voxels:
            raise InputError(f"asked for {sim.n_voxels} simulated voxels but the mask holds "
                             f"{geometry.n_voxels}", field="simulation.n_voxels")
        rng = np.random.default_rng([sim.seed, 7])
        geometry = geometry.subset(np.sort(rng.choice(geometry.n_voxels, sim.n_voxels, replace=False)))
    return geometry


def stage_dataset(ctx: Context):
    """Generate the simulated dataset (or check the user's files) and map voxels onto the cortex."""
    cfg = ctx.cfg
    spec = _cortex_spec(cfg)
    geometry = run_geometry(cfg, ctx.cache_dir)
    meta: dict = {"simulated": cfg.data.kind == "simulated"}
    if cfg.data.kind == "simulated":
        from .simulate import write_simulated_dataset
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
            n_latent=sim.n_latent, null_fraction=sim.null_fraction, length_scale=sim.smoothness_mm, seed=sim.seed)
        meta["dataset_dir"] = str(folder)
        if feature_seconds:  # the ABN pass inside the simulation (0 entries: the dataset folder existed)
            meta["feature_seconds"] = round(sum(feature_seconds), 3)
    if cfg.data.kind != "simulated":
        check_user_dataset(cfg)
    # Checked above (or written by the simulation just now): the shapes and test responses are all it needs.
    ds = load_dataset(cfg, ctx.cache_dir, train=False, verify=False)
    r = ds.responses
    meta.update(n_train=r.n_train, n_test=int(r.Y_test.shape[0]), n_voxels=r.n_voxels,
                n_repeats=0 if r.Y_test_repeats is None else int(r.Y_test_repeats.shape[0]), name=ds.name)
    arrays: dict[str, np.ndarray] = {}
    if geometry is not None:
        if geometry.n_voxels != r.n_voxels:
            raise InputError(f"{r.n_voxels} voxels in the responses but {geometry.n_voxels} in the cortex mask",
                             source=r.source, field="Y_train")
        arrays.update(ijk=geometry.ijk, flat_xy=geometry.flat_xy, hemi=geometry.hemi, roi=geometry.roi,
                      unmapped=geometry.unmapped, xyz_mm=geometry.xyz_mm)
        meta["roi_names"] = geometry.roi_names
        meta["cortex"] = {"subject": spec.subject, "transform": spec.transform, "mask": spec.mask}
    for k, v in ds.truth.items():
        arrays[f"truth_{k}"] = v
    return arrays, meta


def stage_features(ctx: Context):
    """ABN features of every stimulus in each mode (train then test rows) and the test attention maps."""
    cfg = ctx.cfg
    n_train, n_test = ctx["dataset"].meta["n_train"], ctx["dataset"].meta["n_test"]
    model = build_model(cfg)
    fs = _extract(cfg, model, all_stimuli(*open_run_stimuli(cfg, ctx.cache_dir, n_train, n_test)), ctx.cache_dir,
                  ctx.device, tuple(cfg.features.modes), ctx.progress)
    arrays = {f"X_{m}": fs.features[m] for m in cfg.features.modes}
    arrays["attention_test"] = fs.attention[n_train:]
    from .abn import weights_fingerprint
    return arrays, {"n_train": int(n_train), "layer": fs.layer, "input_size": list(fs.input_size),
                    "weights": cfg.features.weights, "weights_fingerprint": weights_fingerprint(model),
                    "modes": list(cfg.features.modes)}


THUMB_SIZE = 96


def stage_thumbnails(ctx: Context):
    """Test stimuli as small thumbnails, and the same with the attention map overlaid (JET, alpha 0.4)."""
    from PIL import Image

    from .overlay import attention_overlay
    cfg = ctx.cfg
    _, stimuli = open_run_stimuli(cfg, ctx.cache_dir, ctx["dataset"].meta["n_train"], ctx["dataset"].meta["n_test"])
    att = np.asarray(ctx["features"].arrays["attention_test"])
    n = len(stimuli)
    thumbs = np.empty((n, THUMB_SIZE, THUMB_SIZE, 3), np.uint8)
    overlays = np.empty_like(thumbs)
    for i in range(n):
        img = np.asarray(Image.fromarray(stimuli[i]).resize((THUMB_SIZE, THUMB_SIZE), Image.BILINEAR))
        thumbs[i] = img
        overlays[i] = attention_overlay(img, att[i], alpha=0.4)
    return {"thumbs": thumbs, "overlays": overlays}, {"size": THUMB_SIZE, "n": n}


def _alphas(cfg: RunConfig) -> np.ndarray:
    e = cfg.encoding
    return np.logspace(e.alpha_min_log10, e.alpha_max_log10, e.n_alphas)


def stage_encoding(ctx: Context):
    """Ridge per voxel, alpha by cross-validation, for each feature set; predictions on the test set."""
    import torch

    from .encoding import VoxelRidgeCV
    cfg = ctx.cfg
    r = load_dataset(cfg, ctx.cache_dir, verify=False).responses
    feats = ctx["features"]
    n_train = feats.meta["n_train"]
    arrays = {"measured": np.ascontiguousarray(r.Y_test.T)}
    meta = {"alphas": _alphas(cfg).tolist(), "conditions": {}}
    dtype = torch.float64 if cfg.encoding.dtype == "float64" else torch.float32
    for mode in cfg.features.modes:
        X = np.asarray(feats.arrays[f"X_{mode}"])
        model = VoxelRidgeCV(alphas=_alphas(cfg), n_folds=cfg.encoding.n_folds, run_onsets=r.run_onsets,
                             delays=list(cfg.encoding.delays) or None, device=ctx.device, dtype=dtype,
                             progress=ctx.progress, alpha_search=cfg.encoding.alpha_search)
        t0 = time.perf_counter()
        model.fit(X[:n_train], r.Y_train)
        pred = model.predict(X[n_train:])
        seconds = time.perf_counter() - t0
        arrays[f"pred_{mode}"] = np.ascontiguousarray(np.asarray(pred, dtype=np.float32).T)
        arrays[f"alpha_{mode}"] = np.asarray(model.best_alphas_, dtype=np.float32)
        arrays[f"cv_{mode}"] = np.asarray(model.cv_scores_, dtype=np.float32)
        meta["conditions"][mode] = {"solver": getattr(model, "solver_", None), "cv_path": model.cv_path_,
                                    "seconds": round(seconds, 3)}
    return arrays, meta


def stage_stats(ctx: Context):
    """r, p, q, significance and correlation bin per voxel and condition; noise ceiling with repeats."""
    from .stats import noise_ceiling, voxel_stats
    cfg = ctx.cfg
    enc = ctx["encoding"]
    responses = load_dataset(cfg, ctx.cache_dir, train=False, verify=False).responses
    Y_test = responses.Y_test
    repeats = responses.Y_test_repeats
    # The ceiling depends on the measured responses only: once for all feature sets.
    ceiling = noise_ceiling(repeats) if repeats is not None else None
    arrays, meta = {}, {"conditions": {}}
    for mode in cfg.features.modes:
        pred = np.asarray(enc.arrays[f"pred_{mode}"]).T
        st = voxel_stats(pred, Y_test, rule=cfg.stats.rule, level=cfg.stats.level,
                         edges=tuple(cfg.stats.bin_edges), Y_test_repeats=repeats, ceiling=ceiling,
                         n_perm=cfg.stats.n_permutations, device=ctx.device)
        for k, v in st.items():
            if isinstance(v, np.ndarray):
                arrays[f"{k}_{mode}"] = v
        meta["conditions"][mode] = {k: v for k, v in st.items() if not isinstance(v, np.ndarray)}
    return arrays, meta


def _significant(ctx_stats, modes) -> dict[str, np.ndarray]:
    return {m: np.asarray(ctx_stats.arrays[f"significant_{m}"]) for m in modes}


def _prewarm_umap(cfg: RunConfig, cache_dir: Path):
    from .embedding import prewarm_numba_cache
    return prewarm_numba_cache()


def stage_rsa(ctx: Context):
    """kNN graph of the correlation-distance RDM per condition, and RDM summaries."""
    from . import rsa
    cfg = ctx.cfg
    enc, st, dset = ctx["encoding"], ctx["stats"], ctx["dataset"]
    modes = [m for m in ("off", "on") if m in cfg.features.modes]
    sig = _significant(st, modes)
    valid = np.ones(sig[modes[0]].shape, bool)
    for m in modes:
        valid &= np.asarray(st.arrays[f"valid_{m}"])
    arrays, meta = {}, {"conditions": {}}
    shared = None
    if cfg.rsa.voxels != "significant":
        shared = rsa.select_voxels(sig, rule=cfg.rsa.voxels)
        shared = shared[valid[shared]]
    series = {}
    for m in modes:
        index = shared if shared is not None else rsa.select_voxels(sig, rule="significant", condition=m)
        index = index[valid[index]]
        arrays[f"voxels_{m}"] = index.astype(np.int64)
        if index.size <= cfg.rsa.k:
            meta["conditions"][m] = {"n_voxels": int(index.size), "skipped": "too few voxels for the kNN graph"}
            continue
        s = np.asarray(enc.arrays[f"pred_{m}"])[index].T
        series[m] = s
        t0 = time.perf_counter()
        idx, dist = rsa.knn_correlation(s, k=cfg.rsa.k, device=ctx.device, progress=ctx.progress)
        arrays[f"knn_idx_{m}"], arrays[f"knn_dist_{m}"] = idx, dist
        meta["conditions"][m] = {"n_voxels": int(index.size), "knn_s": round(time.perf_counter() - t0, 3)}
        if "roi" in dset.arrays:
            block, counts = rsa.roi_block_rdm(s, np.asarray(dset.arrays["roi"])[index],
                                              n_rois=len(dset.meta["roi_names"]))
            arrays[f"roi_rdm_{m}"], arrays["roi_counts"] = block, counts
    if shared is not None and len(series) == 2:
        arrays["knn_jaccard"] = rsa.knn_jaccard(arrays["knn_idx_on"], arrays["knn_idx_off"])
        meta["agreement"] = rsa.rdm_agreement(series["on"], series["off"], n_pairs=cfg.rsa.n_pairs,
                                              seed=cfg.rsa.seed, device=ctx.device)
    return arrays, meta


def stage_umap(ctx: Context):
    """3-D UMAP of each condition's kNN graph (conditions side by side in worker processes when cores allow)."""
    from .embedding import embed_umap_each
    cfg = ctx.cfg
    rs, enc = ctx["rsa"], ctx["encoding"]
    modes = [m for m in ("off", "on") if f"knn_idx_{m}" in rs.arrays]
    graphs = [(np.asarray(rs.arrays[f"knn_idx_{m}"]), np.asarray(rs.arrays[f"knn_dist_{m}"])) for m in modes]
    # The predicted series place the graph's disconnected parts relative to each other.
    series = [np.asarray(enc.arrays[f"pred_{m}"])[np.asarray(rs.arrays[f"voxels_{m}"])].T for m in modes]
    embeddings = embed_umap_each(graphs, series=series, n_components=3, n_neighbors=cfg.umap.n_neighbors,
                                 min_dist=cfg.umap.min_dist, random_state=cfg.umap.seed)
    meta = {"trustworthiness": {m: _trustworthiness(s, e, cfg.umap.n_neighbors, seed=cfg.umap.seed or 0)
                                for m, s, e in zip(modes, series, embeddings)}}
    return {f"umap_{m}": e for m, e in zip(modes, embeddings)}, meta


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


def _pycortex_cache(cache_dir: Path) -> Path:
    return Path(cache_dir) / "cortex" / "pycortex"


def _pycortex_lock(cache_dir: Path) -> Path:
    """The lock the cortex stage and its background preparation hold while they use pycortex's caches."""
    return _pycortex_cache(cache_dir).parent / "pycortex.lock"


def _cortex_assets(geometry, bins: dict, workdir: Path, title: str, pc_cache: Path):
    """The flatmaps and the WebGL viewer of ``bins`` into ``workdir``; returns (flatmap paths, viewer datasets)."""
    from .flatmap import make_flatmaps
    from .palette import BIN_LABELS, bin_to_rgba
    from .viewer import make_viewer, viewer_surfaces_in_background
    # The viewer's cold surface info builds on the second core while the flatmaps build on the first.
    with viewer_surfaces_in_background(geometry.subject, pc_cache):
        flat = make_flatmaps(geometry, bins, workdir, cache_dir=pc_cache)
    datasets = {m: bin_to_rgba(b) for m, b in bins.items()}
    for m in ("off", "on"):
        for b, label in enumerate(BIN_LABELS):
            only = np.where(bins[m] == b, b, -1).astype(np.int8)
            only_rgba = bin_to_rgba(only)
            only_rgba[only < 0] = 0   # other bins fully transparent in a per-bin dataset
            datasets[f"{m}: r {label}"] = only_rgba
    make_viewer(geometry, datasets, workdir / "viewer", title=title, cache_dir=pc_cache)
    return flat, datasets


def _cortex_warm_marker(cfg: RunConfig, cache_dir: Path) -> Path:
    from .flatmap import FLATMAP_VERSION
    d = cfg.data
    return _pycortex_cache(cache_dir).parent / f"pycortex-warm-{d.subject}-{d.transform}-{d.mask}-v{FLATMAP_VERSION}"


def stage_cortex(ctx: Context):
    """Flatmap images per condition (coloured by bin), the pixel -> voxel lookup, and the WebGL viewer."""
    from ._io import file_lock
    cfg = ctx.cfg
    geometry = run_geometry(cfg, ctx.cache_dir)
    if geometry is None:
        return {}, {"skipped": "no pycortex subject configured (data.subject is empty)"}
    st = ctx["stats"]
    modes = [m for m in ("off", "on", "uniform") if m in cfg.features.modes]
    bins = {m: np.asarray(st.arrays[f"bin_{m}"]) for m in modes}
    pc_cache = _pycortex_cache(ctx.cache_dir)
    title = f"{ctx.cfg.preset}{' (simulated)' if cfg.data.kind == 'simulated' else ''}"
    # Waits while the run's background preparation (_prewarm_cortex) is still building pycortex's caches.
    with file_lock(_pycortex_lock(ctx.cache_dir)):
        flat, datasets = _cortex_assets(geometry, bins, ctx.workdir, title, pc_cache)
        _cortex_warm_marker(cfg, ctx.cache_dir).touch()
    # File names relative to the entry folder: the workdir is renamed when the stage commits.
    rel = lambda p: str(Path(p).relative_to(ctx.workdir))  # noqa: E731
    return {}, {"flatmap": {k: ({a: rel(b) for a, b in v.items()} if isinstance(v, dict) else rel(v))
                            for k, v in flat.items()}, "viewer": "viewer", "viewer_datasets": list(datasets)}


def _prewarm_cortex(cfg: RunConfig, cache_dir: Path):
    """Build pycortex's per-subject caches (pixel map, flat mask, curvature, the viewer's surfaces and mesh
    pack: ~35-50 s cold) in a background process from the start of the run, so that the cortex stage, which
    comes after the statistics, finds them warm (~4-7 s instead). Only once per results folder and subject;
    the pipeline calls it only when it runs stages side by side (cores to spare). Returns the process or None.
    """
    from ._proc import start_helper
    if not cfg.data.subject or _cortex_warm_marker(cfg, cache_dir).exists():
        return None
    return start_helper(_warm_cortex_job, cfg, str(cache_dir), name="pycortex-prewarm")


def _warm_cortex_job(cfg: RunConfig, cache_dir: str) -> None:
    """Background side of :func:`_prewarm_cortex`: the cortex stage's own code on empty bins, its pycortex caches
    written to a private folder and moved into the shared one file by file (rename), so that a helper stopped
    half-way (the run ended or failed first) never leaves a half-written cache behind."""
    import logging
    import shutil
    import tempfile

    from ._io import file_lock
    cache = Path(cache_dir)
    pc_cache = _pycortex_cache(cache)
    try:
        with file_lock(_pycortex_lock(cache)):
            if _cortex_warm_marker(cfg, cache).exists():
                return
            geometry = run_geometry(cfg, cache)
            pc_cache.mkdir(parents=True, exist_ok=True)
            for stale in pc_cache.parent.glob(".prewarm-*"):   # left by a helper that was stopped
                shutil.rmtree(stale, ignore_errors=True)
            with tempfile.TemporaryDirectory(prefix=".prewarm-", dir=pc_cache.parent) as tmp:
                private = Path(tmp) / "pycortex"
                if pc_cache.is_dir():   # start from what is there: only the missing caches get built
                    shutil.copytree(pc_cache, private)
                empty = {m: np.full(geometry.n_voxels, -1, np.int8) for m in cfg.features.modes}
                _cortex_assets(geometry, empty, Path(tmp) / "assets", "", private)
                for f in sorted(p for p in private.rglob("*") if p.is_file()):
                    target = pc_cache / f.relative_to(private)
                    if not target.exists():
                        target.parent.mkdir(parents=True, exist_ok=True)
                        os.replace(f, target)
            _cortex_warm_marker(cfg, cache).touch()
    except Exception as exc:  # noqa: BLE001 - the cortex stage builds whatever is missing itself
        logging.getLogger(__name__).warning("background pycortex preparation failed (%s); the cortex stage "
                                            "builds its caches itself", exc)


STAGES: dict[str, Stage] = {s.name: s for s in (
    Stage("dataset", stage_dataset, (), ("data", "simulation", "features.weights", "features.layer",
                                          "features.input_size", "features.seed"),
          "generate or check the dataset; voxel geometry", extra=lambda cfg: _input_files_fingerprint(cfg)),
    Stage("features", stage_features, ("dataset",), ("features",), "ABN features, attention on/off/uniform"),
    Stage("thumbnails", stage_thumbnails, ("dataset", "features"), ("features",), "test thumbnails + attention"),
    Stage("encoding", stage_encoding, ("dataset", "features"), ("encoding",), "per-voxel ridge, CV alpha"),
    Stage("stats", stage_stats, ("dataset", "encoding"), ("stats",), "r, p, q, bins, noise ceiling"),
    Stage("rsa", stage_rsa, ("dataset", "encoding", "stats"), ("rsa",), "kNN RDM graph, summaries"),
    Stage("umap", stage_umap, ("rsa", "encoding"), ("umap",), "3-D UMAP per condition",
          prewarm=_prewarm_umap),
    Stage("cortex", stage_cortex, ("dataset", "stats"), ("data.subject", "data.transform", "data.mask",
                                                          "stats.bin_edges"),
          "flatmaps, pixel lookup, WebGL viewer", isolated=True, prewarm=_prewarm_cortex),
)}
