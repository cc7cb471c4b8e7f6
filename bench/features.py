"""Throughput of ABN feature extraction: trunk and attention once per batch, perception in all three modes.

Prints images/s (median of --repeats runs) per input size and batch size on the CPU, and on CUDA when
available (bf16 autocast, channels_last, peak GPU memory). The last line is
``RESULT images_per_s_cpu=... [images_per_s_cuda=... peak_gpu_mb=...]``, each the best batch size at the
largest --size.

    python bench/features.py                       # CPU (+ CUDA if present), 112 and 224 px
    python bench/features.py --device cuda --n 7800 --size 224 --batch-sizes 128 256
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.model.abn import build_abn# noqa: E402
from core.model.features import MODES, extract_features# noqa: E402


def _time(model, images: np.ndarray, batch_size: int, device: torch.device, repeats: int) -> float:
    """Median seconds of ``repeats`` extractions of all three modes (after one warm-up batch)."""
    # The first call at a new shape builds oneDNN/cuDNN kernels: keep it out of the timing.
    extract_features(model, images[:batch_size], batch_size=batch_size, device=device, modes=MODES)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        extract_features(model, images, batch_size=batch_size, device=device, modes=MODES)
        times.append(time.perf_counter() - t0)  # returns numpy arrays, so the GPU work is done
    return statistics.median(times)


def _run(model, device: torch.device, n: int, sizes, batch_sizes, repeats: int) -> tuple[float, float]:
    """Print a table for one device; return (best images/s at the largest size, peak GPU MB or nan)."""
    rng = np.random.default_rng(0)
    best, peak = 0.0, float("nan")
    print(f"\n{device.type.upper()} ({n} images x {repeats} repeats, modes {'/'.join(MODES)}, median)")
    header = f"{'size':>6} {'batch':>6} {'images/s':>10} {'s/run':>8}"
    print(header + (f" {'peak MB':>9}" if device.type == "cuda" else ""))
    for size in sizes:
        images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
        for bs in batch_sizes:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            dt = _time(model, images, min(bs, n), device, repeats)
            ips = n / dt
            line = f"{size:>6} {bs:>6} {ips:>10.1f} {dt:>8.2f}"
            if device.type == "cuda":
                mb = torch.cuda.max_memory_allocated(device) / 2**20
                line += f" {mb:>9.0f}"
                if size == max(sizes):
                    peak = mb if np.isnan(peak) else max(peak, mb)
            print(line, flush=True)
            if size == max(sizes):
                best = max(best, ips)
    return best, peak


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto: CPU, then CUDA when available; cpu or cuda: that one only")
    p.add_argument("--n", type=int, default=512, help="images per CUDA run (default %(default)s)")
    p.add_argument("--n-cpu", type=int, default=16, help="images per CPU run (default %(default)s)")
    p.add_argument("--size", type=int, nargs="+", default=[112, 224], help="input sizes in px")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                   help="default: 1 4 16 on CPU, 64 128 256 on CUDA")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per setting (median reported)")
    args = p.parse_args(argv)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random weights are fine for timing
        model = build_abn("random")
    # CPU timings on a shared machine depend on what else runs: print the load next to them.
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, load average "
          f"{os.getloadavg()[0]:.1f}" + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available()
                                        else ", no CUDA"))
    result = []
    if args.device in ("auto", "cpu"):
        ips, _ = _run(model, torch.device("cpu"), args.n_cpu, args.size, args.batch_sizes or [1, 4, 16],
                      args.repeats)
        result.append(f"images_per_s_cpu={ips:.2f}")
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            print("--device cuda: no CUDA device here", file=sys.stderr)
            return 2
        ips, peak = _run(model, torch.device("cuda"), args.n, args.size, args.batch_sizes or [64, 128, 256],
                         args.repeats)
        result += [f"images_per_s_cuda={ips:.1f}", f"peak_gpu_mb={peak:.0f}"]
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    print("RESULT " + " ".join(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
