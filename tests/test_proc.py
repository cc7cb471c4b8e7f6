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
from core._proc import die_with_parent

if __name__ == "__main__":
    kw = dict(initializer=die_with_parent, initargs=(os.getpid(),)) if {guard} else {{}}
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), **kw)
    pool.submit(os.getpid).result()          # the worker is up
    print(next(iter(pool._processes)), flush=True)
    time.sleep(60)
"""


def _worker_alive_after_parent_killed(tmp_path, guard: bool) -> bool:
    script = tmp_path / "parent.py"
    script.write_text(PARENT.format(root=str(ROOT), guard=guard))
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
    assert not _worker_alive_after_parent_killed(tmp_path, guard=True)
    # Without the initializer the same worker outlives its parent: the check above can fail.
    assert _worker_alive_after_parent_killed(tmp_path, guard=False)
