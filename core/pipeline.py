"""The staged pipeline: dataset -> features -> encoding -> stats -> rsa -> umap -> summary.

Each stage is a pure function of its inputs' outputs and of the config fields it declares. Its cache key is
the hash of those fields plus its inputs' keys, so a new UMAP seed reruns only ``umap`` and what follows,
and a new p threshold refits nothing. Stage outputs live in ``OUT/cache/stages/<stage>-<key>/`` (arrays as
``.npy`` files, memory-mappable, plus ``meta.json``), written to a temporary folder and renamed at the end:
an interrupted run leaves no partial entry and the next run resumes after the last finished stage.
"""
from __future__ import annotations

import logging
import platform
import resource
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ._validation import InputError
from .config import RunConfig, config_hash, config_to_dict
from .store import ResultsStore, StageEntry, arm_during_fault, fault_point

__all__ = ["Stage", "StageEntry", "Context", "Pipeline", "peak_rss_mb", "run_id_for"]

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



@dataclass
class Stage:
    name: str
    fn: Callable[["Context"], tuple[dict[str, np.ndarray], dict[str, Any]]]
    deps: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()          # config sections / dotted fields the output depends on
    description: str = ""
    extra: Callable[[RunConfig], Any] | None = None   # more key material (e.g. input file fingerprints)


@dataclass
class Context:
    """What a stage function sees: the config, the device, its inputs' results and the shared cache."""
    cfg: RunConfig
    device: Any
    cache_dir: Path
    inputs: dict[str, StageEntry]
    progress: bool = True
    workdir: Path | None = None           # the stage's own folder for files other than arrays

    def __getitem__(self, name: str) -> StageEntry:
        return self.inputs[name]


class Pipeline:
    """Runs the stage graph for one config into a results folder ``out``."""

    def __init__(self, cfg: RunConfig, out: str | Path, *, stages: dict[str, Stage] | None = None,
                 device=None, progress: bool = True):
        from .stages import STAGES as DEFAULT
        self.cfg = cfg
        self.out = Path(out)
        self.stages = stages or DEFAULT
        self.device = device
        self.progress = progress
        self.store = ResultsStore(self.out)
        self.cache_dir = self.store.cache_dir
        self.run_id = run_id_for(cfg)
        self.run_dir = self.out / self.run_id
        self.keys = self._keys()

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
            on_stage: Callable[[str, StageEntry], None] | None = None) -> dict[str, StageEntry]:
        results: dict[str, StageEntry] = {}
        for name, reason in self.plan(wanted, force):
            st = self.stages[name]
            key = self.keys[name]
            if reason == "cached":
                try:
                    results[name] = self.store.read(name, key)
                except InputError as exc:
                    # A damaged entry (file deleted or cut short outside the tool): recompute it under the
                    # same key; stages are deterministic, so what follows stays valid.
                    log.warning("cached %s entry is damaged (%s); recomputing it", name, exc)
                    reason = "damaged"
            if reason != "cached":
                workdir = self.store.new_workdir(name, key)
                ctx = Context(cfg=self.cfg, device=self.device, cache_dir=self.cache_dir,
                              inputs={d: results[d] for d in st.deps}, progress=self.progress, workdir=workdir)
                t0 = time.perf_counter()
                fault_point(f"{name}:start")
                kill_at_end = arm_during_fault(name)
                try:
                    arrays, meta = st.fn(ctx)
                    if kill_at_end:
                        kill_at_end()
                except BaseException:
                    shutil.rmtree(workdir, ignore_errors=True)
                    raise
                seconds = time.perf_counter() - t0
                meta = {**meta, "stage": name, "key": key, "seconds": seconds,
                        "peak_rss_mb": peak_rss_mb(), "device": str(self.device)}
                results[name] = self.store.commit(workdir, name, key, arrays, meta)
                results[name].seconds = seconds
            if on_stage:
                on_stage(name, results[name])
        return results


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
