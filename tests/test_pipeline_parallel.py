"""The stage scheduler with parallel stages: an ``isolated`` stage runs in its own process beside the others,
dependencies are respected, results do not depend on it, and a failing stage stops new stages but lets the
running one finish and be cached."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest

from core._validation import InputError
from core.config import make_config
from core.pipeline.runner import Pipeline, default_parallel_stages
from core.pipeline.schema import ArraySpec, Schema, StageSchema
from core.pipeline.stage import Stage

PAUSE = 1.5  # seconds the slow toy stages sleep: well above a spawned process's start-up here (~0.5 s)


def _body(ctx, name: str, slow: bool):
    t0 = time.time()
    if slow:
        time.sleep(PAUSE)
    if os.environ.get("TOY_FAIL") == name:
        raise ValueError(f"stage {name} failed")
    base = sum(float(np.asarray(ctx[d].arrays["x"]).sum()) for d in sorted(ctx.inputs))
    return ({"x": np.full(3, base + ord(name), dtype=np.float64)},
            {"t0": t0, "t1": time.time(), "pid": os.getpid()})


# Module level, so that a spawned process can unpickle the isolated stage's function.
def stage_a(ctx):
    return _body(ctx, "a", False)


def stage_b(ctx):
    return _body(ctx, "b", True)


def stage_c(ctx):
    return _body(ctx, "c", True)


def stage_d(ctx):
    return _body(ctx, "d", False)


STAGES = {"a": Stage("a", stage_a, (), ("encoding",)),
          "b": Stage("b", stage_b, ("a",), ("stats",), isolated=True),   # a -> (b elsewhere, c here) -> d
          "c": Stage("c", stage_c, ("a",), ("rsa",)),
          "d": Stage("d", stage_d, ("b", "c"), ("umap",))}


# Each toy stage writes one array x of 3 values; the spawned stage commits against this schema too.
SCHEMA = Schema({n: StageSchema((ArraySpec("x", "float64", (3,)),), conditions=()) for n in STAGES})


def _pipe(out):
    return Pipeline(make_config("demo"), out, stages=STAGES, device="cpu", progress=False, schema=SCHEMA)


def test_isolated_stage_overlaps_and_results_do_not_change(tmp_path):
    seen = []
    seq = _pipe(tmp_path / "seq").run(parallel=1)
    par = _pipe(tmp_path / "par").run(parallel=2, on_stage=lambda n, e: seen.append(n))
    assert list(par) == ["a", "b", "c", "d"]                 # plan order, whatever the finishing order
    assert seen[0] == "a" and seen[-1] == "d" and sorted(seen) == ["a", "b", "c", "d"]
    for name in seq:
        np.testing.assert_array_equal(par[name].arrays["x"], seq[name].arrays["x"])
        assert not par[name].cached and par[name].seconds > 0
    m = {name: par[name].meta for name in par}
    assert m["b"]["pid"] != os.getpid() and m["c"]["pid"] == os.getpid()   # b ran in another process
    assert m["b"]["t0"] < m["c"]["t1"] and m["c"]["t0"] < m["b"]["t1"]     # ... at the same time as c
    assert m["d"]["t0"] >= max(m["b"]["t1"], m["c"]["t1"]) and m["a"]["t1"] <= min(m["b"]["t0"], m["c"]["t0"])
    s = {name: seq[name].meta for name in seq}
    assert {v["pid"] for v in s.values()} == {os.getpid()} and s["c"]["t0"] >= s["b"]["t1"]
    # A rerun reads everything from the cache, isolated stage included.
    again = _pipe(tmp_path / "par").run(parallel=2)
    assert all(entry.cached for entry in again.values())


@pytest.mark.parametrize("failing, finished", [("b", "c"), ("c", "b")])
def test_a_failing_stage_lets_the_other_finish_and_be_cached(tmp_path, monkeypatch, failing, finished):
    monkeypatch.setenv("TOY_FAIL", failing)        # the spawned process inherits the environment
    with pytest.raises(ValueError, match=f"stage {failing} failed"):
        _pipe(tmp_path / "out").run(parallel=2)
    monkeypatch.delenv("TOY_FAIL")
    res = _pipe(tmp_path / "out").run(parallel=2)
    assert res["a"].cached and res[finished].cached                     # kept from the failed run
    assert not res[failing].cached and not res["d"].cached              # d never ran before
    assert not list((tmp_path / "out" / "cache" / "stages").glob(".*tmp*"))


def test_default_parallel_stages(monkeypatch):
    monkeypatch.delenv("ATTNBRAIN_PARALLEL_STAGES", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    assert default_parallel_stages() == 2
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    assert default_parallel_stages() == 1
    monkeypatch.setenv("ATTNBRAIN_PARALLEL_STAGES", "3")
    assert default_parallel_stages() == 3
    monkeypatch.setenv("ATTNBRAIN_PARALLEL_STAGES", "two")
    with pytest.raises(InputError, match="ATTNBRAIN_PARALLEL_STAGES"):
        default_parallel_stages()


def test_background_helpers_start_only_with_stages_side_by_side(tmp_path):
    """A stage's ``prewarm`` (compiling UMAP's kernels in the background) competes with the stages themselves
    on a machine without cores to spare: the run starts it only when it runs stages side by side, and only for
    a stage it will compute."""
    import dataclasses
    calls = []
    stages = dict(STAGES, d=dataclasses.replace(STAGES["d"], prewarm=lambda cfg, cache: calls.append("d")))
    Pipeline(make_config("demo"), tmp_path / "one", stages=stages, device="cpu", progress=False,
             schema=SCHEMA).run(parallel=1)
    assert calls == []
    Pipeline(make_config("demo"), tmp_path / "two", stages=stages, device="cpu", progress=False,
             schema=SCHEMA).run(parallel=2)
    assert calls == ["d"]
    Pipeline(make_config("demo"), tmp_path / "two", stages=stages, device="cpu", progress=False,
             schema=SCHEMA).run(parallel=2)
    assert calls == ["d"]          # everything cached: nothing to prepare for


@pytest.mark.slow
def test_background_pycortex_preparation_builds_every_cache_the_cortex_stage_reads(tmp_path, cortex_cache_dir):
    """The cortex stage's caches built beforehand (what a run with stages side by side starts in the background):
    the stage afterwards creates and rewrites no pycortex cache file, and the helper leaves nothing half-made."""
    import shutil

    from core.config import PRESETS
    from core.cortex.assets import _cortex_assets
    from core.pipeline.prewarm import _cortex_warm_marker, _prewarm_cortex, _warm_cortex_job
    from core.pipeline.inputs import run_geometry
    cache = tmp_path / "cache"
    (cache / "cortex").mkdir(parents=True)
    for f in Path(cortex_cache_dir).glob("geometry_*.npz"):   # the session's S1 geometry: skips the ROI parse
        shutil.copy(f, cache / "cortex" / f.name)
    cfg = PRESETS["demo"]
    _warm_cortex_job(cfg, str(cache))
    pc_cache = cache / "cortex" / "pycortex"
    before = {p: p.stat().st_mtime_ns for p in pc_cache.rglob("*") if p.is_file()}
    assert before and _cortex_warm_marker(cfg, cache).exists()
    assert not list((cache / "cortex").glob(".prewarm-*"))      # the private build folder is gone
    assert _prewarm_cortex(cfg, cache) is None                   # once per results folder and subject
    geometry = run_geometry(cfg, cache)
    bins = {m: np.random.default_rng(0).integers(-2, 4, geometry.n_voxels).astype(np.int8) for m in ("on", "off")}
    flat, _ = _cortex_assets(geometry, bins, tmp_path / "assets", "t", pc_cache)
    after = {p: p.stat().st_mtime_ns for p in pc_cache.rglob("*") if p.is_file()}
    assert after == before
    assert (tmp_path / "assets" / "viewer" / "index.html").is_file() and flat["images"]["on"].is_file()
