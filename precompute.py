#!/usr/bin/env python
"""Run the analysis: ABN features (attention on/off/uniform) -> ridge per voxel -> statistics -> RDM kNN
-> UMAP, cached stage by stage in a results folder that the dashboard reads.

    python precompute.py --preset demo --out results          # the simulated demo (~5 min on 2 CPU cores)
    python precompute.py --config my_study.toml --out results  # your data (see README.md)
    python precompute.py --preset paper-sim --out results --device cuda  # the study's scale, simulated
    python precompute.py train-abn --data IMAGEFOLDER --out ckpt --epochs 10
    python precompute.py study study.toml --out results          # many runs on Dask (docs/studies.md)
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
    from core.config import PRESETS# light: no torch

    p = argparse.ArgumentParser(prog="precompute.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="base settings (default: the config file's 'preset', else demo)")
    p.add_argument("--config", type=Path, help="TOML file overriding any setting of the preset")
    p.add_argument("--out", type=Path, default=Path("results"), help="results folder (default: results)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda (default: the config's, auto)")
    p.add_argument("--stages", default=None, help="comma-separated subset of stages to run (with their inputs)")
    p.add_argument("--force", action="append", default=[], metavar="STAGE", help="recompute STAGE (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print which stages would run and why, then stop")
    p.add_argument("--quiet", action="store_true", help="no progress bars; one line per stage")
    p.add_argument("--wait", action="store_true",
                   help="if another precompute.py is computing this run in the folder, wait for it, then reuse its "
                        "stages (default: exit 2 at once)")
    return p


#: Exit codes: 0 done, 2 a problem with the input (config, data, checkpoint, --out) or the results folder is
#: busy, 3 the results folder could not be written (disk full, read-only, I/O error; earlier results intact).
EXIT_INPUT, EXIT_WRITE = 2, 3


def _fail(message: str, code: int = EXIT_INPUT) -> int:
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    return code


def _write_failed(exc: OSError, out: Path) -> int:
    import errno
    # numpy's tofile reports a full disk as a short write ("N requested and M written") without an errno.
    short_write = exc.errno is None and "requested and" in str(exc) and "written" in str(exc)
    what = "no space left on device" if exc.errno in (errno.ENOSPC, errno.EDQUOT) or short_write else \
        (exc.strerror or str(exc)).lower()
    where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
    return _fail(f"{out}: could not write the results: {what}{where}. Nothing of this run was kept; finished "
                 "runs and cached stages in the folder are intact. Free space (or choose another --out) and rerun: "
                 "finished stages are reused", EXIT_WRITE)


def _preflight(cfg) -> None:
    """Every cheap check of the user's inputs, before the results folder is touched."""
    from core.data.datasets import CortexSpec, check_cortex_spec
    if cfg.data.kind == "simulated":
        check_cortex_spec(CortexSpec(cfg.data.subject, cfg.data.transform, cfg.data.mask))
    else:
        from core.pipeline.inputs import check_user_dataset
        check_user_dataset(cfg)
    w = cfg.features.weights
    if w not in ("auto", "random"):
        from core._validation import InputError
        if not Path(w).is_file():
            raise InputError("checkpoint file not found; give a trained ABN checkpoint, or 'auto'",
                             source=str(w), field="features.weights")
        # Loaded strictly now (a second or two), so a wrong or damaged file stops the run before anything
        # is written rather than in the middle of a stage.
        from core.model.abn import build_abn
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # the stage that uses the model reports them
            build_abn(w, seed=cfg.features.seed)


def _check_out(out: Path) -> None:
    from core._validation import InputError
    if out.exists() and not out.is_dir():
        raise InputError("expected a folder for the results, found a file; choose another --out", source=str(out),
                         field="--out")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{parent} is a file, so the results folder cannot be created there",
                                 source=str(out), field="--out")
            break


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
        from core.pipeline.runner import Pipeline
        pipe = Pipeline(cfg, args.out, device=device, progress=not args.quiet)
        wanted = [s.strip() for s in args.stages.split(",") if s.strip()] if args.stages else None
        for f in args.force:
            if f not in pipe.stages:
                raise InputError(f"unknown stage {f!r}; stages are {', '.join(pipe.stages)}", field="--force")
        _check_out(args.out)
        plan = pipe.plan(wanted, tuple(args.force))
        if args.dry_run:
            print(f"run {pipe.run_id} in {args.out}")
            for name, reason in plan:
                print(f"  {name:<9} {'skip' if reason == 'cached' else 'RUN '}  {reason}")
            return 0
        _preflight(cfg)
    except InputError as exc:
        return _fail(str(exc))

    try:
        return _run_locked(args, cfg, pipe, wanted, device)
    except OSError as exc:
        return _write_failed(exc, args.out)


