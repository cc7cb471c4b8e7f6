"""Benchmark of issue 9: the pipeline at the study's scale (7,200 + 600 stimuli, 70,933 voxels), stage by stage.

Three ways to run it:

* **simulated** (the default): ``precompute.py --preset paper-sim`` in a fresh results folder, i.e. the
  7,800 224-px stimuli rendered and written to disk, read back and pushed through the ABN in three modes
  (on / off / uniform), ridge for each feature set, statistics, the kNN graphs, UMAP and the pycortex assets:
  a dashboard-ready results folder. Stage times come from the run's own ``summary.json``.
* ``--from-files``: what a user with images on disk runs. The paper-sim dataset (on the whole 80,615-voxel
  mask) is made first and its stimuli written as 7,800 PNG files (not timed); then ``precompute.py`` with
  ``data.kind = "files"`` on those folders and the responses file, timed from the command's start to the
  dashboard-ready folder: preflight checks, decoding, the ABN, ridge, statistics, kNN, UMAP, pycortex.
* ``--synthetic-features``: skips the stimuli and the ResNet pass (which alone takes ~40 minutes on 2 CPU
  cores). Features of the right shape (7,800 x 2,048 per mode, a decaying spectrum, attention-on and -off
  channels correlated like the ABN's: most barely change, some a lot) get responses planted from them on
  the same S1 voxels as ``paper-sim`` (``core.data.simulate.plant_responses``), then ridge -> statistics -> kNN
  -> UMAP run through the same ``core`` functions the pipeline stages call. The output says so.

``--sweep 10000,20000,40000,80000`` then times ridge (one feature set) and the kNN graph (one condition) at
each voxel count on planted responses over the whole 80,615-voxel mask, to show how each grows (ridge
linearly, the kNN quadratically). Defaults to that sweep on CUDA and to none on the CPU, where the 80k ridge
alone takes ~10 minutes.

    .venv/bin/python bench/paper_scale.py --device cpu --synthetic-features --modes on,off
    python3 bench/paper_scale.py --device cuda --json $OUT/paper_scale.json     # see bench/gpu_check.sh

Last line: ``RESULT total_s=... features_s=... ridge_s=... knn_s=... umap_s=... peak_rss_mb=... device=...``
(``features_s=synthetic`` when the ResNet pass was skipped).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

N_FEATURES = 2048        # ResNet-50's pooled layer4, the study's "perception" features


def alpha_grid(n_alphas: int) -> np.ndarray:
    """The presets' alpha grid, 10^-2 .. 10^8: 21 values = two per decade (paper), 11 = one per decade (demo)."""
    return np.logspace(-2, 8, n_alphas)


