"""What a simulated run's data look like: test-r quantiles per voxel group, significant counts and the planted
truth's recovery (the numbers docs/data.md quotes for the demo).

    python precompute.py --preset demo --out /tmp/demo
    python bench/sim_profile.py /tmp/demo [--run RUN] [--condition on]

Last line: ``RESULT key=value ...``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.outputs.reader import open_results  # noqa: E402

VISUAL = ("V1", "V2", "V3")
OBJECT_SCENE = ("FFA", "OFA", "EBA", "PPA", "OPA", "RSC")
QUANTILES = (0.10, 0.25, 0.50, 0.75, 0.90, 0.99)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path)
    p.add_argument("--run", default=None)
    p.add_argument("--condition", default="on")
    args = p.parse_args(argv)
    res = open_results(args.results, args.run)
    m = args.condition
    r = np.asarray(res.stats(m)["r"], dtype=np.float64)
    names = np.asarray(res.roi_names)[np.asarray(res.array("dataset", "roi"))]
    truth = res.truth()
    groups = {"all": np.ones(r.size, bool), "V1-V3": np.isin(names, VISUAL),
              "object/scene ROIs": np.isin(names, OBJECT_SCENE)}
    groups["the rest of the cortex"] = ~(groups["V1-V3"] | groups["object/scene ROIs"])
    if "truth_null" in truth:
        groups["null (no signal)"] = np.asarray(truth["truth_null"], bool)
    print(f"test r, attention {m} ({res.n_test} test samples); quantiles "
          + " / ".join(f"{q:.0%}" for q in QUANTILES))
    for name, mask in groups.items():
        x = r[mask & np.isfinite(r)]
        print(f"  {name:24s} n={mask.sum():6d}  " + " / ".join(f"{v:.2f}" for v in np.quantile(x, QUANTILES))
              + f"  max {x.max():.2f}")
    rest = r[groups["the rest of the cortex"]]
    small = float(np.mean(np.abs(rest) < 0.1))
    high = float(np.mean(r >= 0.3))
    vis = groups["V1-V3"] | groups["object/scene ROIs"]
    high_vis = float(np.mean(r[vis] >= 0.3))
    sig = {c: int(res.summary["conditions"][c]["n_significant"]) for c in res.conditions}
    print(f"  |r| < 0.1 outside the visual ROIs: {small:.1%}; r >= 0.3: {high:.1%} of all, {high_vis:.1%} of the "
          f"visual ROIs' voxels; significant under the run's rule: {sig}")
    for field in ("truth_signal_fraction", "truth_on_share", "truth_ar_phi"):
        if field in truth:
            q = np.quantile(np.asarray(truth[field], dtype=np.float64), QUANTILES)
            print(f"  {field}: " + " / ".join(f"{v:.3g}" for v in q))
    t = res.summary.get("truth", {})
    print("  truth: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in t.items()))
    print("RESULT " + " ".join([f"small_r_rest={small:.3f}", f"high_r_all={high:.3f}", f"high_r_visual={high_vis:.3f}"]
                               + [f"n_significant_{c}={n}" for c, n in sig.items()]
                               + [f"{k}={v:.4f}" for k, v in t.items() if isinstance(v, float)]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