def _run_locked(args, cfg, pipe, wanted, device) -> int:
    """The run under its writer session (:func:`core.pipeline.store.writer_session`): one writer per run, any
    number of runs side by side in one folder."""
    from core.pipeline.store import RunBusy, writer_session
    # A full disk must end in one error line, not in a logging traceback for each unwritable run.log line.
    logging.raiseExceptions = False
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        with writer_session(pipe.store, pipe.run_id, wait=args.wait):
            return _run_session(args, cfg, pipe, wanted, device)
    except RunBusy:
        return _fail(f"{args.out}: another precompute.py is computing run {pipe.run_id} in this results folder; "
                     "wait for it to finish (other runs may write to the folder beside it)")


def _run_session(args, cfg, pipe, wanted, device) -> int:
    import json

    from core._io import atomic_write, json_default
    from core._validation import InputError
    from core.pipeline.faults import fault_point
    from core.pipeline.runner import default_parallel_stages, peak_rss_mb, versions
    from core.pipeline.summary import build_summary
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
    summary["parallel_stages"] = default_parallel_stages()
    if device.type == "cuda":
        import torch
        summary["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    from core.config import config_to_dict
    fault_point("run:before-register")
    pipe.store.register_run(pipe.run_id, config_to_dict(cfg), summary["stage_keys"])
    summary["total_s"] = round(time.perf_counter() - t0, 2)
    fault_point("run:before-summary")

    def write_summary(fh):
        json.dump(summary, fh, indent=2, default=json_default)
        fh.flush()
        fault_point("run:mid-summary")
    atomic_write(pipe.run_dir / "summary.json", write_summary, binary=False)
    print(f"done in {summary['total_s']:.1f} s: {pipe.run_dir / 'summary.json'}")
    for mode, c in summary.get("conditions", {}).items():
        print(f"  {mode:<8} significant {c['n_significant']:>6}  negative {c.get('n_significant_negative', 0):>5}  "
              f"bins {c['bins']}")
    for w in summary.get("stats", {}).get("warnings", []):
        print(f"  warning  {w}")
    if "truth" in summary:
        print(f"  truth    {summary['truth']}")
    return 0


def _die_with(pid: int) -> None:
    """End this process within a second of process ``pid`` (its parent: a Dask worker running a study's run)
    dying, so that a killed worker never leaves its run computing on, holding the run's lock."""
    import os
    import signal
    import threading

    def watch():
        while True:
            time.sleep(1.0)
            if os.getppid() != pid:
                os.kill(os.getpid(), signal.SIGKILL)
    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    import os
    if os.environ.get("ATTNBRAIN_DIE_WITH_PARENT", "").isdigit():
        _die_with(int(os.environ["ATTNBRAIN_DIE_WITH_PARENT"]))
    if argv and argv[0] == "train-abn":
        from core._validation import InputError
        from core.model.train import add_train_arguments, run_train
        p = argparse.ArgumentParser(prog="precompute.py train-abn",
                                    description="Fine-tune the ABN (both branches) on an ImageNet-style folder.")
        add_train_arguments(p)
        try:
            return run_train(p.parse_args(argv[1:]))
        except InputError as exc:
            return _fail(str(exc))
    if argv and argv[0] == "study":
        from core.study.cli import add_study_arguments, run_study_command
        p = argparse.ArgumentParser(prog="precompute.py study",
                                    description="Every run of a study file (subjects x layers x weights) on Dask.")
        add_study_arguments(p)
        return run_study_command(p.parse_args(argv[1:]))
    return run_precompute(_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