def peak_rss_mb() -> float:
    """Largest resident set of this process or any finished child (UMAP workers), MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, kids) / 1024.0  # Linux reports kB


def peak_gpu_mb(device) -> float | None:
    import torch
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def gemm_ceiling(device, n: int = 8192, repeats: int = 5) -> dict:
    """Measured matrix-product rates on ``device`` (TFLOP/s, median of ``repeats`` after a warm-up): the ceiling
    the ridge (float32, full precision) and the ABN pass (bf16) are measured against. CUDA only."""
    import torch
    if device.type != "cuda":
        return {}
    out = {}
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, generator=g)
    b = torch.randn(n, n, device=device, generator=g)
    prev = torch.get_float32_matmul_precision()
    try:
        for name, dtype, precision in (("fp32", torch.float32, "highest"), ("tf32", torch.float32, "high"),
                                       ("bf16", torch.bfloat16, "highest")):
            torch.set_float32_matmul_precision(precision)
            x, y = a.to(dtype), b.to(dtype)
            x @ y
            times = []
            for _ in range(repeats):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                x @ y
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            out[f"{name}_tflops"] = round(2 * n**3 / float(np.median(times)) / 1e12, 1)
    finally:
        torch.set_float32_matmul_precision(prev)
    del a, b
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    return out


def _sync(device) -> None:
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    """Wall seconds per named step, printed as they finish."""

    def __init__(self, device):
        self.device, self.times = device, {}

    def __call__(self, name: str, fn, *args, **kwargs):
        _sync(self.device)
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        _sync(self.device)
        seconds = time.perf_counter() - t0
        self.times[name] = self.times.get(name, 0.0) + seconds
        print(f"  {name:<24} {seconds:8.2f} s   peak RSS {peak_rss_mb():7.0f} MB", flush=True)
        return out


def synthetic_features(n_samples: int, modes: tuple[str, ...], seed: int) -> dict[str, np.ndarray]:
    """Stand-ins for the ABN's pooled features, (n_samples, 2,048) float32 per mode.

    A shared part (64 latent factors with variances falling as 1/rank, mixed into every channel, plus
    channel noise) and an attention part that moves each channel by a channel-specific amount (uniform**3:
    most channels barely change, a few change a lot), so on and off correlate channel by channel as the
    ABN's do. ``uniform`` gets half the attention part. Rectified and log-compressed like pooled ReLU output.
    """
    rng = np.random.default_rng([seed, 9])
    n_lat = 64
    scale = (1.0 / np.arange(1, n_lat + 1)) ** 0.5
    shared = (rng.standard_normal((n_samples, n_lat)) * scale) @ rng.standard_normal((n_lat, N_FEATURES))
    shared += 0.5 * rng.standard_normal((n_samples, N_FEATURES))
    attention = (rng.standard_normal((n_samples, n_lat)) * scale) @ rng.standard_normal((n_lat, N_FEATURES))
    gain = rng.uniform(0.0, 1.0, N_FEATURES) ** 3
    share = {"on": 1.0, "off": 0.0, "uniform": 0.5}
    return {m: np.log1p(np.maximum(shared + share[m] * gain * attention, 0.0)).astype(np.float32) for m in modes}


def plant(features, n_train: int, geometry, cfg):
    from core.data.simulate import plant_responses
    sim = cfg.simulation
    planted = plant_responses(features, n_train, geometry, n_repeats=sim.n_repeats, n_latent=sim.n_latent,
                              null_fraction=sim.null_fraction, length_scale=sim.smoothness_mm, seed=sim.seed,
                              n_runs=sim.n_runs, tr=sim.tr, hrf=sim.hrf, ar_range=tuple(sim.ar_range),
                              null_contrast_fraction=sim.null_contrast_fraction)
    return planted.Y_train, planted.Y_test_repeats


def fit_ridge(X: np.ndarray, Y_train: np.ndarray, n_train: int, device, n_alphas: int = 21,
              alpha_search: str = "refine") -> np.ndarray:
    """The encoding stage's fit and test prediction, (n_test, n_voxels) float32."""
    import torch

    from core.encoding import VoxelRidgeCV
    from core.config import PRESETS
    from core.data.haemodynamics import even_run_onsets
    # The runs and FIR delays of paper-sim, as the encoding stage fits them.
    cfg = PRESETS["paper-sim"]
    model = VoxelRidgeCV(alphas=alpha_grid(n_alphas), n_folds=5, device=device, dtype=torch.float32,
                         alpha_search=alpha_search, run_onsets=even_run_onsets(n_train, cfg.simulation.n_runs),
                         delays=list(cfg.encoding.delays))
    model.fit(X[:n_train], Y_train)
    return np.asarray(model.predict(X[n_train:]), dtype=np.float32)


