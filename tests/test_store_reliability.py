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
    import precompute
    lock = precompute._lock_results(Path({out!r}))
    print("locked" if lock else "busy", flush=True)
    time.sleep(60)
""")


def test_second_precompute_on_the_same_folder_refuses(tmp_path):
    """While one precompute process holds a results folder, a second one exits 2 with one clear line."""
    out = tmp_path / "results"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER.format(root=str(ROOT), out=str(out))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        cfg = tmp_path / "c.toml"
        cfg.write_text("[simulation]\nn_train = 20\nn_test = 10\nimage_size = 64\nn_voxels = 300\n"
                       "[features]\ninput_size = 64\n")
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, str(ROOT / "precompute.py"), "--config", str(cfg), "--out", str(out),
                               "--quiet", "--device", "cpu"], capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert proc.returncode == 2, proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "another precompute.py is writing to this results folder" in lines[0]
        assert time.perf_counter() - t0 < 120                       # refused at once, not after the work
        assert sorted(p.name for p in out.iterdir()) == [".lock"]   # nothing written
    finally:
        holder.kill()
        holder.wait()
    # Once the holder is gone the lock is free again (flock dies with its process).
    import precompute
    lock = precompute._lock_results(out)
    assert lock is not None
    lock.close()


def test_out_on_a_full_disk_reports_one_line_and_exit_3(tmp_path, monkeypatch, capsys):
    """precompute.py maps a write failure to one line and exit code 3 (documented), not a traceback."""
    import precompute
    err = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.npy"))
    assert precompute._write_failed(err, tmp_path) == 3
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "no space left on device" in line and "intact" in line
    assert os.fspath(tmp_path) in line
