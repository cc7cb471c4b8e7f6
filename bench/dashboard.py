"""Dashboard payload and latency at paper scale, measured through Dash's own HTTP endpoints.

With no arguments it writes a synthetic results folder of 80,000 voxels, all embedded in both UMAPs (the
worst case for the page: the pipeline's default embeds only the significant ones), into a temporary folder;
``--results DIR`` measures an existing one instead. It reports

- the bytes of the initial page's two UMAP figures (as ``/_dash-layout`` sends them) and of the whole layout,
- bytes and server time of a click-to-highlight (the selection callback: highlight patches of every view),
  and of the inspector update the selection triggers,
- bytes and server time of a filter change (colour patches) and of the flatmap filter layer it loads,
- bytes and server time of a lasso set selection on the r scatter,

then ``RESULT initial_mb=... click_kb=... click_server_ms=...`` (medians; MB = 10^6 bytes, KB = 10^3 bytes).
Targets: initial <= 1.5 MB, click <= 2 KB and <= 50 ms.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

__all__ = ["callback_request", "post_callback", "main"]


def callback_request(app, first_output: str, values: dict[str, Any], changed: list[str]) -> dict:
    """The JSON body Dash's renderer posts to ``/_dash-update-component`` for one callback.

    Parameters
    ----------
    app : dash.Dash
    first_output : str
        ``"<component id>.<property>"`` of the callback's first output (identifies the callback).
    values : dict
        ``"<id>.<property>" -> value`` of inputs and states; missing ones are sent as None.
        Pattern-matching (ALL) inputs are sent with no matching component.
    changed : list of str
        The ``"<id>.<property>"`` that triggered the call.
    """
    from dash._utils import split_callback_id
    key = next((k for k in app.callback_map
                if k == first_output or k.startswith(f"..{first_output}.") or k.startswith(f"..{first_output}@")),
               None)
    if key is None:
        raise KeyError(f"no callback whose first output is {first_output}")
    cb = app.callback_map[key]

    def entry(dep):
        if dep["id"].startswith("{"):
            return []
        return {"id": dep["id"], "property": dep["property"], "value": values.get(f"{dep['id']}.{dep['property']}")}

    outputs = split_callback_id(key)
    return {"output": key, "outputs": outputs, "inputs": [entry(d) for d in cb["inputs"]],
            "state": [entry(d) for d in cb["state"]], "changedPropIds": list(changed)}


def post_callback(client, body: dict) -> tuple[dict, int, float]:
    """POST a callback body with a Flask test client: (decoded response, response bytes, seconds)."""
    t0 = time.perf_counter()
    resp = client.post("/_dash-update-component", json=body)
    seconds = time.perf_counter() - t0
    if resp.status_code == 204:
        return {}, 0, seconds
    if resp.status_code != 200:
        raise RuntimeError(f"callback {body['output'][:60]} answered {resp.status_code}: {resp.data[:300]!r}")
    return json.loads(resp.data), len(resp.data), seconds


def _find(node, component_id):
    """The serialised component with ``id == component_id`` in a layout JSON tree."""
    if isinstance(node, dict):
        props = node.get("props")
        if isinstance(props, dict) and props.get("id") == component_id:
            return node
        for value in node.values():
            hit = _find(value, component_id)
            if hit is not None:
                return hit
    elif isinstance(node, list):
        for value in node:
            hit = _find(value, component_id)
            if hit is not None:
                return hit
    return None


def _filters(rule="p", bins=(-2, 0, 1, 2, 3), rois=(), hemis=("L", "R"), thr=0.0, ns="faint") -> dict:
    from dashboard import ids
    return {f"{ids.RULE}.value": rule, f"{ids.BINS}.value": list(bins), f"{ids.ROIS}.value": list(rois),
            f"{ids.HEMIS}.value": list(hemis), f"{ids.THRESHOLD}.value": thr, f"{ids.NS_MODE}.value": ns}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, help="an existing results folder (default: build a synthetic one)")
    p.add_argument("--run", help="run id in --results")
    p.add_argument("--n-voxels", type=int, default=80_000)
    p.add_argument("--n-test", type=int, default=200)
    p.add_argument("--embed", choices=("all", "union"), default="all",
                   help="synthetic folder: embed every voxel (worst case) or the significant ones")
    p.add_argument("--clicks", type=int, default=30)
    p.add_argument("--keep", type=Path, help="write the synthetic folder here and keep it")
    args = p.parse_args(argv)

    from core.outputs.reader import open_results
    from dashboard import ids
    from dashboard.app import create_app

    tmp = None
    if args.results is None:
        from core.testing.synthetic import make_synthetic_results
        folder = args.keep or Path(tmp := tempfile.mkdtemp(prefix="attnbrain-bench-"))
        t0 = time.perf_counter()
        make_synthetic_results(folder, n_voxels=args.n_voxels, n_test=args.n_test, k=15, seed=0,
                               rsa_voxels=args.embed, flatmap_height=1024)
        print(f"synthetic results: {args.n_voxels:,} voxels, {args.n_test} test samples, embed={args.embed} "
              f"in {time.perf_counter() - t0:.1f} s -> {folder}")
        args.results = folder
    t0 = time.perf_counter()
    app = create_app(open_results(args.results, args.run))
    data = app.attnbrain_data
    print(f"create_app: {time.perf_counter() - t0:.2f} s; run {data.run_id}; {data.n_voxels:,} voxels; embedded "
          + ", ".join(f"{m} {v.voxels.size:,}" for m, v in data.umap.items()))
    client = app.server.test_client()

    # ---------------------------------------------------------------- initial page
    t0 = time.perf_counter()
    layout_resp = client.get("/_dash-layout")
    layout_s = time.perf_counter() - t0
    layout = json.loads(layout_resp.data)
    umap_bytes = {m: len(json.dumps(_find(layout, ids.umap_graph(m))["props"]["figure"], separators=(",", ":")))
                  for m in data.umap}
    initial = sum(umap_bytes.values())
    index_bytes = len(client.get("/").data)
    print(f"initial page: both UMAP figures {initial / 1e6:.3f} MB ("
          + ", ".join(f"{m} {b / 1e6:.3f}" for m, b in umap_bytes.items())
          + f"); whole /_dash-layout {len(layout_resp.data) / 1e6:.3f} MB served in {layout_s * 1e3:.0f} ms; "
          f"index.html {index_bytes / 1e3:.1f} KB")
    body = callback_request(app, f"{ids.TABLE}.children", {f"{ids.SELECTED_SET}.data": []}, [])
    _, table_bytes, table_s = post_callback(client, body)
    print(f"initial table callback: {table_bytes / 1e3:.1f} KB in {table_s * 1e3:.1f} ms")

    # ---------------------------------------------------------------- click -> highlight
    rng = np.random.default_rng(0)
    view = data.umap["off"]
    click_bytes, click_s, insp_bytes, insp_s = [], [], [], []
    for n in rng.choice(view.voxels.size, args.clicks, replace=False):
        click = {"points": [{"curveNumber": 0, "pointNumber": int(n), "x": 0, "y": 0, "z": 0}]}
        body = callback_request(app, f"{ids.SELECTED}.data", {f"{ids.umap_graph('off')}.clickData": click},
                                [f"{ids.umap_graph('off')}.clickData"])
        out, nbytes, secs = post_callback(client, body)
        voxel = out["response"][ids.SELECTED]["data"]
        assert voxel == int(view.voxels[n]), (voxel, int(view.voxels[n]))
        click_bytes.append(nbytes)
        click_s.append(secs)
        body = callback_request(app, f"{ids.INSPECTOR}.children", {f"{ids.SELECTED}.data": voxel},
                                [f"{ids.SELECTED}.data"])
        _, nbytes, secs = post_callback(client, body)
        insp_bytes.append(nbytes)
        insp_s.append(secs)
    med = statistics.median
    print(f"click -> highlight: {med(click_bytes) / 1e3:.2f} KB, server {med(click_s) * 1e3:.1f} ms "
          f"(median of {args.clicks}; max {max(click_s) * 1e3:.1f} ms)")
    print(f"  then inspector:   {med(insp_bytes) / 1e3:.2f} KB, server {med(insp_s) * 1e3:.1f} ms")

    # ---------------------------------------------------------------- filter changes
    states = [_filters(ns="hidden"), _filters(thr=0.2), _filters(rule="q"), _filters(bins=(2, 3)),
              _filters(rois=data.roi_names[1:3], hemis=("L",)), _filters()]
    f_bytes, f_s, layer_bytes, layer_s = [], [], [], []
    for values in states:
        body = callback_request(app, f"{ids.FILTER_MSG}.children", values, [f"{ids.THRESHOLD}.value"])
        out, nbytes, secs = post_callback(client, body)
        f_bytes.append(nbytes)
        f_s.append(secs)
        if data.flatmap is not None:
            patch = out["response"][ids.flat_graph("off")]["figure"]
            url = patch["operations"][0]["params"]["value"]
            t0 = time.perf_counter()
            resp = client.get(url)
            layer_s.append(time.perf_counter() - t0)
            layer_bytes.append(len(resp.data))
    print(f"filter change: {med(f_bytes) / 1e3:.1f} KB, server {med(f_s) * 1e3:.1f} ms (median of {len(states)})")
    if layer_s:
        print(f"  flatmap filter layer PNG: {med(layer_bytes) / 1e3:.1f} KB, {med(layer_s) * 1e3:.0f} ms each "
              "(two per change, one per flatmap)")

    # ---------------------------------------------------------------- set selection
    set_bytes, set_s, set_n = [], [], []
    for lo, hi in ((0.2, 0.5), (0.1, 0.3), (0.3, 0.6)):
        lasso = {"lassoPoints": {"x": [lo, hi, hi, lo], "y": [lo, lo, hi, hi]}, "n": 1}
        body = callback_request(app, f"{ids.SELECTED_SET}.data", {f"{ids.R_SCATTER_SET}.data": lasso, **_filters()},
                                [f"{ids.R_SCATTER_SET}.data"])
        out, nbytes, secs = post_callback(client, body)
        set_n.append(len(out["response"][ids.SELECTED_SET]["data"]))
        set_bytes.append(nbytes)
        set_s.append(secs)
    print("lasso set selection on the r scatter: " + "; ".join(
        f"{n:,} voxels {b / 1e3:.0f} KB {t * 1e3:.0f} ms" for n, b, t in zip(set_n, set_bytes, set_s)))

    initial_mb = initial / 1e6
    click_kb = med(click_bytes) / 1e3
    click_ms = med(click_s) * 1e3
    ok = initial_mb <= 1.5 and click_kb <= 2 and click_ms <= 50
    print(f"targets (initial <= 1.5 MB, click <= 2 KB and <= 50 ms): {'met' if ok else 'NOT met'}")
    if tmp:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"RESULT initial_mb={initial_mb:.3f} click_kb={click_kb:.2f} click_server_ms={click_ms:.1f} "
          f"filter_kb={med(f_bytes) / 1e3:.1f} filter_server_ms={med(f_s) * 1e3:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
