/*
 * attnbrain dashboard, browser side: linked 3-D cameras, flatmap clicks -> figure coordinates, selection
 * outlines without their points, and the postMessage bridge to the pycortex viewer iframe.
 * Scenes: animated camera moves between scenes, the current view written into the URL (replaceState), and
 * presentation mode (keys at the document level in the capture phase, also forwarded from the viewer iframe).
 * Clientside callbacks live under window.dash_clientside.attnbrain; shared state under window.attnbrain.
 * Conditions, graph and store ids, trace names and the run's bin scheme come from the page's vocabulary (the
 * JSON in the data-vocabulary attribute of #attnbrain-vocabulary, written by dashboard/app.py).
 */
(function () {
  "use strict";
  var A = (window.attnbrain = window.attnbrain || {});
  A.cameraLinked = true;
  A.counts = { flatClick: 0, pick: 0, selection: 0 };
  A.viewer = { ready: false, dataset: null, view: null, voxel: null, acks: 0, sent: [] };

  // The page's vocabulary, once the layout holding it has been drawn (null before).
  function vocab() {
    if (!A.vocabulary) {
      var el = document.getElementById("attnbrain-vocabulary");
      if (!el || !el.dataset.vocabulary) { return null; }
      A.vocabulary = JSON.parse(el.dataset.vocabulary);
      A.bins = A.vocabulary.bins;
    }
    return A.vocabulary;
  }

  function pair() {
    var v = vocab();
    return v ? v.pair : [];
  }

  function umapId(m) { return vocab().graphs.umap[m]; }

  function pageId(name) { return vocab().ids[name]; }

  // Index of the trace named by the vocabulary's traces[kind] ("highlight" or "set"), -1 if none.
  function traceIndex(gd, kind) {
    var name = vocab().traces[kind];
    for (var i = 0; i < gd.data.length; i++) { if (gd.data[i].name === name) { return i; } }
    return -1;
  }

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
    if (!A.cameraLinked || A.animating || !camera || !camera.eye) { return; }
    var gd = plotOf(umapId(toCondition));
    if (!gd || !gd._fullLayout || !gd._fullLayout.scene || !window.Plotly) { return; }
    if (sameCamera(gd._fullLayout.scene.camera, camera)) { return; }
    var cam = { eye: camera.eye, center: camera.center || { x: 0, y: 0, z: 0 }, up: camera.up || { x: 0, y: 0, z: 1 } };
    window.Plotly.relayout(gd, { "scene.camera": cam });
  }

  function other(condition) {
    var p = pair();
    return condition === p[0] ? p[1] : p[0];
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
    window.dash_clientside.set_props(vocab().graphs.flat_click[gd._attnbrainCondition], {
      data: { x: fl.xaxis.p2d(px), y: fl.yaxis.p2d(py), n: A.counts.flatClick }
    });
  }

  // ------------------------------------------------------------------ binding to rendered graphs
  function bind() {
    pair().forEach(function (m) {
      var umap = plotOf(umapId(m));
      if (umap && umap.on && umap._attnbrainEmitter !== umap._ev) {
        umap._attnbrainEmitter = umap._ev;
        if (!A.defaultCameras[m] && umap._fullLayout && umap._fullLayout.scene) {
          A.defaultCameras[m] = plainCamera(umap._fullLayout.scene.camera);
        }
        umap.on("plotly_relayout", function (e) {
          if (e && e["scene.camera"] && !A.animating) { publishCameras(); }
        });
        // Live: follow the other camera while it is being dragged, not only when the drag ends.
        umap.on("plotly_relayouting", function (e) {
          if (e && e["scene.camera"]) { copyCamera(other(m), e["scene.camera"]); }
        });
      }
      var flat = plotOf(vocab().graphs.flat[m]);
      if (flat && !flat._attnbrainCondition) {
        flat._attnbrainCondition = m;
        flat.addEventListener("pointerdown", onPointerDown, true);
      }
    });
  }
  // A condition's UMAP can take a camera once plotly has drawn it (dcc.Graph loads plotly.js lazily); a
  // condition without an embedding (an empty figure, no 3-D scene) never needs one.
  function umapReady(m) {
    if (!document.getElementById(umapId(m))) { return true; }
    var gd = plotOf(umapId(m));
    if (!gd || !gd._fullLayout) { return false; }
    return !gd._fullLayout.scene || !!A.defaultCameras[m];
  }

  function bindAll() {
    bind();
    if (A.pendingCameras && vocab() && pair().every(umapReady)) {
      var targets = A.pendingCameras;
      A.pendingCameras = null;
      animateTo(targets);
    }
  }
  document.addEventListener("pointerup", onPointerUp, true);
  var scheduled = false;
  new MutationObserver(function () {
    if (scheduled) { return; }
    scheduled = true;
    window.requestAnimationFrame(function () { scheduled = false; bindAll(); });
  }).observe(document.documentElement, { childList: true, subtree: true });

  // ------------------------------------------------------------------ viewer bridge
  function frame() {
    return vocab() ? document.getElementById(pageId("viewer_frame")) : null;
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
    if (msg.type === "attnbrain:key") {
      onKey({ key: msg.key, ctrlKey: msg.ctrlKey, metaKey: msg.metaKey, altKey: msg.altKey, target: null,
              preventDefault: function () {}, stopPropagation: function () {} });
      return;
    }
    if (msg.type === "attnbrain:ready") {
      A.viewer.ready = true;
      hookFrameKeys();
      if (A.presenting) { toViewer({ type: "attnbrain:setKeys", mode: "parent" }); }
      A.viewer.datasets = Array.isArray(msg.datasets) ? msg.datasets.map(String) : null;
      syncViewer(true);
      set(pageId("viewer_status"), { children: "viewer ready: pick a voxel on the brain to select it" });
    } else if (msg.type === "attnbrain:pick") {
      if (typeof msg.voxel !== "number") {     // a point of the brain outside this run's voxels
        set(pageId("viewer_status"), { children: "viewer: no voxel of this run at that point" });
        return;
      }
      A.counts.pick += 1;
      set(pageId("viewer_pick"), { data: { voxel: msg.voxel, hemi: msg.hemi, vertex: msg.vertex, n: A.counts.pick } });
    } else if (msg.type === "attnbrain:ack") {
      A.viewer.acks += 1;
      var what = { "attnbrain:mark": "marked voxel " + A.viewer.voxel,
                   "attnbrain:setDataset": "showing attention " + A.viewer.dataset,
                   "attnbrain:setView": A.viewer.view + " view" }[msg.request] || msg.request;
      set(pageId("viewer_status"), { children: "viewer: " + what });
    }
  });

  // ------------------------------------------------------------------ scene cameras
  A.defaultCameras = {};
  A.animating = false;
  A.cameraMoves = 0;

  function plainCamera(c) {
    var out = {};
    ["eye", "center", "up"].forEach(function (k) {
      var v = (c && c[k]) || (k === "up" ? { x: 0, y: 0, z: 1 } : { x: 0, y: 0, z: 0 });
      out[k] = { x: +v.x, y: +v.y, z: +v.z };
    });
    return out;
  }

  function currentCamera(m) {
    var gd = plotOf(umapId(m));
    return gd && gd._fullLayout && gd._fullLayout.scene ? plainCamera(gd._fullLayout.scene.camera) : null;
  }

  var publishTimer = null;
  function publishCameras() {
    window.clearTimeout(publishTimer);
    publishTimer = window.setTimeout(function () {
      var state = {};
      pair().forEach(function (m) { state[m] = currentCamera(m); });
      window.dash_clientside.set_props(pageId("camera_state"), { data: state });
    }, 250);
  }

  function mix(a, b, t) {
    var out = {};
    ["eye", "center", "up"].forEach(function (k) {
      out[k] = { x: a[k].x + (b[k].x - a[k].x) * t, y: a[k].y + (b[k].y - a[k].y) * t,
                 z: a[k].z + (b[k].z - a[k].z) * t };
    });
    return out;
  }

  // Both UMAP cameras move to a scene's over ~600 ms (eased); the last frame sets them exactly, so the
  // result does not depend on how many frames software WebGL manages to draw.
  function animateTo(targets) {
    bind();
    if (!vocab() || !pair().every(umapReady)) {       // graphs not drawn yet: bindAll() moves them
      A.pendingCameras = targets;
      return;
    }
    var moves = [];
    pair().forEach(function (m) {
      var gd = plotOf(umapId(m)), from = currentCamera(m);
      var to = targets[m] ? plainCamera(targets[m]) : A.defaultCameras[m];
      if (gd && from && to) { moves.push({ gd: gd, from: from, to: to }); }
    });
    if (!moves.length || !window.Plotly) { return; }
    var reduce = window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches;
    var duration = reduce ? 0 : 600, start = performance.now(), id = ++A.cameraMoves;
    A.animating = true;
    function frame() {
      if (id !== A.cameraMoves) { return; }          // a newer move took over
      var t = duration ? Math.min(1, (performance.now() - start) / duration) : 1;
      var e = t < 0.5 ? 2 * t * t : 1 - Math.pow(-2 * t + 2, 2) / 2;
      // As a GUI edit (like a drag): with the figures' uirevision, a later figure patch from the server keeps
      // this camera instead of resetting it to the one the figure was built with.
      var relayout = window.Plotly._guiRelayout || window.Plotly.relayout;
      var done = moves.map(function (mv) {
        return relayout(mv.gd, { "scene.camera": t >= 1 ? mv.to : mix(mv.from, mv.to, e) });
      });
      if (t < 1) {
        Promise.all(done).then(function () { window.setTimeout(frame, 16); });
      } else {
        Promise.all(done).then(function () {
          window.setTimeout(function () {
            if (id === A.cameraMoves) { A.animating = false; A.cameraArrived = id; publishCameras(); }
          }, 50);
        });
      }
    }
    frame();
  }

  // ------------------------------------------------------------------ presentation mode
  A.presenting = false;
  A.sceneCount = 0;
  A.sceneCurrent = null;
  A.gotoCounter = 0;
  A.keysHandled = 0;
  var BIG = { highlight: 16, set: 8, font: 18 };

  function root() { return vocab() ? document.getElementById(pageId("app")) : null; }

  // Bigger highlight and set markers and larger figure fonts while presenting. A figure patch from the server
  // (a new selection) redraws a graph with its own sizes, so plotly_afterplot puts the large ones back.
  function presentationStyle(gd, on) {
    if (!window.Plotly || !gd || !gd.data) { return; }
    var hl = traceIndex(gd, "highlight"), set = traceIndex(gd, "set");
    if (hl < 0 || set < 0 || !gd.data[hl].marker || !gd.data[set].marker) { return; }
    if (on && !gd._attnbrainSizes) {
      gd._attnbrainSizes = { hl: gd.data[hl].marker.size, set: gd.data[set].marker.size,
                             font: (gd.layout.font && gd.layout.font.size) || null };
    }
    var orig = gd._attnbrainSizes;
    if (!orig) { return; }
    var want = on ? [BIG.highlight, BIG.set] : [orig.hl, orig.set];
    if (gd.data[hl].marker.size !== want[0] || gd.data[set].marker.size !== want[1]) {
      window.Plotly.restyle(gd, { "marker.size": want }, [hl, set]);
    }
    var font = on ? BIG.font : orig.font;
    if (((gd.layout.font && gd.layout.font.size) || null) !== font) {
      window.Plotly.relayout(gd, { "font.size": font });
    }
    if (!on) { gd._attnbrainSizes = null; }
  }

  function restyleForPresentation(on) {
    var graphs = vocab().graphs;
    pair().forEach(function (m) {
      [graphs.umap[m], graphs.flat[m]].forEach(function (graphId) {
        var gd = plotOf(graphId);
        if (gd && gd.on && gd._attnbrainAfterplot !== gd._ev) {
          gd._attnbrainAfterplot = gd._ev;
          gd.on("plotly_afterplot", function () { if (A.presenting) { presentationStyle(gd, true); } });
        }
        presentationStyle(gd, on);
      });
    });
  }

  function setPresenting(on) {
    if (A.presenting === on) { return; }
    A.presenting = on;
    var r = root();
    if (r) { r.classList.toggle("presenting", on); }
    restyleForPresentation(on);
    toViewer({ type: "attnbrain:setKeys", mode: on ? "parent" : "viewer" });
    if (!on && document.fullscreenElement && document.exitFullscreen) {
      A.leavingFullscreen = true;
      document.exitFullscreen().catch(function () {});
    }
    if (on) { returnFocus(); }
    // The graphs size themselves to their containers, which just changed.
    window.setTimeout(function () { window.dispatchEvent(new Event("resize")); }, 50);
  }

  function toggleFullscreen() {
    if (document.fullscreenElement) {
      A.leavingFullscreen = true;
      if (document.exitFullscreen) { document.exitFullscreen().catch(function () {}); }
    } else if (document.documentElement.requestFullscreen) {
      document.documentElement.requestFullscreen().catch(function () {});
    }
  }

  // Esc while full screen is taken by the browser to leave full screen: treat that as leaving presentation.
  document.addEventListener("fullscreenchange", function () {
    if (!document.fullscreenElement && A.presenting && !A.leavingFullscreen) { setPresenting(false); }
    A.leavingFullscreen = false;
  });

  function goto(index) {
    if (!A.sceneCount) { return; }
    var i = Math.max(0, Math.min(A.sceneCount - 1, index));
    A.gotoCounter += 1;
    A.sceneCurrent = i;
    window.dash_clientside.set_props(pageId("scene_goto"), { data: { index: i, n: A.gotoCounter } });
  }

  function typing(target) {
    if (!target || !target.closest) { return false; }
    return !!target.closest("input, textarea, select, [contenteditable=''], [contenteditable='true']");
  }

  function onKey(ev) {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) { return; }
    if (ev.key !== "Escape" && typing(ev.target)) { return; }
    var k = ev.key, handled = true;
    var cur = typeof A.sceneCurrent === "number" ? A.sceneCurrent : -1;
    if (!A.presenting) {
      if (k === "p" || k === "P") { setPresenting(true); } else { handled = false; }
    } else if (k === "Escape") {
      setPresenting(false);
    } else if (k === "f" || k === "F") {
      toggleFullscreen();
    } else if (k === "ArrowRight" || k === "PageDown") {
      goto(cur + 1);
    } else if (k === "ArrowLeft" || k === "PageUp") {
      goto(cur < 0 ? 0 : cur - 1);
    } else if (/^[1-9]$/.test(k)) {
      goto(parseInt(k, 10) - 1);
    } else {
      handled = false;
    }
    if (handled) {
      A.keysHandled += 1;
      ev.preventDefault();
      ev.stopPropagation();
    }
  }
  // Document level, capture phase: before any component (sliders, radios, plotly) sees the key.
  document.addEventListener("keydown", onKey, true);

  // Focus back to the page after the viewer iframe took it (clicks or drags on the brain), so the next key
  // reaches onKey; in presentation mode the viewer also forwards keys (setKeys "parent").
  function returnFocus() {
    var f = frame();
    if (f && document.activeElement === f) {
      A.focusReturns = (A.focusReturns || 0) + 1;
      toViewer({ type: "attnbrain:blur" });
      f.blur();
    }
    if (document.body) {
      if (!document.body.hasAttribute("tabindex")) { document.body.setAttribute("tabindex", "-1"); }
      document.body.focus({ preventScroll: true });
    }
    window.focus();
  }
  // The viewer is same-origin: a capture listener on its window sees keys before pycortex's shortcuts do.
  // Outside presentation mode only `p` is taken (the viewer keeps its own keys); while presenting, ours.
  function hookFrameKeys() {
    var f = frame(), w = f && f.contentWindow;
    if (!w || w._attnbrainKeys) { return; }
    try {
      w.addEventListener("keydown", function (ev) {
        if (!A.presenting && ev.key !== "p" && ev.key !== "P") { return; }
        onKey(ev);
      }, true);
      w._attnbrainKeys = true;
    } catch (e) { /* not same-origin: the viewer's own key forwarding (setKeys) still applies */ }
  }

  window.addEventListener("blur", function () {
    window.setTimeout(function () {
      if (A.presenting && document.activeElement === frame()) { returnFocus(); }
    }, 0);
  });
  document.addEventListener("click", function (ev) {
    if (vocab() && ev.target && ev.target.closest && ev.target.closest("#" + pageId("present"))) {
      setPresenting(true);
    }
  }, true);

  // ------------------------------------------------------------------ clientside callbacks
  window.dash_clientside = window.dash_clientside || {};
  window.dash_clientside.attnbrain = {
    // Inputs: the relayoutData of the UMAPs of the vocabulary's pair (in its order), then the link switch.
    syncCamera: function (firstRelayout, secondRelayout, link) {
      A.cameraLinked = Array.isArray(link) && link.indexOf("linked") >= 0;
      if (!A.cameraLinked || A.animating || !vocab()) { return noUpdate(); }
      var triggered = (window.dash_clientside.callback_context.triggered || []).map(function (t) {
        return t.prop_id;
      });
      var p = pair(), relayout = [firstRelayout, secondRelayout];
      for (var i = 0; i < p.length; i++) {
        if (triggered.indexOf(umapId(p[i]) + ".relayoutData") >= 0 && relayout[i]) {
          copyCamera(other(p[i]), relayout[i]["scene.camera"]);
          return noUpdate();
        }
      }
      var gd = plotOf(umapId(p[0]));
      if (gd && gd._fullLayout && gd._fullLayout.scene) { copyCamera(p[1], gd._fullLayout.scene.camera); }
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

    animateCameras: function (targets) {
      if (targets) { A.lastCameraTarget = targets; animateTo(targets); }
      return noUpdate();
    },

    writeUrl: function (search) {
      if (typeof search !== "string") { return noUpdate(); }
      // Replace, never push: the URL follows the view without adding history entries or reloading.
      window.history.replaceState(window.history.state, "", window.location.pathname + search + window.location.hash);
      A.urlWrites = (A.urlWrites || 0) + 1;
      return search;
    },

    sceneList: function (scenes, pick) {
      A.sceneCount = Array.isArray(scenes) ? scenes.length : 0;
      A.sceneCurrent = typeof pick === "number" ? pick : null;
      return noUpdate();
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
