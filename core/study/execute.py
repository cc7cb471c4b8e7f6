"""Running a study's runs as jobs on Dask: a ``LocalCluster`` on this machine, an existing scheduler, or (see
:func:`make_cluster`) ``dask_jobqueue.SLURMCluster`` on a cluster.

Each run is one task that runs ``precompute.py --config <run.toml> --out DIR`` in a subprocess of the worker:
the same program, so a study's run is exactly the run ``precompute.py`` computes alone; a crash, an out-of-memory
kill or a bad input ends that process, not the worker. Its output goes to ``DIR/study-<id>/<label>.log`` (and
precompute.py's own ``run.log`` into the run's folder). Runs write side by side into ``DIR``: one lock per run and
per stage entry (:func:`core.pipeline.store.writer_session`), so runs that share an input compute it once.

A run that fails is tried again up to ``retries`` times (Dask reschedules a task whose worker died, too), except
for a bad input (exit code 2), which no retry can fix. The study's state is ``DIR/study-<id>.json``, rewritten
atomically as runs finish; rerunning the study reuses every finished run's stages.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from core._io import write_json_atomic
from core.study.spec import Study, to_toml

__all__ = ["run_study", "study_id", "make_cluster", "plan_study", "run_one"]

ROOT = Path(__file__).resolve().parents[2]
#: precompute.py's exit code for a bad input: the run is reported, not retried.
EXIT_INPUT = 2


class RunFailed(RuntimeError):
    """A run's precompute.py ended with an error that a retry may fix (not a bad input)."""


def study_id(study: Study) -> str:
    """A study is known by its name and the run ids it expands to."""
    import hashlib

    from core.pipeline.runner import run_id_for
    ids = ",".join(sorted(run_id_for(r.cfg) for r in study.runs))
    return f"{study.name}-{hashlib.sha256(ids.encode()).hexdigest()[:8]}"


def _run_files(study: Study, out: Path) -> Path:
    folder = out / f"study-{study_id(study)}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _safe(label: str) -> str:
    return label.replace("/", "__")


def local_gpus() -> int:
    """NVIDIA GPUs on this machine (``nvidia-smi -L``), 0 without any or without the driver's tools."""
    import shutil
    if shutil.which("nvidia-smi") is None:
        return 0
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith("GPU "))


def gpu_env(worker_name, n_gpus: int) -> dict[str, str]:
    """The GPU a LocalCluster worker's runs get: worker ``i`` of a machine with ``n_gpus`` GPUs sees GPU
    ``i % n_gpus`` alone (``CUDA_VISIBLE_DEVICES``); nothing without GPUs or for a worker without a number."""
    try:
        index = int(worker_name)
    except (TypeError, ValueError):
        return {}
    return {"CUDA_VISIBLE_DEVICES": str(index % n_gpus)} if n_gpus > 0 else {}


def run_one(config_toml: str, out: str, log_file: str, device: str | None, stages: str | None,
            threads: int, gpus: int = 0) -> dict[str, Any]:
    """One run as a Dask task: ``precompute.py`` in a subprocess; its exit code, seconds and run id.

    Raises :class:`RunFailed` (Dask then retries the task) unless it succeeded or the input is bad."""
    cfg_path = Path(log_file).with_suffix(".toml")
    cfg_path.write_text(config_toml)
    # --wait: a retry after a killed attempt waits until that attempt's process is gone (it ends within a second
    # of its worker: ATTNBRAIN_DIE_WITH_PARENT), then continues from its finished stages.
    cmd = [sys.executable, str(ROOT / "precompute.py"), "--config", str(cfg_path), "--out", out, "--quiet",
           "--wait"]
    if device:
        cmd += ["--device", device]
    if stages:
        cmd += ["--stages", stages]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "OPENBLAS_NUM_THREADS": str(threads), "ATTNBRAIN_PARALLEL_STAGES": "1",
           "ATTNBRAIN_DIE_WITH_PARENT": str(os.getpid())}
    if gpus:                                  # a LocalCluster on a GPU machine: one GPU per worker, so per run
        from distributed import get_worker
        env.update(gpu_env(get_worker().name, gpus))
    t0 = time.perf_counter()
    with open(log_file, "a") as log:
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(cmd)}\n")
        log.flush()
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
        study_fault(Path(log_file).stem)
        code = proc.wait()
    seconds = round(time.perf_counter() - t0, 2)
    if code not in (0, EXIT_INPUT):
        raise RunFailed(f"precompute.py exited with code {code} after {seconds} s; see {log_file}")
    return {"code": code, "seconds": seconds}


