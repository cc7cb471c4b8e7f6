"""``precompute.py study STUDY.toml --out DIR``: every run of a study file, as jobs on Dask."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_study_arguments", "run_study_command"]


def add_study_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", type=Path, help="the study file (a base config plus [study] axes; docs/studies.md)")
    p.add_argument("--out", type=Path, default=Path("results"), help="results folder shared by the runs")
    p.add_argument("--dry-run", action="store_true",
                   help="list the runs and, per stage, whether it is cached, computed or reused from another run")
    p.add_argument("--cluster", choices=("local", "slurm"), default="local",
                   help="local: a Dask LocalCluster on this machine (default); slurm: dask_jobqueue.SLURMCluster "
                        "from the study's [cluster] table")
    p.add_argument("--scheduler", default=None, help="the address of a running Dask scheduler (instead of --cluster)")
    p.add_argument("--workers", type=int, default=None, help="LocalCluster worker processes (default: cores / threads)")
    p.add_argument("--threads", type=int, default=1, help="BLAS threads per run (default 1)")
    p.add_argument("--device", default=None, help="auto | cpu | cuda for every run (default: each run's config)")
    p.add_argument("--stages", default=None, help="comma-separated stages of each run (with their inputs)")


def _fail(message: str) -> int:
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    return 2


def run_study_command(args) -> int:
    from core._validation import InputError
    from core.study.execute import make_cluster, plan_study, run_study, study_id
    from core.study.spec import load_study
    try:
        study = load_study(args.study)
        if args.threads < 1 or (args.workers is not None and args.workers < 1):
            raise InputError("expected at least 1", field="--threads" if args.threads < 1 else "--workers")
        if args.cluster == "slurm" and args.scheduler is None and not study.cluster:
            raise InputError("--cluster slurm needs a [cluster] table in the study file (partition, cores, memory, "
                             "walltime, ...)", source=str(args.study), field="cluster")
    except InputError as exc:
        return _fail(str(exc))
    print(f"study {study_id(study)}: {len(study.runs)} runs -> {args.out}")
    if args.dry_run:
        for p in plan_study(study, args.out):
            print(f"  {p['label']}  (run {p['run_id']})")
            for name, what in p["stages"]:
                print(f"      {name:<10} {what}")
        return 0
    from distributed import Client

    from core.study.execute import local_gpus
    cluster = None
    # A LocalCluster on a GPU machine gives each worker, and so each run, one GPU; SLURM jobs get theirs from
    # the [cluster] table's gpus (--gres), an existing scheduler's workers from how they were started.
    gpus = local_gpus() if args.scheduler is None and args.cluster == "local" and args.device != "cpu" else 0
    if args.scheduler:
        client = Client(args.scheduler)
    else:
        cluster = make_cluster(args.cluster, study, workers=args.workers, threads=args.threads)
        client = Client(cluster)
    link = getattr(client, "dashboard_link", None)
    print(f"  Dask scheduler {client.scheduler.address}" + (f", dashboard {link}" if link else ""), flush=True)
    last = {}

    def progress(summary):
        counts = summary["counts"]
        if counts != last:
            last.clear()
            last.update(counts)
            print("  " + ", ".join(f"{k} {v}" for k, v in counts.items()), flush=True)
    try:
        summary = run_study(study, args.out, client=client, device=args.device, stages=args.stages,
                            threads=args.threads, gpus=gpus, on_change=progress)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    for r in summary["runs"]:
        extra = f"  {r.get('error', '')}" if r["state"] != "done" else f"  {r.get('seconds', 0):.1f} s"
        print(f"  {r['state']:<9} {r['label']}  {r['run_id']}{extra}")
    print(f"study summary: {Path(args.out) / ('study-' + summary['id'] + '.json')}")
    if any(r["state"] == "done" for r in summary["runs"]):
        from core._io import atomic_write
        from core.study.group import group_table
        table = group_table(args.out, summary)
        path = Path(args.out) / f"study-{summary['id']}-group.csv"
        atomic_write(path, lambda fh: fh.write(table.to_csv(index=False)), binary=False)
        print(f"group table (per run and ROI): {path}")
    return 0 if all(r["state"] == "done" for r in summary["runs"]) else 1