def run_synthetic(args, device) -> dict:
    """ridge -> stats -> kNN -> UMAP on synthetic features and responses planted from them."""
    from core import rsa
    from core.config import make_config
    from core.embedding.umap import embed_umap_each
    from core.pipeline.stages import _trustworthiness
    from core.pipeline.inputs import run_geometry
    from core.stats import noise_ceiling, voxel_stats

    cfg = make_config("paper-sim", {"simulation": {"n_voxels": args.voxels}})
    sim = cfg.simulation
    n_train, n_test = args.n_train or sim.n_train, args.n_test or sim.n_test
    clock = Clock(device)
    cache = Path(args.workdir) / "cache"
    print(f"synthetic features: the {n_train + n_test:,}-image ResNet pass is skipped; features of shape "
          f"({n_train + n_test:,}, {N_FEATURES}) per mode stand in for it", flush=True)
    geometry = clock("geometry (pycortex)", run_geometry, cfg, cache)
    X = clock("synthetic features", synthetic_features, n_train + n_test, tuple(args.modes), sim.seed)
    if not {"on", "off"} <= set(X):
        raise SystemExit("--modes must include on and off (the responses are planted from both)")
    Y_train, Y_rep = clock("plant responses", plant, X, n_train, geometry, cfg)
    Y_test = Y_rep.mean(0)
    t0 = time.perf_counter()
    pred, st = {}, {}
    ceiling = clock("stats noise ceiling", noise_ceiling, Y_rep)  # once for all feature sets, as the stage does
    for m in args.modes:
        pred[m] = clock(f"ridge {m}", fit_ridge, X[m], Y_train, n_train, device, args.n_alphas, args.alpha_search)
        st[m] = clock(f"stats {m}", voxel_stats, pred[m], Y_test, rule=cfg.stats.rule, level=cfg.stats.level,
                      edges=tuple(cfg.stats.bin_edges), ceiling=ceiling, device=device)
    t_check = time.perf_counter()
    alpha_check = check_alpha_grid(args, X["on"], Y_train, Y_test, n_train, device) if args.alpha_check else None
    t0 += time.perf_counter() - t_check  # the check is not part of the analysis
    del Y_train
    pair = [m for m in ("off", "on") if m in pred]
    sig = {m: np.asarray(st[m]["significant"]) for m in pair}
    valid = np.logical_and.reduce([np.asarray(st[m]["valid"]) for m in pair])
    voxels = rsa.select_voxels(sig, rule=cfg.rsa.voxels)
    voxels = voxels[valid[voxels]]
    print(f"  kNN voxels ({cfg.rsa.voxels} of significant): {voxels.size:,}", flush=True)
    series, graphs = {}, {}
    for m in pair:
        series[m] = np.ascontiguousarray(pred[m][:, voxels])
        graphs[m] = clock(f"knn {m}", rsa.knn_correlation, series[m], k=cfg.rsa.k, device=device)
        clock(f"roi rdm {m}", rsa.roi_block_rdm, series[m], geometry.roi[voxels], n_rois=len(geometry.roi_names))
    clock("rdm agreement", rsa.rdm_agreement, series["on"], series["off"], n_pairs=cfg.rsa.n_pairs,
          seed=cfg.rsa.seed, device=device)
    emb = clock("umap (both)", embed_umap_each, [graphs[m] for m in pair], series=[series[m] for m in pair],
                n_components=3, n_neighbors=cfg.umap.n_neighbors, min_dist=cfg.umap.min_dist,
                random_state=cfg.umap.seed)
    trust = {m: round(_trustworthiness(series[m], e, cfg.umap.n_neighbors, seed=cfg.umap.seed), 4)
             for m, e in zip(pair, emb)}
    analysis_s = time.perf_counter() - t0
    t = clock.times
    return {
        "mode": "synthetic-features", "n_train": n_train, "n_test": n_test, "n_voxels": int(geometry.n_voxels),
        "feature_sets": list(args.modes), "knn_voxels": int(voxels.size),
        "n_alphas": args.n_alphas, "alpha_search": args.alpha_search, "alpha_check": alpha_check,
        "n_significant": {m: int(sig[m].sum()) for m in pair}, "trustworthiness": trust,
        "stage_s": {k: round(v, 2) for k, v in t.items()},
        "features_s": "synthetic",
        "ridge_s": round(sum(v for k, v in t.items() if k.startswith("ridge")), 2),
        "stats_s": round(sum(v for k, v in t.items() if k.startswith("stats")), 2),
        "knn_s": round(sum(v for k, v in t.items() if k.startswith("knn")), 2),
        "umap_s": round(t["umap (both)"], 2),
        # The CPU target: ridge + stats + kNN + UMAP (and the RDM summaries) from cached features.
        "analysis_s": round(analysis_s, 2),
        "total_s": round(sum(t.values()), 2),
    }


