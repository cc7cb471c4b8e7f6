"""Compare two results folders stage by stage and array by array: are two runs bit-identical?

    python bench/compare_results.py DIR_A DIR_B [--run-a RUN] [--run-b RUN]

Reads each folder's run (the newest finished one unless named) straight from disk (``<run>/run.json`` and the
stage entries it lists, arrays as ``.npy``, other files by their bytes), so it compares folders written by
different versions of the code. For every stage in either run it prints whether each array is identical
(same dtype, shape and bytes; NaN equal to NaN), or how it differs (largest absolute difference, share of
elements that differ), and whether the stage's other files (flatmap PNGs, the viewer) are byte-identical.
The last line is ``RESULT stages_identical=... stages_differing=... arrays_identical=... arrays_differing=...``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import numpy as np


def _run(out: Path, run_id: str | None) -> tuple[str, dict]:
    runs = []
    for f in out.glob("*/run.json"):
        if (f.parent / "summary.json").is_file():
            info = json.loads(f.read_text())
            runs.append((info.get("created", 0), f.parent.name, info))
    if not runs:
        sys.exit(f"error: {out}: no finished run (no <run>/summary.json)")
    if run_id is None:
        _, run_id, info = max(runs)
        return run_id, info
    for _, name, info in runs:
        if name == run_id:
            return name, info
    sys.exit(f"error: {out}: no finished run {run_id!r}; available: {sorted(n for _, n, _ in runs)}")


def _files(entry: Path) -> dict[str, str]:
    """SHA-256 of every file of an entry other than its arrays and meta.json (which holds timings)."""
    out = {}
    for p in sorted(entry.rglob("*")):
        if p.is_file() and p.suffix != ".npy" and p.name != "meta.json":
            out[str(p.relative_to(entry))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def compare_arrays(a: np.ndarray, b: np.ndarray) -> str | None:
    """None if identical (dtype, shape, bytes; NaN == NaN), else a short description of the difference."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return f"dtype/shape {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
    if np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"):
        return None
    if a.dtype.kind in "fciu":
        fa, fb = a.astype(np.float64), b.astype(np.float64)
        both_nan = np.isnan(fa) & np.isnan(fb)
        diff = np.where(both_nan, 0.0, np.abs(fa - fb))
        diff = np.where(np.isnan(diff), np.inf, diff)      # NaN on one side only
        return f"max |diff| {np.max(diff):.3g}, {np.mean(diff > 0):.2%} of elements differ"
    return f"{np.mean(a != b):.2%} of elements differ"


def compare(dir_a: Path, dir_b: Path, run_a: str | None = None, run_b: str | None = None) -> dict:
    (name_a, info_a), (name_b, info_b) = _run(dir_a, run_a), _run(dir_b, run_b)
    report = {"run_a": name_a, "run_b": name_b, "stages": {}}
    for stage in sorted(set(info_a["stages"]) | set(info_b["stages"])):
        if stage not in info_a["stages"] or stage not in info_b["stages"]:
            report["stages"][stage] = {"missing_in": "a" if stage not in info_a["stages"] else "b"}
            continue
        ea = dir_a / "cache" / "stages" / f"{stage}-{info_a['stages'][stage]}"
        eb = dir_b / "cache" / "stages" / f"{stage}-{info_b['stages'][stage]}"
        names = sorted({p.stem for p in ea.glob("*.npy")} | {p.stem for p in eb.glob("*.npy")})
        arrays = {}
        for n in names:
            pa, pb = ea / f"{n}.npy", eb / f"{n}.npy"
            if not (pa.is_file() and pb.is_file()):
                arrays[n] = f"only in {'a' if pa.is_file() else 'b'}"
                continue
            arrays[n] = compare_arrays(np.load(pa, mmap_mode="r"), np.load(pb, mmap_mode="r"))
        fa, fb = _files(ea), _files(eb)
        files = {f: (None if fa.get(f) == fb.get(f) else ("differs" if f in fa and f in fb else
                                                          f"only in {'a' if f in fa else 'b'}"))
                 for f in sorted(set(fa) | set(fb))}
        report["stages"][stage] = {"same_key": info_a["stages"][stage] == info_b["stages"][stage],
                                   "arrays": arrays, "files": files}
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir_a", type=Path)
    ap.add_argument("dir_b", type=Path)
    ap.add_argument("--run-a")
    ap.add_argument("--run-b")
    args = ap.parse_args(argv)
    rep = compare(args.dir_a, args.dir_b, args.run_a, args.run_b)
    print(f"a: {args.dir_a}/{rep['run_a']}\nb: {args.dir_b}/{rep['run_b']}")
    counts = dict(stages_identical=0, stages_differing=0, arrays_identical=0, arrays_differing=0)
    for stage, st in rep["stages"].items():
        if "missing_in" in st:
            print(f"{stage:11s} missing in {st['missing_in']}")
            counts["stages_differing"] += 1
            continue
        bad_arrays = {n: d for n, d in st["arrays"].items() if d}
        bad_files = {n: d for n, d in st["files"].items() if d}
        counts["arrays_identical"] += len(st["arrays"]) - len(bad_arrays)
        counts["arrays_differing"] += len(bad_arrays)
        same = not bad_arrays and not bad_files
        counts["stages_identical" if same else "stages_differing"] += 1
        key = "same cache key" if st["same_key"] else "new cache key"
        print(f"{stage:11s} {'identical' if same else 'DIFFERS'}: {len(st['arrays'])} arrays, {len(st['files'])} "
              f"files ({key})")
        for n, d in {**bad_arrays, **bad_files}.items():
            print(f"    {n}: {d}")
    print("RESULT " + " ".join(f"{k}={v}" for k, v in counts.items()))
    return 0 if counts["stages_differing"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
