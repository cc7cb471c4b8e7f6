"""A real single-node SLURM for tests, from Debian's ``slurm-wlm`` and ``munge`` packages: munged, slurmctld and
slurmd started on this host as root with a slurm.conf naming this host (its CPUs and RealMemory from
``slurmd -C``), ``ProctrackType=proctrack/linuxproc``, ``TaskPlugin=task/none``, ``SlurmUser=root``, and state,
spool and logs in a temporary folder; stopped by their pids. Under ``CI=true`` a node that cannot start fails
the test with the reason; elsewhere the test is skipped with it."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

__all__ = ["slurm_node"]


def _unavailable(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"SLURM test node: {reason}")
    pytest.skip(f"SLURM test node: {reason}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def slurm_node(folder: Path):
    """Start the node; yields the environment (``SLURM_CONF``) under which ``sbatch`` and dask-jobqueue reach it."""
    missing = [b for b in ("munged", "slurmctld", "slurmd", "sbatch", "sinfo") if shutil.which(b) is None]
    if missing:
        _unavailable(f"{', '.join(missing)} not installed (apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        _unavailable("the daemons need root")
    folder = Path(folder)
    for sub in ("state", "spool", "logs"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    host = socket.gethostname().split(".")[0]
    node = subprocess.run(["slurmd", "-C"], capture_output=True, text=True).stdout.splitlines()
    node_line = next((ln for ln in node if ln.startswith("NodeName=")), None)
    if node_line is None:
        _unavailable(f"slurmd -C printed no NodeName line: {node!r}")
    conf = folder / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=attnbraintest", f"SlurmctldHost={host}", "SlurmUser=root", "SlurmdUser=root",
        "AuthType=auth/munge", "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
        "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory", "SchedulerType=sched/backfill",
        "MpiDefault=none", "JobAcctGatherType=jobacct_gather/none", "ReturnToService=2",
        f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
        f"StateSaveLocation={folder / 'state'}", f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}", f"SlurmdPidFile={folder / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'slurmctld.log'}", f"SlurmdLogFile={folder / 'slurmd.log'}",
        f"{node_line} State=UNKNOWN", f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP",
    ]) + "\n")
    env = {**os.environ, "SLURM_CONF": str(conf)}
    started: list[Path] = []

    def stop():
        for pid_file in reversed(started):
            deadline = time.time() + 10
            while not pid_file.exists() and time.time() < deadline:
                time.sleep(0.1)
            if pid_file.exists():
                try:
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
                except (ProcessLookupError, ValueError):
                    pass

    try:
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        if subprocess.run(["munge", "-n"], capture_output=True).returncode != 0:
            subprocess.run(["munged", "--force", f"--pid-file={folder / 'munged.pid'}"], check=True,
                           capture_output=True, timeout=30)
            started.append(folder / "munged.pid")
        for daemon, pid in (("slurmctld", "slurmctld.pid"), ("slurmd", "slurmd.pid")):
            subprocess.run([daemon, "-f", str(conf)], check=True, capture_output=True, env=env, timeout=30)
            started.append(folder / pid)
    except subprocess.CalledProcessError as exc:
        stop()
        _unavailable(f"{exc.cmd[0]} did not start: {(exc.stderr or b'').decode(errors='replace')[-500:]}")
    deadline = time.time() + 60
    state = ""
    while time.time() < deadline:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, env=env)
        state = out.stdout.strip()
        if state in ("idle", "mixed", "allocated"):
            break
        time.sleep(0.5)
    else:
        stop()
        log = (folder / "slurmctld.log").read_text()[-1500:] if (folder / "slurmctld.log").exists() else ""
        _unavailable(f"the node did not become idle in 60 s (state {state!r}); slurmctld.log: {log}")
    try:
        yield env
    finally:
        stop()