def check_alpha_grid(args, X, Y_train, Y_test, n_train: int, device) -> dict:
    """Test r of the attention-on fit on the first ``--alpha-check`` voxels: every one of 21 alphas scored (the
    reference) against the refined search over the same 21 and against the 11-alpha grid (one per decade),
    which both cut the ridge's cost."""
    from core.stats import pearson_r, pvalues_t
    v = min(args.alpha_check, Y_train.shape[1])
    Ytr, Yte = np.ascontiguousarray(Y_train[:, :v]), Y_test[:, :v]
    r, seconds = {}, {}
    variants = {"grid21": (21, "grid"), "refine21": (21, "refine"), "grid11": (11, "grid")}
    for name, (n, search) in variants.items():
        t0 = time.perf_counter()
        r[name] = pearson_r(fit_ridge(X, Ytr, n_train, device, n, search), Yte)
        seconds[name] = round(time.perf_counter() - t0, 1)
        print(f"  alpha check, {name}, {v} voxels: {seconds[name]} s", flush=True)
    out = {"voxels": v, "seconds": seconds,
           "n_significant": {k: int((pvalues_t(x, Yte.shape[0]) <= 0.01).sum()) for k, x in r.items()}}
    for name in ("refine21", "grid11"):
        d = np.abs(r[name] - r["grid21"])
        out[name] = {"share_identical_r": float(np.mean(d == 0)), "median_abs_dr": float(np.median(d)),
                     "p99_abs_dr": float(np.quantile(d, 0.99)), "max_abs_dr": float(d.max()),
                     "share_abs_dr_over_0.01": float(np.mean(d > 0.01))}
    print(f"  alpha check: {json.dumps(out)}", flush=True)
    return out


def run_pipeline(args, device) -> dict:
    """``precompute.py --preset paper-sim`` in a fresh results folder, timed from its summary.json."""
    out = Path(args.workdir) / "results"
    toml = Path(args.workdir) / "paper_sim.toml"
    lines = ['preset = "paper-sim"', f'device = "{device.type}"', "[simulation]", f"n_voxels = {args.voxels}"]
    if args.n_train:
        lines.append(f"n_train = {args.n_train}")
    if args.n_test:
        lines.append(f"n_test = {args.n_test}")
    lines += ["[features]", f'modes = {json.dumps(list(args.modes))}', "[encoding]", f"n_alphas = {args.n_alphas}",
              f'alpha_search = "{args.alpha_search}"']
    toml.write_text("\n".join(lines) + "\n")
    wall, summary = _precompute_timed(toml, out)
    t = summary["timings_s"]
    abn_in_dataset = summary.get("feature_seconds_in_dataset", 0.0)   # the simulation's ABN pass
    return {
        "mode": "images", **_numbers(summary, args, wall),
        "features_s": round(abn_in_dataset + t.get("features", 0.0), 2),
        "dataset_without_features_s": round(t.get("dataset", 0.0) - abn_in_dataset, 2),
        "truth": summary.get("truth"),
        # An estimate of what a user with the images already on disk runs (--from-files measures it): the
        # pipeline without simulating the dataset (rendering the stimuli, planting the responses); the ABN pass
        # inside it is kept, as the features stage would run it on real images.
        "from_images_s": round(summary.get("total_s", wall) - (t.get("dataset", 0.0) - abn_in_dataset), 2),
    }


def _export_png(job) -> int:
    """Worker: images ``lo:hi`` of a stimulus .npy as PNG files named by index."""
    from PIL import Image
    npy, folder, lo, hi = job
    arr = np.load(npy, mmap_mode="r")
    for i in range(lo, hi):
        Image.fromarray(np.asarray(arr[i])).save(Path(folder) / f"{i:06d}.png", compress_level=1)
    return hi - lo


