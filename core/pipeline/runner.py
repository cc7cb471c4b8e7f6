"""The staged pipeline: dataset -> features -> encoding -> stats -> rsa -> umap -> summary.

Each stage is a pure function of its inputs' outputs and of the config fields it declares. Its cache key is
the hash of those fields plus its inputs' keys, so a new UMAP seed reruns only ``umap`` and what follows,
and a new p threshold refits nothing. Stage outputs live in ``OUT/cache/stages/<stage>-<key>/`` (arrays as
``.npy`` files, memory-mappable, plus ``meta.json``), written to a temporary folder and renamed at the end:
an interrupted run leaves no partial entry and the next run resumes after the last finished stage.
"""
from __future__ import annotations

import logging
import os
import platform
import resource
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from core._validation import InputError
from core.config import RunConfig, config_hash, config_to_dict
from core.pipeline.faults import arm_during_fault, fault_point
from core.pipeline.schema import SCHEMA, Schema, run_dims
from core.pipeline.stage import Context, Stage
from core.pipeline.stages import STAGES as DEFAULT
from core.pipeline.store import ResultsStore, StageEntry

__all__ = ["Pipeline", "default_parallel_stages", "peak_rss_mb", "run_id_for", "versions"]

log = logging.getLogger("attnbrain")
# Bumped when a stage's output format or algorithm changes, so stale cache entries are not reused.
CODE_VERSION = "1"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_id_for(cfg: RunConfig) -> str:
    """A run is identified by every config field except the device (which changes speed, not results)."""
    d = config_to_dict(cfg)
    d.pop("device", None)
    return f"{cfg.preset}-{config_hash(cfg, *[k for k in d if k != 'device'])[:10]}"



