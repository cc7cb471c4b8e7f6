"""Crash-test hooks: named points where tests kill the process or fake a full disk."""
from __future__ import annotations

import errno
import os

#: Every fault point the pipeline passes, per stage (``<stage>:<point>``) and per run (``run:<point>``).
STAGE_FAULT_POINTS = ("start", "during", "mid-write", "before-rename", "before-index")
RUN_FAULT_POINTS = ("run:before-register", "run:before-summary", "run:mid-summary")


def fault_point(name: str) -> None:
    """Crash-test hook (tests only), driven by the ``ATTNBRAIN_FAULT`` environment variable.

    ``ATTNBRAIN_FAULT=<name>`` kills the process here with SIGKILL; ``ATTNBRAIN_FAULT=enospc@<name>`` raises
    ``OSError(ENOSPC)`` here instead, as a full disk would in the write that follows. Names:
    ``<stage>:start``, ``<stage>:during`` (see :func:`arm_during_fault`), ``<stage>:mid-write`` (second array
    file not yet flushed), ``<stage>:before-rename``, ``<stage>:before-index``, and per run
    ``run:before-register`` (stages done, run.json not yet written), ``run:before-summary`` (run.json
    written) and ``run:mid-summary`` (summary.json's temporary file written, not yet renamed).
    """
    wanted = os.environ.get("ATTNBRAIN_FAULT")
    if not wanted:
        return
    if wanted == name:
        import signal
        os.kill(os.getpid(), signal.SIGKILL)
    if wanted == f"enospc@{name}":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC) + " (injected by ATTNBRAIN_FAULT)")


def arm_during_fault(stage: str):
    """For ``ATTNBRAIN_FAULT=<stage>:during``: SIGKILL the process ``ATTNBRAIN_FAULT_DELAY`` seconds (default
    0.5) into the stage's computation, or when the stage finishes computing if that comes first (so the kill
    always lands inside the stage). Returns a callable that fires the kill at the stage's end, or None."""
    if os.environ.get("ATTNBRAIN_FAULT") != f"{stage}:during":
        return None
    import signal
    import threading
    timer = threading.Timer(float(os.environ.get("ATTNBRAIN_FAULT_DELAY", "0.5")),
                            lambda: os.kill(os.getpid(), signal.SIGKILL))
    timer.daemon = True
    timer.start()
    return lambda: os.kill(os.getpid(), signal.SIGKILL)

