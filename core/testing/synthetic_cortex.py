"""The cortex entry of the synthetic results folder (:mod:`core.testing.synthetic`): flatmap images per
condition, the pixel -> voxel lookup, ROI outlines and a minimal stand-in for the pycortex WebGL viewer that
speaks the same postMessage bridge as :mod:`core.cortex.viewer`.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from core.pipeline import schema
from core.vocabulary import NEGATIVE_RGBA, NS_CODE, NS_RGBA, BinScheme, rgba_css, rgba_hex

__all__ = ["write_cortex_assets"]

_MODES = ("on", "off", "uniform")


def write_cortex_assets(folder: Path, geom: dict, st: dict, height: int, rng, scheme: BinScheme,
                        roi_names: list[str]) -> dict:
    """Flatmap images per condition, pixel lookup, ROI outlines, metadata and the minimal viewer in ``folder``;
    returns the cortex stage's summary entry. ``geom``: the synthetic geometry; ``st``: the stats arrays;
    ``roi_names``: the ROI names in the order of the ``roi`` codes (0 = no ROI)."""
    from PIL import Image, ImageDraw
    from scipy.ndimage import gaussian_filter
    from scipy.spatial import ConvexHull, cKDTree

    from core.cortex.flatmap import flat_to_pixel
    flat = np.asarray(geom["flat_xy"], dtype=np.float64)
    pad = 3 * geom["spacing"]
    extents = [float(flat[:, 0].min() - pad), float(flat[:, 0].max() + pad), float(flat[:, 1].min() - pad),
               float(flat[:, 1].max() + pad)]
    width = int(round(height * (extents[1] - extents[0]) / (extents[3] - extents[2])))
    # Pixel centres back to flat coordinates (the inverse of flat_to_pixel), then the nearest voxel within
    # one grid spacing owns the pixel: the same "one voxel per pixel" contract as core.cortex.flatmap.
    cols, rows = np.meshgrid(np.arange(width), np.arange(height))
    px = extents[0] + cols / (width - 1) * (extents[1] - extents[0])
    py = extents[2] + ((height - 1) - rows) / (height - 1) * (extents[3] - extents[2])
    dist, nearest = cKDTree(flat).query(np.stack([px.ravel(), py.ravel()], 1))
    lookup = np.where(dist <= geom["spacing"] * 0.9, nearest, -1).reshape(height, width).astype(np.int32)
    near_cortex = (dist <= 2.5 * geom["spacing"]).reshape(height, width)
    curv = gaussian_filter(rng.standard_normal((height, width)), sigma=max(1.0, height / 60))
    curv = 0.5 + 0.12 * np.sign(curv)                                       # binarised, like quickflat
    rgba = np.zeros((height, width, 4), np.uint8)
    rgba[near_cortex, :3] = np.round(curv[near_cortex] * 255).astype(np.uint8)[:, None]
    rgba[near_cortex, 3] = 255

    pix = flat_to_pixel(flat, extents=extents, height=height, width=width)
    rois = []
    for code, roi_name in enumerate(roi_names[1:], start=1):
        for h, hname in ((0, "lh"), (1, "rh")):
            pts = pix[(geom["roi"] == code) & (geom["hemi"] == h)]
            if len(pts) < 3:
                continue
            hull = pts[ConvexHull(pts).vertices]
            outline = np.vstack([hull, hull[:1]])
            rois.append({"name": roi_name, "hemi": hname, "outline": [np.round(outline, 2).tolist()],
                         "label": np.round(pts.mean(0), 2).tolist()})

    outlines = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(outlines)
    for roi in rois:
        draw.line([tuple(p) for p in roi["outline"][0]], fill=(255, 255, 255, 255), width=1)
        draw.text(tuple(roi["label"]), roi["name"], fill=(255, 255, 255, 255), anchor="mm",
                  stroke_width=1, stroke_fill=(0, 0, 0, 255))
    images = {}
    hit = lookup >= 0
    for m in _MODES:
        bins = np.asarray(st[schema.name("stats", "bin", m)])
        img = rgba.copy()
        code = np.full(lookup.shape, NS_CODE, dtype=np.int64)
        code[hit] = bins[lookup[hit]]
        show = hit & (code != NS_CODE)
        img[show] = scheme.to_rgba(code[show])
        composed = Image.alpha_composite(Image.fromarray(img, "RGBA"), outlines)
        images[m] = f"flatmap_{m}.png"
        composed.save(folder / images[m], format="PNG")
    np.save(folder / f"{schema.name('cortex', 'flatmap_lookup')}.npy", lookup, allow_pickle=False)
    (folder / "flatmap_rois.json").write_text(json.dumps(
        {"height": height, "width": width, "coordinates": "pixel (x = column, y = row from the top)",
         "rois": rois}))
    meta = {"version": "1", "synthetic": True, "subject": "synthetic", "transform": "synthetic",
            "mask": "synthetic", "n_voxels": int(len(flat)), "height": height, "width": width, "extents": extents,
            "conditions": images, "lookup": "flatmap_lookup.npy", "rois": "flatmap_rois.json",
            "palette": {"labels": list(scheme.labels), "hex": scheme.hex, "negative": rgba_hex(NEGATIVE_RGBA),
                        "not_significant": "transparent (curvature shows)"}}
    (folder / "flatmap_meta.json").write_text(json.dumps(meta, indent=1))
    viewer_bins = {m: np.asarray(st[schema.name("stats", "bin", m)]) for m in _MODES}
    _write_minimal_viewer(folder / "viewer", pix, geom["hemi"], viewer_bins, width, height, scheme)
    return {"flatmap": meta, "viewer": "viewer/index.html", "synthetic": True}


def _write_minimal_viewer(folder: Path, pix: np.ndarray, hemi: np.ndarray, bins: dict, width: int,
                          height: int, scheme: BinScheme) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    data = {"width": width, "height": height, "x": np.round(pix[:, 0], 1).tolist(),
            "y": np.round(pix[:, 1], 1).tolist(), "hemi": [int(h) for h in hemi],
            "datasets": {m: [int(b) for b in v] for m, v in bins.items()},
            "palette": {"bins": scheme.hex, "negative": rgba_hex(NEGATIVE_RGBA), "ns": rgba_css(NS_RGBA)}}
    (folder / "data.json").write_text(json.dumps(data, separators=(",", ":")))
    (folder / "index.html").write_text(_MINIMAL_VIEWER_HTML)


# The stand-in for pycortex's static WebGL viewer: the flat voxel positions drawn on a canvas, and the same
# postMessage bridge as core/cortex/viewer.py (ready with the dataset names / pick out; setDataset / setView / mark
# in, each acknowledged).
_MINIMAL_VIEWER_HTML = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>attnbrain minimal viewer (synthetic results)</title>
<style>
 body { margin: 0; font: 12px system-ui, sans-serif; background: #222; color: #eee; }
 #bar { padding: 4px 8px; }
 canvas { display: block; width: 100%; cursor: crosshair; }
</style></head>
<body>
<div id="bar">minimal viewer (stands in for the pycortex WebGL viewer) &middot; dataset <b id="dataset">-</b>
 &middot; view <b id="view">flat</b> &middot; marked <b id="marked">none</b></div>
<canvas id="cortex"></canvas>
<script>
(function () {
  "use strict";
  var state = { dataset: null, view: "flat", marked: null, ready: false, acks: 0 };
  window.attnbrainViewer = state;
  var canvas = document.getElementById("cortex");
  var data = null;

  function post(msg) {
    if (window.parent && window.parent !== window) { window.parent.postMessage(msg, window.location.origin); }
  }
  function colour(code) {
    if (code >= 0) { return data.palette.bins[code]; }
    return code === -2 ? data.palette.negative : data.palette.ns;
  }
  function draw() {
    if (!data) { return; }
    var ctx = canvas.getContext("2d");
    canvas.width = data.width; canvas.height = data.height;
    ctx.fillStyle = "#555"; ctx.fillRect(0, 0, data.width, data.height);
    var codes = data.datasets[state.dataset] || data.datasets[Object.keys(data.datasets)[0]];
    var squash = state.view === "inflated" ? 0.8 : 1.0;
    for (var v = 0; v < data.x.length; v++) {
      ctx.fillStyle = colour(codes[v]);
      ctx.fillRect(data.x[v] - 1, data.height / 2 + (data.y[v] - data.height / 2) * squash - 1, 2, 2);
    }
    if (state.marked !== null && state.marked < data.x.length) {
      ctx.strokeStyle = "#ff2020"; ctx.lineWidth = 2; ctx.beginPath();
      ctx.arc(data.x[state.marked], data.height / 2 + (data.y[state.marked] - data.height / 2) * squash, 6, 0,
              2 * Math.PI);
      ctx.stroke();
    }
    document.getElementById("dataset").textContent = state.dataset || "-";
    document.getElementById("view").textContent = state.view;
    document.getElementById("marked").textContent = state.marked === null ? "none" : String(state.marked);
  }
  function nearest(px, py) {
    var best = -1, bestD = 36;        // within 6 image pixels
    for (var v = 0; v < data.x.length; v++) {
      var dx = data.x[v] - px, dy = data.y[v] - py, d = dx * dx + dy * dy;
      if (d < bestD) { bestD = d; best = v; }
    }
    return best;
  }
  canvas.addEventListener("click", function (ev) {
    if (!data) { return; }
    var box = canvas.getBoundingClientRect();
    var px = (ev.clientX - box.left) / box.width * data.width;
    var py = (ev.clientY - box.top) / box.height * data.height;
    if (state.view === "inflated") { py = data.height / 2 + (py - data.height / 2) / 0.8; }
    var v = nearest(px, py);
    if (v >= 0) { post({ type: "attnbrain:pick", voxel: v, hemi: data.hemi[v] ? "right" : "left", vertex: -1 }); }
  });
  window.addEventListener("message", function (ev) {
    if (ev.origin !== window.location.origin || ev.source !== window.parent) { return; }
    var msg = ev.data || {};
    if (msg.type === "attnbrain:setDataset") { state.dataset = String(msg.name); }
    else if (msg.type === "attnbrain:setView") { state.view = msg.view === "inflated" ? "inflated" : "flat"; }
    else if (msg.type === "attnbrain:mark") { state.marked = msg.voxel === null ? null : Number(msg.voxel); }
    else { return; }
    draw();
    state.acks += 1;
    post({ type: "attnbrain:ack", request: msg.type, ok: true,
           state: { dataset: state.dataset, view: state.view, marked: state.marked } });
  });
  fetch("data.json").then(function (r) { return r.json(); }).then(function (d) {
    data = d;
    state.dataset = state.dataset || Object.keys(d.datasets)[0];
    draw();
    state.ready = true;
    post({ type: "attnbrain:ready", datasets: Object.keys(d.datasets), active: state.dataset, view: state.view,
           n_voxels: d.x.length });
  });
})();
</script>
</body></html>
"""
