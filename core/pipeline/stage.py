"""A stage of the pipeline and what its function sees."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from core.config import RunConfig
from core.pipeline import schema
from core.pipeline.store import StageEntry

__all__ = ["Stage", "Context"]


@dataclass
class Stage:
    name: str
    fn: Callable[["Context"], tuple[dict[str, np.ndarray], dict[str, Any]]]
    deps: tuple[str, ...] = ()
    fields: tuple[str, ...] = ()          # config sections / dotted fields the output depends on
    description: str = ""
    extra: Callable[[RunConfig], Any] | None = None   # more key material (e.g. input file fingerprints)
    # Called as prewarm(cfg, cache_dir) once at the start of a run in which this stage computes (not cached):
    # may start background preparation (e.g. compiling kernels or building pycortex's caches while the GPU
    # stages run); returns a process to end with the run, or None.
    prewarm: Callable[[RunConfig, Path], Any] | None = None
    # With parallel stages, computed in its own spawned process beside the others (fn must be picklable).
    isolated: bool = False


@dataclass
class Context:
    """What a stage function sees: the config, the device, its inputs' results and the shared cache."""
    cfg: RunConfig
    device: Any
    cache_dir: Path
    inputs: dict[str, StageEntry]
    progress: bool = True
    workdir: Path | None = None           # the stage's own folder for files other than arrays

    def __getitem__(self, stage: str) -> StageEntry:
        return self.inputs[stage]

    def array(self, stage: str, field: str, condition: str | None = None) -> np.ndarray:
        """An input stage's array by schema field (memory-mapped; see :func:`core.pipeline.schema.name`)."""
        return self.inputs[stage].arrays[schema.name(stage, field, condition)]

    def has_array(self, stage: str, field: str, condition: str | None = None) -> bool:
        return schema.name(stage, field, condition) in self.inputs[stage].arrays

