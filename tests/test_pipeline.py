"""The staged pipeline end to end on a tiny simulated run: caching, partial reruns, crash safety, summary.json."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

TINY = """preset = "demo"
[simulation]
n_train = 120
n_test = 40
image_size = 64
n_voxels = 3000
[features]
input_size = 64
batch_size = 40
[encoding]
n_alphas = 9
n_folds = 3
[rsa]
k = 10
n_pairs = 20000
[umap]
n_neighbors = 10
seed = %d
"""

pytestmark = pytest.mark.slow


def _precompute(out, cfg, *extra, env=None, check=True):
    # Up to UMAP: the cortex assets stage (pycortex pixel maps, WebGL viewer) has its own tests.
    proc = subprocess.run([sys.executable, str(ROOT / "precompute.py"), "--config", str(cfg), "--out", str(out),
                           "--device", "cpu", "--quiet", "--stages", "umap", *extra], capture_output=True, text=True, cwd=ROOT,
                          timeout=900, env={**os.environ, "OMP_NUM_THREADS": "2", **(env or {})})
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _ran(stdout: str) -> list[str]:
    """Stage names that computed (not 'cached') in a precompute stdout."""
    return [ln.split()[0] for ln in stdout.splitlines() if ln.startswith("  ") and " s " in ln + " "
            and "cached" not in ln and ln.split()[0] in
            ("dataset", "features", "thumbnails", "encoding", "stats", "rsa", "umap", "cortex")]


@pytest.fixture(scope="module")
def base(tmp_path_factory, s1_geometry, cortex_cache_dir):
    """One uninterrupted tiny run; the pycortex geometry cache is copied in so each run skips the ROI parse."""
    root = tmp_path_factory.mktemp("pipe")
    cfg = root / "tiny.toml"
    cfg.write_text(TINY % 0)
    out = root / "ref"
    _seed_cortex_cache(out, cortex_cache_dir)
    proc = _precompute(out, cfg)
    return root, cfg, out, proc, cortex_cache_dir


def _seed_cortex_cache(out: Path, src: str):
    cache = out / "cache" / "cortex"
    cache.mkdir(parents=True, exist_ok=True)
    for f in Path(src).glob("geometry_*.npz"):
        shutil.copy(f, cache / f.name)


def _summary(out: Path) -> dict:
    (f,) = list(out.glob("*/summary.json"))
    return json.loads(f.read_text())


def _arrays(out: Path, umap_seed: int = 0) -> dict[str, np.ndarray]:
    """Every array of the stage entries that make up the run with this UMAP seed (other runs may share the folder)."""
    (run,) = [json.loads(f.read_text()) for f in out.glob("*/run.json")
              if json.loads(f.read_text())["config"]["umap"]["seed"] == umap_seed]
    arrays = {}
    for name, key in run["stages"].items():
        for p in sorted((out / "cache" / "stages" / f"{name}-{key}").glob("*.npy")):
            arrays[f"{p.parent.name}/{p.name}"] = np.load(p)
    return arrays


def test_summary_has_the_contract_fields(base):
    _, _, out, proc, _ = base
    s = _summary(out)
    for key in ("run_id", "preset", "simulated", "n_train", "n_test", "n_voxels", "device", "timings_s",
                "peak_rss_mb", "versions", "config", "conditions", "truth"):
        assert key in s, key
    assert s["simulated"] is True and (s["n_train"], s["n_test"], s["n_voxels"]) == (120, 40, 3000)
    for m in ("on", "off"):
        c = s["conditions"][m]
        assert set(c) >= {"n_significant", "bins", "median_r_significant"}
        assert list(c["bins"]) == ["0-0.1", "0.1-0.2", "0.2-0.3", ">=0.3"]
        assert sum(c["bins"].values()) <= c["n_significant"]
    assert set(s["truth"]) >= {"dominant_recovery", "null_fpr_p01", "n_null"}
    assert set(s["timings_s"]) >= {"dataset", "features", "encoding", "stats", "rsa", "umap"}
    # The planted truth of the simulation is recovered even at this tiny size; the null voxels are calibrated
    # (0 <= FPR; 348 null voxels: 99% binomial upper bound around 0.01 is ~0.03).
    assert s["truth"]["null_fpr_p01"] <= 0.03
    # Each condition's UMAP keeps correlation neighbourhoods better than chance (a random layout scores ~0.5).
    for m in ("on", "off"):
        assert 0.6 < s["umap"]["trustworthiness"][m] <= 1.0


def test_rerun_is_fully_cached(base):
    _, cfg, out, _, _ = base
    proc = _precompute(out, cfg)
    assert _ran(proc.stdout) == []


def test_new_umap_seed_reruns_only_umap(base):
    root, _, out, _, _ = base
    cfg2 = root / "seed1.toml"
    cfg2.write_text(TINY % 1)
    dry = _precompute(out, cfg2, "--dry-run")
    planned = [ln.split()[0] for ln in dry.stdout.splitlines() if " RUN " in ln]
    assert planned == ["umap"]
    proc = _precompute(out, cfg2)
    assert _ran(proc.stdout) == ["umap"]
    assert len(list(out.glob("*/summary.json"))) == 2   # both runs listed in the one results folder


@pytest.mark.parametrize("fault", ["features:start", "encoding:mid-write", "stats:before-rename",
                                   "rsa:before-index", "umap:mid-write", "dataset:before-rename"])
def test_sigkill_then_rerun_gives_identical_results(base, tmp_path, fault):
    _, cfg, ref, _, cortex_cache = base
    out = tmp_path / "killed"
    _seed_cortex_cache(out, cortex_cache)
    if not fault.startswith("dataset"):
        # Share the reference's features/dataset caches so only the stages under test recompute.
        for sub in ("datasets", "features"):
            shutil.copytree(ref / "cache" / sub, out / "cache" / sub)
    killed = _precompute(out, cfg, env={"ATTNBRAIN_FAULT": fault}, check=False)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not list(out.glob("*/summary.json"))
    _precompute(out, cfg)
    a, b = _arrays(ref), _arrays(out)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert not list((out / "cache" / "stages").glob(".*tmp*")), "temporary folders left behind"