def export_stimuli(npy: Path, folder: Path) -> int:
    """Every image of ``npy`` as a PNG in ``folder`` (lossless: the same pixels), on every core."""
    from concurrent.futures import ProcessPoolExecutor
    folder.mkdir(parents=True, exist_ok=True)
    n = int(np.load(npy, mmap_mode="r").shape[0])
    jobs = [(str(npy), str(folder), lo, min(lo + 200, n)) for lo in range(0, n, 200)]
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        return sum(pool.map(_export_png, jobs))


def run_from_files(args, device) -> dict:
    """What a user with stimuli on disk runs: a ``data.kind = "files"`` config (the ``paper`` preset) on a
    folder of 7,800 224-px PNGs and a responses file, in a fresh results folder (cold caches), timed from the
    command's start to the dashboard-ready folder.

    The files are made first and not timed: the paper-sim dataset (stimuli, and responses planted from their
    ABN features) over the whole 80,615-voxel thick mask - a files run maps the responses onto a whole mask, so
    this is 14 % more voxels than the study's 70,933 - and its stimuli written out as PNGs.
    """
    work = Path(args.workdir)
    sim_out, images = work / "sim", work / "images"
    sim_toml = work / "paper_sim_files.toml"
    # A smaller --voxels (smoke tests) is a seeded subset, which no mask describes: that run has no brain views.
    whole_mask = args.voxels >= 70_933
    lines = ['preset = "paper-sim"', f'device = "{device.type}"', "[simulation]",
             f"n_voxels = {0 if whole_mask else args.voxels}"]
    if args.n_train:
        lines.append(f"n_train = {args.n_train}")
    if args.n_test:
        lines.append(f"n_test = {args.n_test}")
    sim_toml.write_text("\n".join(lines) + "\n")
    t0 = time.perf_counter()
    cmd = [sys.executable, str(ROOT / "precompute.py"), "--config", str(sim_toml), "--out", str(sim_out), "--quiet",
           "--stages", "dataset"]
    print("making the files (not timed):", " ".join(cmd), flush=True)
    if subprocess.run(cmd, cwd=ROOT).returncode != 0:
        raise SystemExit("simulating the dataset failed")
    (dataset,) = list((sim_out / "cache" / "datasets").glob("sim-*"))
    sim_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    n_png = sum(export_stimuli(dataset / f"stimuli_{part}.npy", images / part) for part in ("train", "test"))
    export_s = time.perf_counter() - t0
    print(f"  simulated in {sim_s:.1f} s, {n_png} PNGs written in {export_s:.1f} s", flush=True)

    out, toml = work / "results-files", work / "files.toml"
    toml.write_text("\n".join([
        'preset = "paper"', f'device = "{device.type}"', "[data]", 'kind = "files"',
        f'stimuli_train = "{images / "train"}"', f'stimuli_test = "{images / "test"}"',
        f'responses = "{dataset / "responses.h5"}"', *([] if whole_mask else ['subject = ""']),
        "[features]", f"modes = {json.dumps(list(args.modes))}",
        "[encoding]", f"n_alphas = {args.n_alphas}", f'alpha_search = "{args.alpha_search}"']) + "\n")
    wall, summary = _precompute_timed(toml, out)
    return {
        "mode": "files", **_numbers(summary, args, wall),
        "brain_views": "S1 thick mask" if whole_mask else "none (a voxel subset is on no mask)",
        "features_s": summary["timings_s"].get("features"),
        # The command's wall time: start-up, the preflight checks of the files, every stage.
        "from_images_s": round(wall, 2),
        "setup_not_timed_s": {"simulate": round(sim_s, 1), "export_png": round(export_s, 1)},
    }


def _precompute_timed(toml: Path, out: Path) -> tuple[float, dict]:
    """``precompute.py --config toml --out out``: its wall seconds and the run's summary.json."""
    cmd = [sys.executable, str(ROOT / "precompute.py"), "--config", str(toml), "--out", str(out), "--quiet"]
    print("running:", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"precompute.py failed with exit code {proc.returncode}")
    return wall, json.loads(next(out.glob("*/summary.json")).read_text())