def study_fault(label: str) -> None:
    """Crash-test hook (tests only): ``ATTNBRAIN_STUDY_FAULT=kill-worker:<label>:<seconds>`` SIGKILLs the Dask
    worker running run ``<label>`` (its log file's name) that many seconds into the run, once: the file
    ``ATTNBRAIN_FAULT_ONCE`` is created before the kill and, once it exists, nothing fires."""
    wanted = os.environ.get("ATTNBRAIN_STUDY_FAULT", "")
    once = os.environ.get("ATTNBRAIN_FAULT_ONCE", "")
    parts = wanted.split(":")
    if len(parts) != 3 or parts[0] != "kill-worker" or parts[1] != label or not once or Path(once).exists():
        return
    import signal
    time.sleep(float(parts[2]))
    Path(once).write_text(label)
    os.kill(os.getpid(), signal.SIGKILL)


def plan_study(study: Study, out: Path) -> list[dict[str, Any]]:
    """Per run, in order: its run id and, per stage, whether it is cached, computed by this run, or reused
    from an earlier run of the study that computes it first."""
    from core.pipeline.runner import Pipeline
    first: dict[tuple[str, str], str] = {}
    plans = []
    for r in study.runs:
        pipe = Pipeline(r.cfg, out, device="cpu", progress=False)
        stages = []
        for name, reason in pipe.plan():
            key = (name, pipe.keys[name])
            if reason == "cached":
                what = "cached"
            elif key in first:
                what = f"reused from {first[key]}"
            else:
                first[key] = r.label
                what = "compute"
            stages.append((name, what))
        plans.append({"label": r.label, "run_id": pipe.run_id, "stages": stages})
    return plans


def make_cluster(kind: str, study: Study, *, workers: int | None = None, threads: int = 1):
    """A Dask cluster for the study: ``"local"``, a ``LocalCluster`` of ``workers`` processes (default: the
    cores / ``threads``), bound to 127.0.0.1; ``"slurm"``, a ``dask_jobqueue.SLURMCluster`` from the study's
    ``[cluster]`` table (``partition``, ``cores``, ``memory``, ``walltime``, ``gpus`` per job, ``extra_directives``,
    ``max_jobs``, ``interface``, ``log_directory``, ``local_directory``, ``account``), adaptive up to ``max_jobs``
    jobs."""
    if kind == "local":
        from distributed import LocalCluster
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        # On a GPU machine one worker per GPU (each run gets one, see gpu_env), else one per `threads` cores.
        n = workers or local_gpus() or max(1, cores // max(1, threads))
        return LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                            dashboard_address=None, memory_limit=0)
    if kind == "slurm":
        from dask_jobqueue import SLURMCluster
        c = study.cluster
        directives = list(c.get("extra_directives", []))
        if c.get("gpus"):
            directives.append(f"--gres=gpu:{int(c['gpus'])}")
        kw = {k: c[k] for k in ("interface", "log_directory", "local_directory", "account") if c.get(k)}
        cluster = SLURMCluster(queue=c.get("partition"), cores=int(c.get("cores", threads)),
                               processes=1, memory=str(c.get("memory", "16GB")),
                               walltime=str(c.get("walltime", "04:00:00")), job_extra_directives=directives, **kw)
        cluster.adapt(minimum=0, maximum=int(c.get("max_jobs", 4)))
        return cluster
    raise ValueError(f"unknown cluster kind {kind!r}")


