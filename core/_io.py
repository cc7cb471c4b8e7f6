"""Atomic file writes: readers see the old file or the whole new one, never a half-written one."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["atomic_write", "file_lock", "json_default", "write_json_atomic"]


def atomic_write(path: str | Path, write: Callable, *, binary: bool = True) -> Path:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path



@contextlib.contextmanager
def file_lock(path: str | Path):
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block; waits while another process
    holds it. The lock goes with the process, so a killed holder never leaves it taken."""
    import fcntl
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)

def json_default(o):
    """``json.dump(..., default=json_default)``: numpy scalars and arrays as Python numbers and lists, paths
    as strings; anything else is an error."""
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def _json_default_or_str(o):
    try:
        return json_default(o)
    except TypeError:
        return str(o)


def write_json_atomic(path: str | Path, obj: Any) -> Path:
    """``obj`` as indented JSON (numpy scalars and arrays converted), written atomically; parents created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda f: json.dump(obj, f, indent=2, default=_json_default_or_str), binary=False)
