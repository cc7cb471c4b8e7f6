"""A short, bounded run of bench/load.py: 10 concurrent clients for 5 s against a small synthetic results folder
served by two forked gunicorn workers. Every request must succeed and the workers must share memory."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_load_bench_small():
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "load.py"), "--n-voxels", "2000", "--n-test", "40",
                           "--clients", "10", "--seconds", "5", "--workers", "2", "--threads", "4"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("RESULT "), proc.stdout[-2000:]
    fields = dict(kv.split("=") for kv in last.split()[1:])
    assert fields["clients"] == "10" and fields["workers"] == "2"
    assert int(fields["requests"]) > 50 and int(fields["errors"]) == 0, proc.stdout[-2000:]
    # Each kind of request was exercised.
    for kind in ("page", "click", "inspector", "filter", "flatmap_layer", "stimulus"):
        assert any(ln.startswith(kind + " ") for ln in proc.stdout.splitlines()), kind
    # The workers are forked from the process that opened the run: most of their pages are shared.
    assert float(fields["pss_per_worker_mb"]) < float(fields["rss_per_worker_mb"])
