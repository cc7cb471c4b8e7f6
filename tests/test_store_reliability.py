"""Fast reliability checks of the store and the CLI: a full disk while writing, damaged cache entries, the
results-folder lock between two precompute processes, and the fault hooks. The SIGKILL-and-rerun tests on a
real tiny run are in tests/test_pipeline.py (slow)."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from core.config import make_config
from core.pipeline.runner import Pipeline
from core.pipeline.schema import ArraySpec, Schema, StageSchema
from core.pipeline.stage import Stage
from core.pipeline.store import ResultsStore
from core.pipeline.faults import fault_point

ROOT = Path(__file__).resolve().parents[1]


def _toy_stages(calls: list):
    def a(ctx):
        calls.append("a")
        return {"x": np.arange(6, dtype=np.float32), "y": np.ones((2, 3))}, {"n": 6}

    def b(ctx):
        calls.append("b")
        return {"z": np.asarray(ctx["a"].arrays["x"]) * 2}, {}
    return {"a": Stage("a", a, (), ("encoding",)), "b": Stage("b", b, ("a",), ("stats",))}


# The toy graph's own results schema: the store checks every commit against one.
TOY_SCHEMA = Schema({
    "a": StageSchema((ArraySpec("x", "float32", ("n",)), ArraySpec("y", "float64", (2, 3))), conditions=()),
    "b": StageSchema((ArraySpec("z", "float32", ("n",)),), conditions=()),
})


def _pipe(out, calls):
    return Pipeline(make_config("demo"), out, stages=_toy_stages(calls), device="cpu", progress=False,
                    schema=TOY_SCHEMA)


def test_enospc_while_writing_keeps_the_old_entry_and_leaves_no_temporaries(tmp_path, monkeypatch):
    calls = []
    pipe = _pipe(tmp_path / "out", calls)
    first = pipe.run()
    y = np.asarray(first["a"].arrays["y"]).copy()
    monkeypatch.setenv("ATTNBRAIN_FAULT", "enospc@a:mid-write")     # a writes two arrays: the second fails
    with pytest.raises(OSError) as exc:
        _pipe(tmp_path / "out", calls).run(force=("a",))
    assert exc.value.errno == errno.ENOSPC
    monkeypatch.delenv("ATTNBRAIN_FAULT")
    store = ResultsStore(tmp_path / "out")
    assert store.temporaries() == []
    np.testing.assert_array_equal(store.read("a", pipe.keys["a"]).arrays["y"], y)


def test_a_damaged_cached_entry_is_recomputed(tmp_path):
    calls = []
    pipe = _pipe(tmp_path / "out", calls)
    pipe.run()
    assert calls == ["a", "b"]
    entry = pipe.entry_path("a")
    (entry / "y.npy").write_bytes((entry / "y.npy").read_bytes()[:90])   # cut short outside the tool
    again = _pipe(tmp_path / "out", calls).run()
    assert calls == ["a", "b", "a"]                                     # a recomputed, b still cached
    np.testing.assert_array_equal(again["a"].arrays["y"], np.ones((2, 3)))


def test_store_refuses_object_arrays(tmp_path):
    store = ResultsStore(tmp_path)
    with pytest.raises(TypeError, match="never pickles"):
        store.commit(store.new_workdir("s", "k"), "s", "k", {"o": np.array([{}, None], dtype=object)}, {})
    assert store.temporaries() == []


def test_clean_temporaries_finds_every_kind(tmp_path):
    store = ResultsStore(tmp_path)
    made = [tmp_path / "cache" / "stages" / ".rsa-k.tmp-abc", tmp_path / "cache" / "datasets" / ".sim-x.tmp-1",
            tmp_path / "run1" / ".summary.json.x1.tmp", tmp_path / "cache" / "features" / "e" / ".X_on.npy.a.tmp"]
    for p in made:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.mkdir() if "tmp-" in p.name else p.write_text("x")
    (tmp_path / "run1" / "summary.json").write_text("{}")
    assert store.temporaries() == sorted(made)
    assert store.clean_temporaries() == 4 and store.temporaries() == []
    assert (tmp_path / "run1" / "summary.json").is_file()


def test_fault_point_injects_enospc_only_when_asked(monkeypatch):
    fault_point("x:start")                          # no variable: nothing happens
    monkeypatch.setenv("ATTNBRAIN_FAULT", "enospc@x:start")
    fault_point("y:start")
    with pytest.raises(OSError, match="No space left"):
        fault_point("x:start")


_HOLDER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {root!r})
    from pathlib import Path
    from core.config import load_config
    from core.pipeline.runner import Pipeline
    from core.pipeline.store import writer_session
    pipe = Pipeline(load_config({cfg!r}), Path({out!r}))
    with writer_session(pipe.store, pipe.run_id):
        print("locked", flush=True)
        time.sleep(60)
""")

