/*
 * attnbrain dashboard, browser side: linked 3-D cameras, flatmap clicks -> figure coordinates, selection
 * outlines without their points, and the postMessage bridge to the pycortex viewer iframe.
 * Clientside callbacks live under window.dash_clientside.attnbrain; shared state under window.attnbrain.
 */
(function () {
  "use strict";
  var A = (window.attnbrain = window.attnbrain || {});
  var PAIR = ["off", "on"];
  A.cameraLinked = true;
  A.counts = { flatClick: 0, pick: 0, selection: 0 };
  A.viewer = { ready: false, dataset: null, view: null, voxel: null, acks: 0, sent: [] };

  function noUpdate() {
    return window.dash_clientside.no_update;
  }

  function plotOf(graphId) {
    var el = document.getElementById(graphId);
    if (!el) { return null; }
    return el.classList.contains("js-plotly-plot") ? el : el.querySelector(".js-plotly-plot");
  }

  // ------------------------------------------------------------------ cameras
  function sameCamera(a, b) {
    if (!a || !b) { return false; }
    var keys = ["eye", "center", "up"];
    for (var i = 0; i < keys.length; i++) {
      var p = a[keys[i]], q = b[keys[i]];
      if (!p || !q) { return false; }
      if (Math.abs(p.x - q.x) > 1e-6 || Math.abs(p.y - q.y) > 1e-6 || Math.abs(p.z - q.z) > 1e-6) {
        return false;
      }
    }
    return true;
  }

  function copyCamera(toCondition, camera) {
    if (!A.cameraLinked || !camera || !camera.eye) { return; }
    var gd = plotOf("umap-" + toCondition);
    if (!gd || !gd._fullLayout || !gd._fullLayout.scene || !window.Plotly) { return; }
    if (sameCamera(gd._fullLayout.scene.camera, camera)) { return; }
    var cam = { eye: camera.eye, center: camera.center || { x: 0, y: 0, z: 0 }, up: camera.up || { x: 0, y: 0, z: 1 } };
    window.Plotly.relayout(gd, { "scene.camera": cam });
  }

  function other(condition) {
    return condition === "off" ? "on" : "off";
  }

  // ------------------------------------------------------------------ flatmap clicks
  var pending = null;

  function onPointerDown(ev) {
    if (ev.button !== 0) { return; }
    pending = { gd: ev.currentTarget, x: ev.clientX, y: ev.clientY };
  }

  function onPointerUp(ev) {
    var down = pending;
    pending = null;
    if (!down || Math.abs(ev.clientX - down.x) > 4 || Math.abs(ev.clientY - down.y) > 4) { return; }
    if (ev.target && ev.target.closest && ev.target.closest(".modebar")) { return; }
    var gd = down.gd, fl = gd._fullLayout;
    if (!fl || !fl.xaxis || !fl.yaxis) { return; }
    var box = gd.getBoundingClientRect();
    var px = ev.clientX - box.left - fl.xaxis._offset;
    var py = ev.clientY - box.top - fl.yaxis._offset;
    if (px < 0 || py < 0 || px > fl.xaxis._length || py > fl.yaxis._length) { return; }
    A.counts.flatClick += 1;
    window.dash_clientside.set_props("flat-click-" + gd._attnbrainCondition, {
      data: { x: fl.xaxis.p2d(px), y: fl.yaxis.p2d(py), n: A.counts.flatClick }
    });
  }

  // ------------------------------------------------------------------ binding to rendered graphs
  function bind() {
    PAIR.forEach(function (m) {
      var umap = plotOf("umap-" + m);
      if (umap && umap.on && umap._attnbrainEmitter !== umap._ev) {
        umap._attnbrainEmitter = umap._ev;
        // Live: follow the other camera while it is being dragged, not only when the drag ends.
        umap.on("plotly_relayouting", function (e) {
          if (e && e["scene.camera"]) { copyCamera(other(m), e["scene.camera"]); }
        });
      }
      var flat = plotOf("flat-" + m);
      if (flat && !flat._attnbrainCondition) {
        flat._attnbrainCondition = m;
        flat.addEventListener("pointerdown", onPointerDown, true);
      }
    });
  }
  document.addEventListener("pointerup", onPointerUp, true);
  var scheduled = false;
  new MutationObserver(function () {
    if (scheduled) { return; }
    scheduled = true;
    window.requestAnimationFrame(function () { scheduled = false; bind(); });
  }).observe(document.documentElement, { childList: true, subtree: true });

  // ------------------------------------------------------------------ viewer bridge
  function frame() {
    return document.getElementById("viewer-frame");
  }

  function toViewer(msg) {
    var f = frame();
    if (!f || !f.contentWindow || !A.viewer.ready) { return false; }
    f.contentWindow.postMessage(msg, window.location.origin);
    A.viewer.sent.push(msg.type);
    return true;
  }

  // The viewer announces its dataset names in "ready"; use the one naming the condition (exactly, else as a
  // word: "attention on", "on: bins"), falling back to the condition name itself.
  function datasetFor(condition) {
    var names = A.viewer.datasets || [];
    if (names.indexOf(condition) >= 0) { return condition; }
    var word = new RegExp("(^|[^a-z])" + condition + "([^a-z]|$)", "i");
    for (var i = 0; i < names.length; i++) { if (word.test(names[i])) { return names[i]; } }
    return condition;
  }

  function syncViewer(all) {
    var v = A.viewer;
    if ((all || v.dirty.dataset) && v.dataset) {
      toViewer({ type: "attnbrain:setDataset", name: datasetFor(v.dataset) });
    }
    if (all || v.dirty.view) { toViewer({ type: "attnbrain:setView", view: v.view }); }
    if ((all || v.dirty.voxel) && v.voxel !== null) { toViewer({ type: "attnbrain:mark", voxel: v.voxel }); }
    v.dirty = {};
  }
  A.viewer.dirty = {};

  window.addEventListener("message", function (ev) {
    var f = frame();
    if (!f || ev.source !== f.contentWindow || ev.origin !== window.location.origin) { return; }
    var msg = ev.data || {};
    var set = window.dash_clientside.set_props;
    if (msg.type === "attnbrain:ready") {
      A.viewer.ready = true;
      A.viewer.datasets = Array.isArray(msg.datasets) ? msg.datasets.map(String) : null;
      syncViewer(true);
      set("viewer-status", { children: "viewer ready: pick a voxel on the brain to select it" });
    } else if (msg.type === "attnbrain:pick") {
      if (typeof msg.voxel !== "number") {     // a point of the brain outside this run's voxels
        set("viewer-status", { children: "viewer: no voxel of this run at that point" });
        return;
      }
      A.counts.pick += 1;
      set("viewer-pick", { data: { voxel: msg.voxel, hemi: msg.hemi, vertex: msg.vertex, n: A.counts.pick } });
    } else if (msg.type === "attnbrain:ack") {
      A.viewer.acks += 1;
      var what = { "attnbrain:mark": "marked voxel " + A.viewer.voxel,
                   "attnbrain:setDataset": "showing attention " + A.viewer.dataset,
                   "attnbrain:setView": A.viewer.view + " view" }[msg.request] || msg.request;
      set("viewer-status", { children: "viewer: " + what });
    }
  });

  // ------------------------------------------------------------------ clientside callbacks
  window.dash_clientside = window.dash_clientside || {};
  window.dash_clientside.attnbrain = {
    syncCamera: function (offRelayout, onRelayout, link) {
      A.cameraLinked = Array.isArray(link) && link.indexOf("linked") >= 0;
      if (!A.cameraLinked) { return noUpdate(); }
      var triggered = (window.dash_clientside.callback_context.triggered || []).map(function (t) {
        return t.prop_id;
      });
      if (triggered.indexOf("umap-off.relayoutData") >= 0 && offRelayout) {
        copyCamera("on", offRelayout["scene.camera"]);
      } else if (triggered.indexOf("umap-on.relayoutData") >= 0 && onRelayout) {
        copyCamera("off", onRelayout["scene.camera"]);
      } else {
        var gd = plotOf("umap-off");
        if (gd && gd._fullLayout && gd._fullLayout.scene) { copyCamera("on", gd._fullLayout.scene.camera); }
      }
      return noUpdate();
    },

    selectionOutline: function (selected) {
      A.counts.selection += 1;
      var out = { n: A.counts.selection };
      if (selected && selected.lassoPoints) {
        out.lassoPoints = { x: selected.lassoPoints.x, y: selected.lassoPoints.y };
      } else if (selected && selected.range) {
        out.range = { x: selected.range.x, y: selected.range.y };
      }
      A.lastOutline = out;
      return out;
    },

    viewerSync: function (condition, view, voxel) {
      var v = A.viewer;
      if (condition !== v.dataset) { v.dataset = condition; v.dirty.dataset = true; }
      if (view !== v.view) { v.view = view; v.dirty.view = true; }
      var vox = typeof voxel === "number" ? voxel : null;
      if (vox !== v.voxel) { v.voxel = vox; v.dirty.voxel = true; }
      if (v.ready) { syncViewer(false); }
      return noUpdate();
    }
  };
})();
