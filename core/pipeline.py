"""The staged pipeline: dataset -> features -> encoding -> stats -> rsa -> umap -> summary.

Each stage is a pure function of its inputs' outputs and of the config fields it declares. Its cache key is
the hash of those fields plus its inputs' keys, so a new UMAP seed reruns only ``umap`` and what follows,
and a new p threshold refits nothing. Stage outputs live in ``OUT/cache/stages/<stage>-<key>/`` (arrays as
``.npy`` files, memory-mappable, plus ``meta.json``), written to a temporary folder and renamed at the end:
an interrupted run leaves no partial entry and the next run resumes after the last finished stage.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ._validation import InputError
from .config import RunConfig, config_hash, config_to_dict

__all__ = ["Stage", "StageResult", "Pipeline", "peak_rss_mb", "run_id_for"]

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
class StageResult:
    """What a stage produced: arrays (memory-mapped when read back) and JSON-able metadata."""
    key: str
    path: Path
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    cached: bool
    seconds: float = 0.0


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
    inputs: dict[str, StageResult]
    progress: bool = True
    scratch: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, name: str) -> StageResult:
        return self.inputs[name]


def _write_entry(final: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    try:
        for name, arr in arrays.items():
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(arr), allow_pickle=False)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=_json_default))
        for p in [*tmp.iterdir(), tmp]:
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


def _read_entry(path: Path, key: str) -> StageResult:
    meta = json.loads((path / "meta.json").read_text())
    arrays = {p.stem: np.load(p, mmap_mode="r", allow_pickle=False) for p in sorted(path.glob("*.npy"))}
    return StageResult(key=key, path=path, arrays=arrays, meta=meta, cached=True)


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
        self.cache_dir = self.out / "cache"
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
        return self.cache_dir / "stages" / f"{name}-{self.keys[name]}"

    def plan(self, wanted: list[str] | None = None, force: tuple[str, ...] = ()) -> list[tuple[str, str]]:
        """``[(stage, reason)]`` in run order: 'cached', 'forced', 'not cached' or 'input changed'."""
        plan, rerun = [], set()
        for name in self._order(wanted or list(self.stages)):
            deps_rerun = [d for d in self.stages[name].deps if d in rerun]
            if name in force:
                reason = "forced"
            elif deps_rerun:
                reason = f"input {deps_rerun[0]} reruns"
            elif (self.entry_path(name) / "meta.json").is_file():
                reason = "cached"
            else:
                reason = "not cached (new key for its settings or inputs)"
            if reason != "cached":
                rerun.add(name)
            plan.append((name, reason))
        return plan

    def run(self, wanted: list[str] | None = None, force: tuple[str, ...] = (),
            on_stage: Callable[[str, StageResult], None] | None = None) -> dict[str, StageResult]:
        results: dict[str, StageResult] = {}
        for name, reason in self.plan(wanted, force):
            st = self.stages[name]
            path = self.entry_path(name)
            if reason == "cached":
                results[name] = _read_entry(path, self.keys[name])
            else:
                ctx = Context(cfg=self.cfg, device=self.device, cache_dir=self.cache_dir,
                              inputs={d: results[d] for d in st.deps}, progress=self.progress)
                t0 = time.perf_counter()
                arrays, meta = st.fn(ctx)
                seconds = time.perf_counter() - t0
                meta = {**meta, "stage": name, "key": self.keys[name], "seconds": seconds,
                        "peak_rss_mb": peak_rss_mb(), "device": str(self.device)}
                _write_entry(path, arrays, meta)
                results[name] = _read_entry(path, self.keys[name])
                results[name].cached = False
                results[name].seconds = seconds
            if on_stage:
                on_stage(name, results[name])
        return results


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("numpy", "scipy", "torch", "torchvision", "sklearn", "umap", "cortex", "himalaya"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a missing optional package is reported as absent
            pass
    return out