_SMALL = ("[simulation]\nn_train = 20\nn_test = 10\nimage_size = 64\nn_voxels = 300\n"
          "[features]\ninput_size = 64\n[umap]\nseed = {seed}\n")


def _precompute_proc(cfg, out, **kw):
    return subprocess.Popen([sys.executable, str(ROOT / "precompute.py"), "--config", str(cfg), "--out", str(out),
                             "--quiet", "--device", "cpu", "--stages", "umap"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "ATTNBRAIN_PARALLEL_STAGES": "1"}, **kw)


def test_a_second_precompute_of_the_same_run_refuses(tmp_path):
    """While one process writes a run, a second precompute of the same run exits 2 at once with one clear line
    and writes nothing but the lock files."""
    out = tmp_path / "results"
    out.mkdir()
    cfg = tmp_path / "c.toml"
    cfg.write_text(_SMALL.format(seed=0))
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER.format(root=str(ROOT), out=str(out), cfg=str(cfg))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(ROOT / "precompute.py"), "--config", str(cfg), "--out", str(out),
                               "--quiet", "--device", "cpu"], capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert proc.returncode == 2, proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "another precompute.py is computing run" in lines[0]
        assert time.perf_counter() - t0 < 120                       # refused at once, not after the work
        written = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
        assert written == ["cache", "cache/locks", *sorted(f"cache/locks/{p.name}"
                                                           for p in (out / "cache" / "locks").iterdir())]
    finally:
        holder.kill()
        holder.wait()
    # Once the holder is gone the run's lock is free again (flock dies with its process).
    from core.config import load_config
    from core.pipeline.runner import Pipeline
    from core.pipeline.store import writer_session
    pipe = Pipeline(load_config(cfg), out)
    with writer_session(pipe.store, pipe.run_id):
        pass


def test_two_runs_write_side_by_side_into_one_folder(tmp_path):
    """Two precompute.py of different runs (another UMAP seed) started together on one folder: both finish,
    every stage entry they share is computed once (the other run reads it: "cached" in its log), and each run's
    arrays are those of the same run computed alone in its own folder."""
    import json

    from core.outputs.reader import open_results
    cfgs = []
    for seed in (0, 1):
        cfgs.append(tmp_path / f"c{seed}.toml")
        cfgs[-1].write_text(_SMALL.format(seed=seed))
    out = tmp_path / "shared"
    procs = [_precompute_proc(c, out) for c in cfgs]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, e[-2000:]
    summaries = [json.loads(f.read_text()) for f in sorted(out.glob("*/summary.json"))]
    assert len(summaries) == 2
    shared = [n for n in summaries[0]["stage_keys"] if summaries[0]["stage_keys"][n] == summaries[1]["stage_keys"][n]]
    assert {"dataset", "features", "encoding", "stats", "rsa"} <= set(shared) and "umap" not in shared
    for name in shared:
        computed = [s["timings_s"].get(name, 0) > 0 for s in summaries]
        assert sum(computed) <= 1, f"{name} computed by both runs"
        assert len(list((out / "cache" / "stages").glob(f"{name}-*"))) == 1
    assert not list((out / "cache" / "stages").glob(".*.tmp-*"))
    # The same run alone in an empty folder: identical arrays.
    alone = tmp_path / "alone"
    p = _precompute_proc(cfgs[1], alone)
    assert p.wait(timeout=600) == 0
    a, b = open_results(alone), open_results(out, run_id=open_results(alone).run_id)
    for stage in ("encoding", "stats", "umap"):
        for name, arr in a.stage(stage).arrays.items():
            np.testing.assert_array_equal(np.asarray(b.stage(stage).arrays[name]), np.asarray(arr), err_msg=name)


def test_out_on_a_full_disk_reports_one_line_and_exit_3(tmp_path, monkeypatch, capsys):
    """precompute.py maps a write failure to one line and exit code 3 (documented), not a traceback."""
    import precompute
    err = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.npy"))
    assert precompute._write_failed(err, tmp_path) == 3
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "no space left on device" in line and "intact" in line
    assert os.fspath(tmp_path) in line