def run_study(study: Study, out: Path, *, client, device: str | None = None, stages: str | None = None,
              threads: int = 1, gpus: int = 0, on_change: Callable[[dict], None] | None = None) -> dict[str, Any]:
    """Submit every run of ``study`` to the Dask ``client`` and wait for all; returns the study summary (also
    written to ``DIR/study-<id>.json`` as runs finish).

    A run's state: ``queued``, ``running``, ``done``, ``bad input`` (precompute.py exit 2: not retried), ``failed`` (after
    ``study.retries`` retries). Finished runs' summaries are read from their run folders.
    """
    from distributed import wait

    from core.pipeline.runner import run_id_for
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = _run_files(study, out)
    sid = study_id(study)
    summary: dict[str, Any] = {"study": study.name, "id": sid, "file": study.path, "out": str(out),
                               "scheduler": getattr(client, "scheduler_info", lambda: {})().get("address"),
                               "started": time.time(), "runs": []}
    futures = {}
    for r in study.runs:
        entry = {"label": r.label, "subject": r.subject, "layer": r.layer, "weights": r.weights,
                 "simulated": r.simulated, "run_id": run_id_for(r.cfg), "state": "queued",
                 "log": str(files / f"{_safe(r.label)}.log")}
        summary["runs"].append(entry)
        fut = client.submit(run_one, to_toml(r.cfg), str(out), entry["log"], device, stages, threads, gpus,
                            key=f"run-{sid}-{_safe(r.label)}", retries=study.retries, pure=False)
        futures[fut] = entry
    path = out / f"study-{sid}.json"

    def save():
        summary["counts"] = {s: sum(e["state"] == s for e in summary["runs"])
                             for s in ("queued", "running", "done", "bad input", "failed")}
        write_json_atomic(path, summary)
        if on_change:
            on_change(summary)

    def finish(fut, entry):
        try:
            res = fut.result()
        except Exception as exc:            # noqa: BLE001 - the run's error, after its retries
            entry.update(state="failed", error=" ".join(str(exc).split())[:2000])
            return
        entry["seconds"] = res["seconds"]
        if res["code"] == 0:
            entry["state"] = "done"
            run_summary = out / entry["run_id"] / "summary.json"
            if run_summary.is_file():
                s = json.loads(run_summary.read_text())
                entry["summary"] = {k: s.get(k) for k in ("n_voxels", "total_s", "timings_s")}
                entry["summary"]["conditions"] = {m: {k: c.get(k) for k in ("n_significant",
                                                                            "median_r_significant")}
                                                  for m, c in s.get("conditions", {}).items()}
        else:
            entry["state"] = "bad input"
            entry["error"] = _last_error(entry["log"])

    save()
    pending = set(futures)
    while pending:
        try:
            finished = set(wait(list(pending), timeout=2, return_when="FIRST_COMPLETED").done)
        except TimeoutError:
            finished = set()
        changed = bool(finished)
        for fut in finished:
            finish(fut, futures[fut])
            pending.discard(fut)
        # Queued or running: what the scheduler is processing now.
        processing = {str(k) for keys in client.processing().values() for k in keys}
        for fut in pending:
            state = "running" if str(fut.key) in processing else "queued"
            if futures[fut]["state"] != state:
                futures[fut]["state"], changed = state, True
        if changed:
            save()
    summary["finished"] = time.time()
    from core.pipeline.store import ResultsStore, clean_if_alone
    # A killed attempt's temporaries (never entries: those are renamed and indexed whole) go once no run writes.
    summary["temporaries_removed"] = clean_if_alone(ResultsStore(out))
    save()
    return summary


def _last_error(log_file: str) -> str:
    try:
        lines = [ln for ln in Path(log_file).read_text().splitlines() if ln.startswith("error:")]
    except OSError:
        return ""
    return lines[-1] if lines else ""

