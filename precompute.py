#!/usr/bin/env python
"""Run the analysis: ABN features (attention on/off/uniform) -> ridge per voxel -> statistics -> RDM kNN
-> UMAP, cached stage by stage in a results folder that the dashboard reads.

    python precompute.py --preset demo --out results          # the simulated demo (~5 min on 2 CPU cores)
    python precompute.py --config my_study.toml --out results  # your data (see README.md)
    python precompute.py train-abn --data IMAGEFOLDER --out ckpt --epochs 10
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings
from pathlib import Path

__all__ = ["main"]

log = logging.getLogger("attnbrain")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="precompute.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=["demo", "paper"], default=None,
                   help="base settings (default: the config file's 'preset', else demo)")
    p.add_argument("--config", type=Path, help="TOML file overriding any setting of the preset")
    p.add_argument("--out", type=Path, default=Path("results"), help="results folder (default: results)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda (default: the config's, auto)")
    p.add_argument("--stages", default=None, help="comma-separated subset of stages to run (with their inputs)")
    p.add_argument("--force", action="append", default=[], metavar="STAGE", help="recompute STAGE (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print which stages would run and why, then stop")
    p.add_argument("--quiet", action="store_true", help="no progress bars; one line per stage")
    return p


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def _preflight(cfg) -> None:
    """Every cheap check of the user's inputs, before the results folder is touched."""
    from core.datasets import CortexSpec, check_cortex_spec, validate_dataset
    if cfg.data.kind == "simulated":
        check_cortex_spec(CortexSpec(cfg.data.subject, cfg.data.transform, cfg.data.mask))
    else:
        from core.stages import load_dataset
        validate_dataset(load_dataset(cfg))
    w = cfg.features.weights
    if w not in ("auto", "random") and not Path(w).is_file():
        from core._validation import InputError
        raise InputError("checkpoint file not found; give a trained ABN checkpoint, or 'auto'",
                         source=str(w), field="features.weights")


def _lock_results(out: Path):
    """An exclusive lock on the results folder (held until the process exits), or None if another run holds it."""
    import fcntl
    fh = open(out / ".lock", "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    return fh


def run_precompute(args) -> int:
    from core._validation import InputError
    from core.config import load_config
    from core.device import resolve_device

    try:
        cfg = load_config(args.config, args.preset)
        if args.device:
            import dataclasses
            cfg = dataclasses.replace(cfg, device=args.device)
        device = resolve_device(cfg.device)
        from core.pipeline import Pipeline, peak_rss_mb, versions
        pipe = Pipeline(cfg, args.out, device=device, progress=not args.quiet)
        wanted = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None
        for f in args.force:
            if f not in pipe.stages:
                raise InputError(f"unknown stage {f!r}; stages are {', '.join(pipe.stages)}", field="--force")
        plan = pipe.plan(wanted, tuple(args.force))
        if args.dry_run:
            print(f"run {pipe.run_id} in {args.out}")
            for name, reason in plan:
                print(f"  {name:<9} {'skip' if reason == 'cached' else 'RUN '}  {reason}")
            return 0
        _preflight(cfg)
    except InputError as exc:
        return _fail(str(exc))

    from core.summary import build_summary, write_json_atomic
    args.out.mkdir(parents=True, exist_ok=True)
    lock = _lock_results(args.out)
    if lock is None:
        return _fail(f"{args.out}: another precompute.py is writing to this results folder; wait for it to finish "
                     "or use another --out")
    pipe.store.clean_temporaries()
    pipe.run_dir.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(pipe.run_dir / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    logging.captureWarnings(True)
    timings: dict[str, float] = {}
    print(f"run {pipe.run_id} ({cfg.preset}{', simulated data' if cfg.data.kind == 'simulated' else ''}) "
          f"on {device} -> {pipe.run_dir}", flush=True)

    def report(name, res):
        timings[name] = res.meta.get("seconds", 0.0) if not res.cached else 0.0
        line = (f"  {name:<9} {'cached' if res.cached else f'{res.seconds:7.1f} s'}"
                f"   peak RSS {peak_rss_mb():7.0f} MB")
        print(line, flush=True)
        log.info(line.strip())

    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            results = pipe.run(wanted, tuple(args.force), on_stage=report)
    except InputError as exc:
        log.error(str(exc))
        return _fail(str(exc))
    summary = build_summary(cfg, pipe.run_id, results, device=str(device), timings=timings,
                            peak_rss_mb=peak_rss_mb(), versions=versions())
    summary["stage_keys"] = {n: r.key for n, r in results.items()}
    from core.config import config_to_dict
    pipe.store.register_run(pipe.run_id, config_to_dict(cfg), summary["stage_keys"])
    summary["total_s"] = round(time.perf_counter() - t0, 2)
    write_json_atomic(pipe.run_dir / "summary.json", summary)
    print(f"done in {summary['total_s']:.1f} s: {pipe.run_dir / 'summary.json'}")
    for mode, c in summary.get("conditions", {}).items():
        print(f"  {mode:<8} significant {c['n_significant']:>6}  bins {c['bins']}")
    if "truth" in summary:
        print(f"  truth    {summary['truth']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "train-abn":
        from core._validation import InputError
        from core.train import add_train_arguments, run_train
        p = argparse.ArgumentParser(prog="precompute.py train-abn",
                                    description="Fine-tune the ABN (both branches) on an ImageNet-style folder.")
        add_train_arguments(p)
        try:
            return run_train(p.parse_args(argv[1:]))
        except InputError as exc:
            return _fail(str(exc))
    return run_precompute(_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