class Pipeline:
    """Runs the stage graph for one config into a results folder ``out``.

    ``stages`` and ``schema`` (what each stage's entry holds, checked at every commit) default to this
    pipeline's; another graph brings its own schema.
    """

    def __init__(self, cfg: RunConfig, out: str | Path, *, stages: dict[str, Stage] | None = None,
                 device=None, progress: bool = True, schema: Schema = SCHEMA):
        self.cfg = cfg
        self.out = Path(out)
        self.stages = stages or DEFAULT
        self.device = device
        self.progress = progress
        self.store = ResultsStore(self.out, schema)
        self.cache_dir = self.store.cache_dir
        self.run_id = run_id_for(cfg)
        self.run_dir = self.out / self.run_id
        self.keys = self._keys()
        self._refresh: set[str] = set()      # stages --force recomputes in the current run (see run)

    def _keys(self) -> dict[str, str]:
        keys: dict[str, str] = {}
        for name in self._order(list(self.stages)):
            st = self.stages[name]
            extra = {"stage": name, "code": CODE_VERSION, "deps": {d: keys[d] for d in st.deps},
                     "inputs": st.extra(self.cfg) if st.extra else None}
            keys[name] = config_hash(self.cfg, *st.fields, extra=extra)
        return keys

    def _order(self, wanted: list[str]) -> list[str]:
        order: list[str] = []

        def visit(n):
            if n not in self.stages:
                raise InputError(f"unknown stage {n!r}; stages are {', '.join(self.stages)}", field="--stages")
            for d in self.stages[n].deps:
                visit(d)
            if n not in order:
                order.append(n)
        for n in wanted:
            visit(n)
        return order

    def entry_path(self, name: str) -> Path:
        return self.store.entry_path(name, self.keys[name])

    def plan(self, wanted: list[str] | None = None, force: tuple[str, ...] = ()) -> list[tuple[str, str]]:
        """``[(stage, reason)]`` in run order: 'cached', 'forced', 'not cached' or 'input changed'."""
        plan, rerun = [], set()
        for name in self._order(wanted or list(self.stages)):
            deps_rerun = [d for d in self.stages[name].deps if d in rerun]
            if name in force:
                reason = "forced"
            elif deps_rerun:
                reason = f"input {deps_rerun[0]} reruns"
            elif self.store.has(name, self.keys[name]):
                reason = "cached"
            else:
                reason = "not cached (new key for its settings or inputs)"
            if reason != "cached":
                rerun.add(name)
            plan.append((name, reason))
        return plan

    def run(self, wanted: list[str] | None = None, force: tuple[str, ...] = (),
            on_stage: Callable[[str, StageEntry], None] | None = None,
            parallel: int | None = None) -> dict[str, StageEntry]:
        """Run (or read from the cache) the ``wanted`` stages and what they depend on.

        With ``parallel`` >= 2 (default :func:`default_parallel_stages`: 2 on a machine with at least 8 cores,
        else 1), a stage marked ``isolated`` is computed in its own spawned process as soon as its inputs are
        ready, while this process goes on with the others: in this graph the pycortex assets (``cortex``)
        beside ``rsa`` and ``umap``, which matters where the GPU has made everything else short. Stages are
        never run in threads of one process: CPython 3.11/3.12 can fail with "AST constructor recursion depth
        mismatch" when two threads parse at once (``np.load`` does, for every header), cpython#106905.
        Results do not depend on ``parallel``. ``on_stage`` is called here, in the order the stages finish.
        When a stage fails, no new stage starts; one already running elsewhere finishes and is cached, then
        the error is raised.
        """
        plan = self.plan(wanted, force)
        # Stages recomputed because of --force (the forced ones and what depends on them) never take an entry
        # another run of the folder committed meanwhile; the others do (see _compute).
        self._refresh = set(force)
        for name, _ in plan:
            if any(d in self._refresh for d in self.stages[name].deps):
                self._refresh.add(name)
        workers = default_parallel_stages() if parallel is None else int(parallel)
        # Background helpers (e.g. compiling UMAP's kernels while the GPU stages run) only with cores to spare:
        # on fewer they would compete with the stages themselves.
        helpers = [self.stages[name].prewarm(self.cfg, self.cache_dir) for name, reason in plan
                   if workers >= 2 and reason != "cached" and self.stages[name].prewarm is not None]
        try:
            if workers <= 1:
                results: dict[str, StageEntry] = {}
                for name, reason in plan:
                    results[name] = self._run_stage(name, reason, results)
                    if on_stage:
                        on_stage(name, results[name])
                return results
            return self._run_overlapped(plan, workers - 1, on_stage)
        finally:
            for proc in helpers:  # still compiling when the run ends (few stages ran): not needed any more
                if proc is not None and proc.is_alive():
                    proc.terminate()

    def _run_overlapped(self, plan, n_processes: int, on_stage) -> dict[str, StageEntry]:
        from concurrent.futures import FIRST_COMPLETED, wait

        from core._proc import spawn_pool
        reasons = dict(plan)
        pending = [name for name, _ in plan]
        results: dict[str, StageEntry] = {}
        running: dict[str, Any] = {}          # isolated stage -> its future
        error: BaseException | None = None
        pool = None

        def ready(name):
            return all(d in results for d in self.stages[name].deps)

        def elsewhere(name):
            return self.stages[name].isolated and reasons[name] != "cached"

        def finish(name, entry):
            results[name] = entry
            if on_stage:
                on_stage(name, entry)

        try:
            while pending or running:
                local = None
                if error is None:
                    for name in [n for n in pending if elsewhere(n) and ready(n)][:n_processes - len(running)]:
                        pool = pool or spawn_pool(n_processes)
                        job = (self.stages[name], self.keys[name], {d: self.keys[d] for d in self.stages[name].deps},
                               self.cfg, str(self.out), self.device, self.progress, self.store.schema,
                               name not in self._refresh)
                        running[name] = pool.submit(_compute_in_child, job)
                        pending.remove(name)
                    local = next((n for n in pending if not elsewhere(n) and ready(n)), None)
                if local is not None:
                    pending.remove(local)
                    try:
                        finish(local, self._run_stage(local, reasons[local], results))
                    except Exception as exc:  # noqa: BLE001 - raised below, once the others have finished
                        error = exc
                elif running:
                    wait(list(running.values()), return_when=FIRST_COMPLETED)
                else:
                    break  # after an error: nothing is running any more
                for name, future in list(running.items()):
                    if future.done():
                        del running[name]
                        try:
                            seconds = future.result()
                            entry = self.store.read(name, self.keys[name])
                            # 0.0: the child found the entry committed by another run of the folder.
                            entry.cached, entry.seconds = seconds == 0.0, seconds
                            finish(name, entry)
                        except Exception as exc:  # noqa: BLE001
                            error = error or exc
        except BaseException:
            # Ctrl-C: stop now. The spawned stage dies with this process; its entry was never committed.
            if pool is not None:
                for proc in list(getattr(pool, "_processes", {}).values()):
                    proc.terminate()
            raise
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
        if error is not None:
            raise error
        return {name: results[name] for name, _ in plan}

    def _run_stage(self, name: str, reason: str, results: dict[str, StageEntry]) -> StageEntry:
        """One stage in this process: read from the cache when ``reason`` is 'cached' (and the entry is intact),
        else computed from ``results`` (its inputs) and committed."""
        st = self.stages[name]
        key = self.keys[name]
        if reason == "cached":
            try:
                return self.store.read(name, key)
            except InputError as exc:
                # A damaged entry (file deleted or cut short outside the tool): recompute it under the
                # same key; stages are deterministic, so what follows stays valid.
                log.warning("cached %s entry is damaged (%s); recomputing it", name, exc)
        return _compute(self.store, st, key, self.cfg, self.device, {d: results[d] for d in st.deps},
                        self.progress, reuse=reason != "cached" and name not in self._refresh)


