"""Spawned workers die with a SIGKILLed parent (core._proc.die_with_parent)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PARENT = """
import multiprocessing, os, sys, time
from concurrent.futures import ProcessPoolExecutor
sys.path.insert(0, {root!r})
from core._proc import spawn_pool, start_helper

if __name__ == "__main__":
    kind = {kind!r}
    if kind == "helper":                     # a background helper (the numba and pycortex prewarms)
        helper = start_helper(time.sleep, 60, name="test-helper")
        print(helper.pid, flush=True)
    else:                                    # a pool's worker (the UMAP conditions, pycortex's flatmaps)
        pool = spawn_pool(1) if kind == "pool" else ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn"))
        pool.submit(os.getpid).result()      # the worker is up
        print(next(iter(pool._processes)), flush=True)
    time.sleep(60)
"""


def _worker_alive_after_parent_killed(tmp_path, kind: str) -> bool:
    script = tmp_path / "parent.py"
    script.write_text(PARENT.format(root=str(ROOT), kind=kind))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        worker = int(proc.stdout.readline())
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                return False
            if Path(f"/proc/{worker}/stat").read_text().split()[2] == "Z":
                return False
            time.sleep(0.05)
        return True
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_worker_dies_with_killed_parent(tmp_path):
    assert not _worker_alive_after_parent_killed(tmp_path, "pool")       # core._proc.spawn_pool
    assert not _worker_alive_after_parent_killed(tmp_path, "helper")     # core._proc.start_helper
    # A plain spawned pool's worker outlives its parent: the checks above can fail.
    assert _worker_alive_after_parent_killed(tmp_path, "plain")
