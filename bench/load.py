"""Concurrent load on the dashboard server: simulated browser clients on loopback, latency per request type.

Starts ``python -m dashboard --results DIR --workers N`` (gunicorn, the run's arrays memory-mapped and shared
by the forked workers) on a free loopback port and drives ``--clients`` threads for ``--seconds`` seconds.
Each client behaves like a browser tab, over one keep-alive connection:

- ``page``: ``GET /``, ``/_dash-layout`` and ``/_dash-dependencies`` (every ~20th action, and first);
- ``click``: the UMAP click callback (highlight patches everywhere) then ``inspector`` (the voxel inspector);
- ``filter``: a filter change callback, then ``flatmap_layer``: the two flatmap filter PNGs it points to;
- ``stimulus``: a test stimulus thumbnail PNG (what the inspector shows).

The callback bodies are built from the server's own ``/_dash-dependencies``, as Dash's renderer does. With no
``--results`` a synthetic folder of ``--n-voxels`` voxels (default 80,000, every voxel embedded) is written to
a temporary folder first. It prints p50/p95/p99 latency per request type, the memory of each worker (RSS,
and PSS, which splits shared pages between the processes that map them), and last

    RESULT clients=... requests=... errors=... p95_ms=... rss_per_worker_mb=... pss_per_worker_mb=...

(p95 over all requests; memory: mean over workers at the end, MB = 2^20 bytes).
"""
from __future__ import annotations

import argparse
import http.client
import json
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.dashboard import _find  # noqa: E402  (the layout-tree search the dashboard benchmark uses)