def _compute(store: ResultsStore, st: Stage, key: str, cfg: RunConfig, device, inputs: dict[str, StageEntry],
             progress: bool, reuse: bool = True) -> StageEntry:
    """Compute one stage from its inputs into a temporary folder and commit it as the entry ``key``, holding
    the entry's lock: another run of the folder computing the same entry is waited for, and with ``reuse``
    (the entry was missing when the run planned it) its committed entry is read instead of computed again."""
    with store.entry_lock(st.name, key):
        if reuse and store.has(st.name, key):
            try:
                return store.read(st.name, key)     # committed by another run meanwhile: cached
            except InputError:
                pass
        return _compute_locked(store, st, key, cfg, device, inputs, progress)


def _compute_locked(store: ResultsStore, st: Stage, key: str, cfg: RunConfig, device,
                    inputs: dict[str, StageEntry], progress: bool) -> StageEntry:
    workdir = store.new_workdir(st.name, key)
    ctx = Context(cfg=cfg, device=device, cache_dir=store.cache_dir, inputs=inputs, progress=progress,
                  workdir=workdir)
    t0 = time.perf_counter()
    fault_point(f"{st.name}:start")
    kill_at_end = arm_during_fault(st.name)
    try:
        arrays, meta = st.fn(ctx)
        if kill_at_end:
            kill_at_end()
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    seconds = time.perf_counter() - t0
    meta = {**meta, "stage": st.name, "key": key, "seconds": seconds, "peak_rss_mb": peak_rss_mb(),
            "device": str(device)}
    dims, conditions = run_dims(cfg)
    entry = store.commit(workdir, st.name, key, arrays, meta, inputs=inputs, dims=dims, conditions=conditions)
    entry.seconds = seconds
    return entry


def _compute_in_child(job) -> float:
    """:func:`_compute` in a spawned process: inputs read from the store, the entry committed there; returns
    the stage's seconds (the parent reads the entry back, memory-mapped)."""
    st, key, dep_keys, cfg, out, device, progress, schema, reuse = job
    store = ResultsStore(out, schema)
    inputs = {d: store.read(d, k) for d, k in dep_keys.items()}
    entry = _compute(store, st, key, cfg, device, inputs, progress, reuse=reuse)
    return 0.0 if entry.cached else entry.seconds


def default_parallel_stages() -> int:
    """Stages run at once by default: 2 with at least 8 cores (the GPU machines this targets have 16), else 1.
    On 2-4 cores two CPU-heavy stages would only share the cores, and raise the peak memory.
    ``ATTNBRAIN_PARALLEL_STAGES=N`` overrides it."""
    forced = os.environ.get("ATTNBRAIN_PARALLEL_STAGES", "").strip()
    if forced:
        if not forced.isdigit() or int(forced) < 1:
            raise InputError(f"expected a positive integer, found {forced!r}", field="ATTNBRAIN_PARALLEL_STAGES")
        return int(forced)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 2 if cores >= 8 else 1


#: Reported package -> distribution whose installed version is read (without importing the package:
#: importing umap/numba alone costs ~5 s).
_DISTRIBUTIONS = {"numpy": "numpy", "scipy": "scipy", "torch": "torch", "torchvision": "torchvision",
                  "sklearn": "scikit-learn", "umap": "umap-learn", "cortex": "pycortex", "himalaya": "himalaya"}


def versions() -> dict[str, str]:
    """Python's and the scientific packages' versions, for ``summary.json`` (absent packages left out)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for mod, dist in _DISTRIBUTIONS.items():
        try:
            out[mod] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out