def _numbers(summary: dict, args, wall: float) -> dict:
    """What both pipeline runs report from a summary.json."""
    t = summary["timings_s"]
    knn = sum(c.get("knn_s", 0.0) for c in summary.get("rsa", {}).get("conditions", {}).values())
    return {
        "n_train": summary["n_train"], "n_test": summary["n_test"], "n_voxels": summary["n_voxels"],
        "feature_sets": list(args.modes), "stage_s": t, "ridge_s": t.get("encoding"),
        "ridge_per_feature_set_s": summary.get("encoding_seconds"), "stats_s": t.get("stats"),
        "knn_s": round(knn, 2), "rsa_s": t.get("rsa"), "umap_s": t.get("umap"), "cortex_s": t.get("cortex"),
        "n_significant": {m: c["n_significant"] for m, c in summary.get("conditions", {}).items()},
        "trustworthiness": summary.get("umap", {}).get("trustworthiness"),
        "total_s": round(wall, 2), "pipeline_s": summary.get("total_s"),
        "child_peak_rss_mb": summary.get("peak_rss_mb"), "child_peak_gpu_mb": summary.get("peak_gpu_mb"),
    }


def run_sweep(args, device, on_row=None) -> list[dict]:
    """Ridge (one feature set) and kNN (one condition) at each voxel count of ``--sweep``."""
    from core import rsa
    from core.config import make_config
    from core.pipeline.inputs import run_geometry

    counts = sorted(int(v) for v in args.sweep.split(",") if v.strip())
    cfg = make_config("paper-sim", {"simulation": {"n_voxels": 0}})  # the whole mask
    sim = cfg.simulation
    n_train, n_test = args.n_train or sim.n_train, args.n_test or sim.n_test
    geometry = run_geometry(cfg, Path(args.workdir) / "cache")
    counts = [c for c in counts if c <= geometry.n_voxels] or [geometry.n_voxels]
    X = synthetic_features(n_train + n_test, ("on", "off"), sim.seed)
    Y_train, Y_rep = plant(X, n_train, geometry, cfg)
    stages = set(args.sweep_stages.split(","))
    rows = []
    print(f"voxel sweep {counts} ({', '.join(sorted(stages))}); synthetic features, planted responses", flush=True)
    for n in counts:
        row = {"voxels": n}
        clock = Clock(device)
        if "ridge" in stages:
            Yn = np.ascontiguousarray(Y_train[:, :n])
            series = clock(f"ridge {n}", fit_ridge, X["on"], Yn, n_train, device, args.n_alphas, args.alpha_search)
            row["ridge_s"] = round(clock.times[f"ridge {n}"], 3)
            del Yn
        else:
            series = np.ascontiguousarray(Y_rep.mean(0)[:, :n])
        if "knn" in stages:
            clock(f"knn {n}", rsa.knn_correlation, series, k=cfg.rsa.k, device=device)
            row["knn_s"] = round(clock.times[f"knn {n}"], 3)
        rows.append(row)
        if on_row is not None:
            on_row(rows)
    base = rows[0]
    for row in rows:  # growth relative to the smallest count: ~n for ridge, ~n^2 for the kNN
        f = row["voxels"] / base["voxels"]
        for key in ("ridge_s", "knn_s"):
            if key in row and base.get(key):
                row[key.replace("_s", "_growth")] = round(row[key] / base[key], 2)
        row["voxel_ratio"] = round(f, 2)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="cpu | cuda | auto (default auto)")
    p.add_argument("--voxels", type=int, default=70_933, help="voxels (a seeded subset of S1's thick mask)")
    p.add_argument("--from-files", action="store_true",
                   help="the run a user with stimuli on disk makes: PNG folders + a responses file, kind 'files' "
                        "(on the whole 80,615-voxel mask; the files are made first, untimed)")
    p.add_argument("--synthetic-features", action="store_true",
                   help="skip the stimuli and the ResNet pass: synthetic features of the right shape")
    p.add_argument("--modes", default="on,off,uniform",
                   help="feature sets to fit (default on,off,uniform; on and off are required)")
    p.add_argument("--n-alphas", type=int, default=21,
                   help="alphas in the CV grid, 10^-2..10^8 (21 = the paper preset; 11 = one per decade)")
    p.add_argument("--alpha-search", choices=["grid", "refine"], default="refine",
                   help="score every alpha, or a coarse part refined per voxel (default refine, the paper presets')")
    p.add_argument("--alpha-check", type=int, default=0, metavar="VOXELS",
                   help="--synthetic-features: also fit this many voxels with all 21 alphas, the refined search and "
                        "11 alphas, and report how much test r changes")
    p.add_argument("--n-train", type=int, default=0, help="override the 7,200 training stimuli (smoke tests)")
    p.add_argument("--n-test", type=int, default=0, help="override the 600 test stimuli (smoke tests)")
    p.add_argument("--sweep", default=None,
                   help="comma-separated voxel counts for the ridge/kNN growth sweep "
                        "(default 10000,20000,40000,80000 on CUDA, none on the CPU; 'none' for none)")
    p.add_argument("--sweep-stages", default="ridge,knn", help="what the sweep times (ridge, knn)")
    p.add_argument("--skip-main", action="store_true", help="only the sweep")
    p.add_argument("--workdir", default=None, help="folder for the results and caches (default: a temporary one)")
    p.add_argument("--json", default=None, help="write every number to this JSON file")
    args = p.parse_args(argv)
    args.modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())

    import torch

    from core.device import resolve_device
    device = resolve_device(args.device)
    if args.sweep is None:
        args.sweep = "10000,20000,40000,80000" if device.type == "cuda" else ""
    if args.sweep.strip().lower() == "none":
        args.sweep = ""
    env = {"device": str(device), "torch": torch.__version__, "cpu_count": os.cpu_count(),
           "python": platform.python_version(), "load_average_at_start": os.getloadavg()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    print(json.dumps(env), flush=True)

    tmp = None
    if args.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="attnbrain-paper-")
        args.workdir = tmp.name
    Path(args.workdir).mkdir(parents=True, exist_ok=True)
    report: dict = {"environment": env}

    def save() -> None:  # after every part, so a run stopped at a time limit keeps what it measured
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(report, indent=1, default=str))

    if device.type == "cuda":
        env["gemm_ceiling"] = gemm_ceiling(device)
        print(json.dumps({"gemm_ceiling": env["gemm_ceiling"]}), flush=True)
    try:
        if not args.skip_main:
            run = run_synthetic if args.synthetic_features else run_from_files if args.from_files else run_pipeline
            report["main"] = run(args, device)
            save()
        if args.sweep:
            report["sweep"] = run_sweep(args, device, on_row=lambda rows: (report.update(sweep=rows), save()))
    finally:
        if tmp is not None:
            tmp.cleanup()
    report["peak_rss_mb"] = round(max(peak_rss_mb(), (report.get("main") or {}).get("child_peak_rss_mb") or 0), 1)
    gpu = peak_gpu_mb(device) or (report.get("main") or {}).get("child_peak_gpu_mb")
    if gpu is not None:
        report["peak_gpu_mb"] = round(gpu, 1)
    print(json.dumps(report, indent=1, default=str), flush=True)
    save()
    main_ = report.get("main", {})
    fields = {k: main_.get(k, "na") for k in ("total_s", "features_s", "ridge_s", "knn_s", "umap_s")}
    for key in ("analysis_s", "from_images_s"):
        if key in main_:
            fields[key] = main_[key]
    fields["peak_rss_mb"] = report["peak_rss_mb"]
    if "peak_gpu_mb" in report:
        fields["peak_gpu_mb"] = report["peak_gpu_mb"]
    fields["device"] = env.get("gpu", str(device)).replace(" ", "_")
    print("RESULT " + " ".join(f"{k}={v}" for k, v in fields.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