__all__ = ["main", "Client", "worker_memory"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def worker_memory(pid: int) -> dict[str, float]:
    """``{rss_mb, hwm_mb, pss_mb}`` of one process, from /proc (MB = 2^20 bytes)."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out["rss_mb" if line.startswith("VmRSS") else "hwm_mb"] = int(line.split()[1]) / 1024
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                out["pss_mb"] = int(line.split()[1]) / 1024
    except OSError:
        pass
    return out


class Client:
    """One simulated browser tab over a keep-alive HTTP connection; records (kind, seconds, ok)."""

    def __init__(self, port: int, plan: dict, seed: int, record):
        self.port, self.plan, self.record = port, plan, record
        self.rng = random.Random(seed)
        self.conn = None

    def _request(self, kind: str, method: str, path: str, body: dict | None = None) -> bytes | None:
        payload = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if payload else {}
        t0 = time.perf_counter()
        try:
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            self.conn.request(method, path, body=payload, headers=headers)
            resp = self.conn.getresponse()
            data = resp.read()
            ok = resp.status in (200, 204)
            if resp.getheader("Connection", "").lower() == "close":
                self.conn.close()
                self.conn = None
        except (OSError, http.client.HTTPException):
            if self.conn is not None:
                self.conn.close()
            self.conn, data, ok = None, None, False
        self.record(kind, time.perf_counter() - t0, ok)
        return data if ok else None

    def page(self):
        self._request("page", "GET", "/")
        self._request("page", "GET", "/_dash-layout")
        self._request("page", "GET", "/_dash-dependencies")

    def click(self):
        p = self.plan
        n = self.rng.randrange(p["n_points"])
        click = {"points": [{"curveNumber": 0, "pointNumber": n, "x": 0, "y": 0, "z": 0}]}
        data = self._request("click", "POST", "/_dash-update-component",
                             p["body"](p["click_output"], {p["click_input"]: click}, [p["click_input"]]))
        voxel = None
        if data:
            try:
                voxel = json.loads(data)["response"][p["selected_id"]]["data"]
            except (ValueError, KeyError, TypeError):
                voxel = None
        if voxel is not None:
            self._request("inspector", "POST", "/_dash-update-component",
                          p["body"](p["inspector_output"], {p["selected_input"]: voxel}, [p["selected_input"]]))

    def filter(self):
        p = self.plan
        values = p["filter_states"][self.rng.randrange(len(p["filter_states"]))]
        data = self._request("filter", "POST", "/_dash-update-component",
                             p["body"](p["filter_output"], values, [p["filter_changed"]]))
        if data:
            for url in _layer_urls(data):
                self._request("flatmap_layer", "GET", url)

    def stimulus(self):
        p = self.plan
        if p["n_stimuli"]:
            self._request("stimulus", "GET", f"{p['url_prefix']}/stimulus/thumb/{self.rng.randrange(p['n_stimuli'])}.png")

    def run(self, deadline: float):
        self.page()
        while time.perf_counter() < deadline:
            r = self.rng.random()
            if r < 0.05:
                self.page()
            elif r < 0.55:
                self.click()
            elif r < 0.85:
                self.filter()
            else:
                self.stimulus()
        if self.conn is not None:
            self.conn.close()


def _strings(node):
    """Every string inside a decoded JSON document."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)


def _layer_urls(data: bytes) -> list[str]:
    """The flatmap filter-layer image URLs a filter response patches into the flatmap figures."""
    try:
        doc = json.loads(data)
    except ValueError:
        return []
    return [s for s in _strings(doc) if s.startswith("/") and "/filtered.png?" in s]


def build_plan(port: int) -> dict:
    """Callback bodies and parameters for the clients, from the server's layout and dependencies."""
    from dash._utils import split_callback_id

    from dashboard import ids
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("GET", "/_dash-dependencies")
    deps = json.loads(conn.getresponse().read())
    conn.request("GET", "/_dash-layout")
    text = conn.getresponse().read().decode()
    layout = json.loads(text)
    conn.close()
    by_output = {d["output"]: d for d in deps}

    def key_for(first_output: str) -> str:
        for k in by_output:
            if k == first_output or k.startswith(f"..{first_output}.") or k.startswith(f"..{first_output}@"):
                return k
        raise KeyError(f"no callback whose first output is {first_output}")

    def body(first_output: str, values: dict, changed: list[str]) -> dict:
        key = key_for(first_output)
        dep = by_output[key]

        def entry(d):
            if isinstance(d["id"], dict) or str(d["id"]).startswith("{"):
                return []
            return {"id": d["id"], "property": d["property"], "value": values.get(f"{d['id']}.{d['property']}")}

        return {"output": key, "outputs": split_callback_id(key), "inputs": [entry(d) for d in dep["inputs"]],
                "state": [entry(d) for d in dep.get("state", [])], "changedPropIds": changed}

    umap = _find(layout, ids.umap_graph("off"))
    n_points = len(umap["props"]["figure"]["data"][0]["x"]) if umap else 1
    rois = [o["value"] if isinstance(o, dict) else o for o in (_find(layout, ids.ROIS) or {}).get("props", {})
            .get("options", [])]

    def filters(rule="p", bins=(-2, 0, 1, 2, 3), rois_=(), hemis=("L", "R"), thr=0.0, ns="faint"):
        return {f"{ids.RULE}.value": rule, f"{ids.BINS}.value": list(bins), f"{ids.ROIS}.value": list(rois_),
                f"{ids.HEMIS}.value": list(hemis), f"{ids.THRESHOLD}.value": thr, f"{ids.NS_MODE}.value": ns}

    states = [filters(ns="hidden"), filters(thr=0.2), filters(rule="q"), filters(bins=(2, 3)),
              filters(rois_=rois[1:3], hemis=("L",)), filters()]
    prefix = ""
    for value in _strings(layout):
        if value.startswith("/attnbrain/"):
            prefix = "/".join(value.split("/")[:3])
            break
    n_stimuli = 0
    if prefix:
        probe = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for n in (1, 10, 100):
            probe.request("GET", f"{prefix}/stimulus/thumb/{n - 1}.png")
            resp = probe.getresponse()
            resp.read()
            if resp.status == 200:
                n_stimuli = n
        probe.close()
    return {"body": body, "n_points": max(1, n_points), "url_prefix": prefix, "n_stimuli": n_stimuli,
            "click_output": f"{ids.SELECTED}.data", "click_input": f"{ids.umap_graph('off')}.clickData",
            "selected_id": ids.SELECTED, "selected_input": f"{ids.SELECTED}.data",
            "inspector_output": f"{ids.INSPECTOR}.children", "filter_output": f"{ids.FILTER_MSG}.children",
            "filter_changed": f"{ids.THRESHOLD}.value", "filter_states": states}


def _wait_ready(proc: subprocess.Popen, port: int, timeout: float) -> None:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"dashboard exited with {proc.returncode}: {proc.stderr.read()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/_dash-dependencies")
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"dashboard not ready after {timeout:.0f} s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, help="an existing results folder (default: build a synthetic one)")
    p.add_argument("--n-voxels", type=int, default=80_000, help="voxels of the synthetic folder (default 80,000)")
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--clients", type=int, default=50, help="concurrent simulated clients (default 50)")
    p.add_argument("--seconds", type=float, default=20.0, help="duration of the load (default 20 s)")
    p.add_argument("--workers", type=int, default=4, help="dashboard worker processes (default 4)")
    p.add_argument("--threads", type=int, default=4, help="threads per worker (default 4)")
    p.add_argument("--startup-timeout", type=float, default=600.0)
    args = p.parse_args(argv)
    if not (1 <= args.clients <= 500 and 0 < args.seconds <= 600):
        p.error("--clients must be 1..500 and --seconds 0..600")

    tmp = None
    if args.results is None:
        from core.testing.synthetic import make_synthetic_results
        tmp = Path(tempfile.mkdtemp(prefix="attnbrain-load-"))
        t0 = time.perf_counter()
        make_synthetic_results(tmp, n_voxels=args.n_voxels, n_test=args.n_test, k=15, seed=0, rsa_voxels="all",
                               flatmap_height=1024 if args.n_voxels >= 20_000 else 128)
        print(f"synthetic results: {args.n_voxels:,} voxels in {time.perf_counter() - t0:.1f} s -> {tmp}", flush=True)
        args.results = tmp
    port = _free_port()
    cmd = [sys.executable, "-m", "dashboard", "--results", str(args.results), "--port", str(port),
           "--workers", str(args.workers), "--threads", str(args.threads)]
    t0 = time.perf_counter()
    server = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    samples: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    lock = threading.Lock()

    def record(kind, seconds, ok):
        with lock:
            samples[kind].append(seconds)
            if not ok:
                errors[kind] += 1
    try:
        _wait_ready(server, port, args.startup_timeout)
        print(f"server ready in {time.perf_counter() - t0:.1f} s: {args.workers} workers x {args.threads} threads "
              f"on 127.0.0.1:{port}", flush=True)
        plan = build_plan(port)
        deadline = time.perf_counter() + args.seconds
        clients = [Client(port, plan, seed=i, record=record) for i in range(args.clients)]
        threads = [threading.Thread(target=c.run, args=(deadline,), daemon=True) for c in clients]
        t_load = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=args.seconds + 120)
        wall = time.perf_counter() - t_load
        # gunicorn (--workers N > 1) serves from forked children; waitress (one worker) from the process itself.
        workers = _children(server.pid) or [server.pid]
        memory = [worker_memory(w) for w in workers]
        parent = worker_memory(server.pid)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    everything = [s for v in samples.values() for s in v]
    n_req, n_err = len(everything), sum(errors.values())
    print(f"{args.clients} clients for {wall:.1f} s: {n_req} requests ({n_req / wall:.0f}/s), {n_err} errors")
    print(f"{'request':<14}{'n':>7}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'errors':>8}")
    for kind in ("page", "click", "inspector", "filter", "flatmap_layer", "stimulus"):
        if samples[kind]:
            q = np.percentile(np.array(samples[kind]) * 1e3, [50, 95, 99])
            print(f"{kind:<14}{len(samples[kind]):>7}{q[0]:>10.1f}{q[1]:>10.1f}{q[2]:>10.1f}{errors[kind]:>8}")
    for pid, m in zip(workers, memory):
        print(f"worker {pid}: RSS {m.get('rss_mb', 0):.0f} MB (peak {m.get('hwm_mb', 0):.0f}), "
              f"PSS {m.get('pss_mb', 0):.0f} MB")
    print(f"parent (opened the run, forked the workers): RSS {parent.get('rss_mb', 0):.0f} MB, "
          f"PSS {parent.get('pss_mb', 0):.0f} MB")
    p95 = float(np.percentile(everything, 95) * 1e3) if everything else float("nan")
    rss = float(np.mean([m.get("rss_mb", 0) for m in memory])) if memory else float("nan")
    pss = float(np.mean([m.get("pss_mb", 0) for m in memory])) if memory else float("nan")
    print(f"RESULT clients={args.clients} requests={n_req} errors={n_err} p95_ms={p95:.1f} "
          f"rss_per_worker_mb={rss:.0f} pss_per_worker_mb={pss:.0f} workers={len(memory)}")
    return 0 if n_req else 1


if __name__ == "__main__":
    sys.exit(main())
