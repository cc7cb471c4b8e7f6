"""The staged pipeline end to end on a tiny simulated run: caching, partial reruns, crash safety (SIGKILL at a
fault point of every stage and of the run's own writes, then a rerun), a full disk, determinism, summary.json."""
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
n_runs = 3
ar_range = [0.0, 0.0]
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


STAGES = "umap,thumbnails"


def _precompute(out, cfg, *extra, env=None, check=True, stages=STAGES):
    # Up to UMAP and the thumbnails: the cortex assets stage (pycortex pixel maps, WebGL viewer) is slow and
    # has its own kill test below. The run gets its own session and its output goes to files, so that child
    # processes it leaves behind (after a SIGKILL) can neither hang the test on a pipe nor outlive it:
    # ``proc.survivors`` counts them before they are killed.
    import signal
    import tempfile
    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        proc = subprocess.Popen([sys.executable, str(ROOT / "precompute.py"), "--config", str(cfg), "--out",
                                 str(out), "--device", "cpu", "--quiet", "--stages", stages, *extra], stdout=fo,
                                stderr=fe, text=True, cwd=ROOT, start_new_session=True,
                                env={**os.environ, "OMP_NUM_THREADS": "2", "ATTNBRAIN_PARALLEL_STAGES": "1",
                                     **(env or {})})
        try:
            proc.wait(timeout=900)
        finally:
            # Children get their parent-death SIGKILL (and multiprocessing's resource tracker its EOF) only
            # after the parent is gone: allow them 10 s to go before counting them as survivors.
            import time
            deadline = time.monotonic() + 10
            while True:
                survivors = [pid for pid in _pids_in_group(proc.pid) if pid != proc.pid]
                if not survivors or proc.returncode is None or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        fo.seek(0)
        fe.seek(0)
        result = subprocess.CompletedProcess(proc.args, proc.returncode, fo.read(), fe.read())
    result.survivors = survivors
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def _pids_in_group(pgid: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:                      # field 5 of /proc/PID/stat: the process group
            pids.append(int(stat.parent.name))
    return pids


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
    assert set(s["truth"]) >= {"dominant_recovery", "null_fpr_p01", "n_null", "delta_r_spearman", "n_null_contrast",
                               "null_contrast_mean_delta_r", "null_contrast_mean_delta_r_se"}
    assert set(s["timings_s"]) >= {"dataset", "features", "encoding", "stats", "rsa", "umap"}
    # The null voxels are calibrated. The tiny run's noise is white (ar_range = [0, 0]; the haemodynamics and
    # delays stay): for a pure-noise voxel with independent Gaussian samples the t-test of r is exact whatever
    # the prediction's autocorrelation, so the share of null voxels at p <= 0.01 lies in the 99% binomial
    # interval of 0.01 (AR(1) noise makes the parametric test anti-conservative: the stats stage's concern).
    from scipy.stats import binom
    n_null = s["truth"]["n_null"]
    assert n_null > 100
    assert s["truth"]["null_fpr_p01"] * n_null <= binom.ppf(0.995, n_null, 0.01)
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


# Every stage is killed at least once, at the points its own code and the store pass through: as it starts,
# while it computes (``:during``: SIGKILL 0.5 s in, or at its end if it is quicker), with an array file half
# written, after its folder is complete but before the rename, after the rename but before the index; and the
# run's own writes (run.json, summary.json, the summary's temporary file). Listed in the order a one-at-a-time
# run passes through them.
KILLS = ["dataset:during", "dataset:before-rename", "features:start", "features:during", "encoding:during",
         "encoding:mid-write", "stats:during", "stats:before-rename", "rsa:during", "rsa:before-index",
         "umap:during", "umap:mid-write", "thumbnails:mid-write", "run:before-register", "run:before-summary",
         "run:mid-summary"]


def _leftovers(out: Path) -> list[Path]:
    from core.pipeline.store import ResultsStore
    found = ResultsStore(out).temporaries()
    found += [p for p in out.rglob("*") if ".tmp" in p.name and p not in found]
    return found


# At this size the UMAP stage embeds its conditions in-process (core.embedding.default_umap_workers spawns workers
# from 30,000 voxels); tests/test_proc.py checks that spawned workers and helpers die with a killed parent, the
# survivors check below that a killed run leaves no process of any kind behind.
def test_sigkill_at_every_fault_point_then_rerun_gives_identical_results(base, tmp_path):
    """One results folder, killed at each fault point in turn: every run resumes from what the killed runs
    before it left (their half-written entries and temporaries included) and is killed at the next point,
    further on. Each kill leaves no summary and no surviving process; the run that finally completes gives
    arrays bit-identical to the uninterrupted run's and leaves no temporary behind. Resuming from a cache
    entry is what a rerun after any single kill does too, so this covers every kill on its own, at one
    start-up per kill instead of a full rerun per kill."""
    _, cfg, ref, _, cortex_cache = base
    out = tmp_path / "killed"
    _seed_cortex_cache(out, cortex_cache)
    for fault in KILLS:
        killed = _precompute(out, cfg, env={"ATTNBRAIN_FAULT": fault}, check=False)
        assert killed.returncode == -9, (fault, killed.returncode, killed.stderr[-2000:])
        assert not list(out.glob("*/summary.json")), fault
        assert not killed.survivors, f"processes outlived the run killed at {fault}: {killed.survivors}"
    _precompute(out, cfg)
    a, b = _arrays(ref), _arrays(out)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert not _leftovers(out), "temporary files left behind"


@pytest.fixture(scope="module")
def side_by_side(base, tmp_path_factory):
    """The tiny run with parallel stages (the default on machines with 8+ cores) and the cortex assets: they are
    built in their own process while rsa and umap run here."""
    _, cfg, _, _, cortex_cache = base
    out = tmp_path_factory.mktemp("parallel") / "run"
    _seed_cortex_cache(out, cortex_cache)
    proc = _precompute(out, cfg, env={"ATTNBRAIN_PARALLEL_STAGES": "2"}, stages=STAGES + ",cortex")
    return out, proc


def _cortex_files(out: Path) -> dict[str, bytes]:
    (entry,) = list((out / "cache" / "stages").glob("cortex-*"))
    return {str(p.relative_to(entry)): p.read_bytes() for p in sorted(entry.rglob("*")) if p.is_file()
            and p.name != "meta.json"}


def test_sigkill_in_the_cortex_assets_stage(base, side_by_side, tmp_path):
    """The cortex stage (pycortex flatmaps, pixel lookup, WebGL viewer) killed while it builds pycortex's caches
    from cold, then rerun: the same files as the uninterrupted run (the side-by-side run's cortex entry, built in
    another process from its own cold caches), no temporaries."""
    _, cfg, ref, _, cortex_cache = base
    out = tmp_path / "killed"
    _seed_cortex_cache(out, cortex_cache)
    for sub in ("datasets", "features"):
        shutil.copytree(ref / "cache" / sub, out / "cache" / sub)
    killed = _precompute(out, cfg, env={"ATTNBRAIN_FAULT": "cortex:during", "ATTNBRAIN_FAULT_DELAY": "3"},
                         check=False, stages="cortex")
    assert killed.returncode == -9, killed.stderr[-2000:]
    _precompute(out, cfg, stages="cortex")
    assert not _leftovers(out), "temporary files left behind"
    outs = {"clean": _cortex_files(side_by_side[0]), "killed": _cortex_files(out)}
    assert outs["clean"].keys() == outs["killed"].keys()
    differ = [k for k in outs["clean"] if outs["clean"][k] != outs["killed"][k]]
    # pycortex writes the viewer's datasets into index.html in an order that depends on Python's hash seed,
    # so that one file differs between any two runs: the same size and the same datasets are required of it.
    import re
    page = "viewer/index.html"
    if page in differ:
        ids = [sorted(set(re.findall(rb"__[0-9a-f]{16}", outs[n][page]))) for n in ("clean", "killed")]
        assert len(outs["clean"][page]) == len(outs["killed"][page]) and ids[0] == ids[1]
        differ.remove(page)
    assert not differ, differ


def test_full_disk_reports_one_line_and_keeps_previous_results(base, tmp_path):
    """ENOSPC while a stage writes (injected in the store's write path): exit 3, one error line, the finished
    run still opens with the same arrays, no temporaries."""
    _, cfg, ref, _, _ = base
    out = tmp_path / "full"
    shutil.copytree(ref, out)
    before = _arrays(out)
    proc = _precompute(out, cfg, "--force", "encoding", env={"ATTNBRAIN_FAULT": "enospc@encoding:mid-write"},
                       check=False)
    assert proc.returncode == 3, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "no space left on device" in lines[0], lines
    _assert_previous_results_intact(out, before)


def _assert_previous_results_intact(out: Path, before: dict[str, np.ndarray]) -> None:
    """After a failed run: the same arrays as before it, the folder still opens, no temporaries."""
    from core.outputs.reader import open_results
    after = _arrays(out)
    assert before.keys() == after.keys()
    for k in before:                                  # NaN (invalid voxels) compares equal here
        np.testing.assert_array_equal(before[k], after[k], err_msg=k)
    assert open_results(out).n_voxels == 3000
    assert not _leftovers(out)


def test_full_tmpfs_reports_one_line_and_keeps_previous_results(base, tmp_path):
    """The same on a real size-limited filesystem (a tmpfs a little larger than the results), where mounting
    is allowed (root); skipped elsewhere."""
    _, cfg, ref, _, _ = base
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    # tmpfs charges whole 4 KiB pages per file and folder.
    used = sum(-(-p.stat().st_size // 4096) * 4096 if p.is_file() else 4096 for p in ref.rglob("*"))
    size_kb = used // 1024 + 900          # room for the copy, not for a second encoding entry (~1.9 MB)
    mount = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(mnt)],
                           capture_output=True, text=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        out = mnt / "results"
        shutil.copytree(ref, out)
        before = _arrays(out)
        proc = _precompute(out, cfg, "--force", "encoding", check=False)
        assert proc.returncode == 3, (proc.returncode, proc.stderr[-2000:])
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "no space left on device" in lines[0], lines
        _assert_previous_results_intact(out, before)
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_two_runs_with_the_same_seed_are_identical(base, tmp_path):
    """Determinism: a second run from scratch in another folder (same config and seed, same machine and thread
    count) gives bit-identical arrays in every stage (see docs/reliability.md, Determinism)."""
    _, cfg, ref, _, cortex_cache = base
    out = tmp_path / "again"
    _seed_cortex_cache(out, cortex_cache)
    _precompute(out, cfg)
    a, b = _arrays(ref), _arrays(out)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_stages_run_side_by_side_give_identical_results(base, side_by_side):
    """Parallel stages: the schedule changes, nothing else. Every array of the one-at-a-time run is
    bit-identical, and the cortex entry is complete (flatmaps and viewer on disk)."""
    ref = base[2]
    out, proc = side_by_side
    assert proc.survivors == []
    a, b = _arrays(ref), _arrays(out)
    assert a.keys() <= b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    summary = _summary(out)
    assert summary["parallel_stages"] == 2 and summary["timings_s"]["cortex"] > 0
    entry = next((out / "cache" / "stages").glob("cortex-*"))
    meta = json.loads((entry / "meta.json").read_text())
    assert (entry / meta["viewer"] / "index.html").is_file()
    assert all((entry / p).is_file() for p in _files(meta["flatmap"]))


def _files(tree) -> list[str]:
    return [p for v in tree.values() for p in (_files(v) if isinstance(v, dict) else [v])]


def test_one_thread_instead_of_two_agrees_within_tolerance(base, tmp_path):
    """Determinism across thread counts: BLAS and oneDNN split their sums by thread, so float results may
    differ in the last bits. Integer-valued and non-BLAS outputs (voxel geometry, thumbnails, the simulated
    stimuli) stay bit-exact; features, ridge predictions, r/p and kNN distances agree to float32 tolerance;
    discrete decisions derived from them (significance, bins, neighbour lists) agree for all but near-tie
    voxels; UMAP coordinates are only compared through their quality (summary trustworthiness)."""
    _, cfg, ref, _, cortex_cache = base
    out = tmp_path / "one-thread"
    _seed_cortex_cache(out, cortex_cache)
    _precompute(out, cfg, env={"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    a, b = _arrays(ref), _arrays(out)
    assert a.keys() == b.keys()
    report = {}
    for k in a:
        stage, name = k.split("/")[0].split("-")[0], Path(k).stem
        x, y = a[k], b[k]
        assert x.shape == y.shape and x.dtype == y.dtype, k
        if stage in ("thumbnails",) or (stage == "dataset" and not name.startswith("truth_")):
            np.testing.assert_array_equal(x, y, err_msg=k)
        elif stage == "umap":
            continue
        elif x.dtype.kind == "f":
            report[k] = float(np.nanmax(np.abs(x.astype(np.float64) - y))) if x.size else 0.0
            np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-4, err_msg=k)
        else:
            same = np.mean(x == y) if x.size else 1.0
            report[k] = float(1 - same)
            assert same >= 0.98, (k, same)
    print(report)
    s_ref, s_one = _summary_of(ref), _summary_of(out)
    for m in ("on", "off"):
        assert abs(s_ref["umap"]["trustworthiness"][m] - s_one["umap"]["trustworthiness"][m]) < 0.05


def _summary_of(out: Path, umap_seed: int = 0) -> dict:
    for f in out.glob("*/summary.json"):
        s = json.loads(f.read_text())
        if s["config"]["umap"]["seed"] == umap_seed:
            return s
    raise AssertionError("no summary for that seed")
