"""Benchmark: the same tiny runs as a study on Dask and one after the other in one process, side by side.

Four runs (2 simulated subjects x 2 layers, 20 train / 10 test samples, 300 voxels, stages up to UMAP), each
into an empty results folder per measurement:

- ``sequential``: one process runs each run's stages through the pipeline (core.pipeline.runner.Pipeline), one
  after the other: no scheduler, no subprocess;
- ``dask_1``: ``precompute.py study`` on a LocalCluster of one worker: the same runs one at a time, each a
  ``precompute.py`` subprocess of a Dask task; what it costs over ``sequential`` is Dask's and the subprocesses'
  overhead (the interpreter and its imports per run, the cluster's start);
- ``dask_2``: the same on two workers (2 cores: two runs at once).

Alternated ``--reps`` times, medians printed. Last line: ``RESULT key=value ...``.

    OMP_NUM_THREADS=1 .venv/bin/python bench/study.py --reps 3
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))



def sequential(study_file: Path, out: Path) -> float:
    """Every run in this process, one after the other (the simulated datasets built inside, as in a study)."""
    code = ("import sys, time; sys.path.insert(0, %r)\n"
            "t0 = time.perf_counter()\n"
            "from core.study.spec import load_study\n"
            "from core.pipeline.runner import Pipeline\n"
            "for r in load_study(%r).runs:\n"
            "    Pipeline(r.cfg, %r, device='cpu', progress=False).run(['umap'], parallel=1)\n"
            "print(time.perf_counter() - t0)\n") % (str(ROOT), str(study_file), str(out))
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                   env={**os.environ, "ATTNBRAIN_PARALLEL_STAGES": "1"})
    return time.perf_counter() - t0


def study(study_file: Path, out: Path, workers: int) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "precompute.py"), "study", str(study_file), "--out", str(out),
                           "--workers", str(workers), "--stages", "umap"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stdout[-2000:] + proc.stderr[-2000:])
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)
    times = {"sequential": [], "dask_1": [], "dask_2": []}
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "study.toml"
        from core.testing.studies import tiny_study
        f.write_text(tiny_study(name="bench"))
        for rep in range(args.reps):
            for name in times:
                out = Path(tmp) / f"{name}-{rep}"
                t = sequential(f, out) if name == "sequential" else study(f, out, int(name[-1]))
                times[name].append(t)
                print(f"  rep {rep}  {name:<10} {t:6.1f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    overhead = (med["dask_1"] - med["sequential"]) / med["sequential"]
    print(f"medians: sequential {med['sequential']:.1f} s, Dask 1 worker {med['dask_1']:.1f} s "
          f"(overhead {100 * overhead:.0f} %), Dask 2 workers {med['dask_2']:.1f} s")
    print(f"RESULT runs=4 reps={args.reps} sequential_s={med['sequential']:.1f} dask_1_worker_s={med['dask_1']:.1f} "
          f"dask_2_workers_s={med['dask_2']:.1f} overhead_1_worker={overhead:.3f} "
          f"speedup_2_workers={med['sequential'] / med['dask_2']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
