"""Worker processes that never outlive the run that started them."""
from __future__ import annotations

import os
import sys

__all__ = ["die_with_parent", "spawn_pool", "start_helper"]


def die_with_parent(parent_pid: int) -> None:
    """Process-pool initializer: have the kernel SIGKILL this worker when its parent dies.

    A killed ``precompute.py`` (SIGKILL, OOM killer, Ctrl-C twice) must not leave spawned UMAP or pycortex
    workers running on, holding memory and the parent's output pipes. Linux's ``PR_SET_PDEATHSIG`` does this;
    the parent-pid check covers a parent that died before the request was made. Elsewhere it is a no-op.
    """
    if sys.platform.startswith("linux"):
        import ctypes
        import signal
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:
        os._exit(1)


def spawn_pool(workers: int):
    """A ``ProcessPoolExecutor`` of ``workers`` freshly spawned processes that die with this one.

    ``spawn``, not ``fork``: the workers inherit no OpenMP/BLAS thread pools or torch state from a parent that
    has already started them; :func:`die_with_parent` runs first in each.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=die_with_parent, initargs=(os.getpid(),))


def start_helper(target, *args, name: str):
    """Start ``target(*args)`` in a freshly spawned daemon process that dies with this one (see
    :func:`die_with_parent`); returns the process. For background preparation a run may end before."""
    import multiprocessing
    proc = multiprocessing.get_context("spawn").Process(target=_helper_main, args=(os.getpid(), target, args),
                                                        name=name, daemon=True)
    proc.start()
    return proc


def _helper_main(parent_pid: int, target, args) -> None:
    die_with_parent(parent_pid)
    target(*args)
