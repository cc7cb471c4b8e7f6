/* attnbrain postMessage bridge for the pycortex static viewer (protocol: core/cortex/viewer.py docstring).
 *
 * Embedded into index.html by cortex.webgl.make_static. It talks only to a same-origin parent window,
 * in geometry rows: attnbrain_lookup.bin maps rows <-> pycortex volume indices and marker vertices.
 */
(function () {
    "use strict";
    var PREFIX = "attnbrain:";
    var ORIGIN = window.location.origin;
    var MIX = {fiducial: 0, inflated: 0.5, flat: 1};

    var bridge = {
        ready: false, meta: null, arrays: null,
        keys: "viewer", marked: null, queue: [], error: null
    };
    window.attnbrainBridge = bridge;   // inspected by the browser tests

    function post(msg) {
        if (window.parent !== window)
            window.parent.postMessage(msg, ORIGIN);
    }

    // ---------------------------------------------------------------------------------- lookup tables
    var lookupLoaded = Promise.all([
        fetch("attnbrain_viewer.json").then(function (r) {
            if (!r.ok) throw new Error("attnbrain_viewer.json: HTTP " + r.status);
            return r.json();
        }),
        fetch("attnbrain_lookup.bin").then(function (r) {
            if (!r.ok) throw new Error("attnbrain_lookup.bin: HTTP " + r.status);
            return r.arrayBuffer();
        })
    ]).then(function (res) {
        var meta = res[0], table = new Int32Array(res[1]), arrays = {}, offset = 0;
        meta.lookup.arrays.forEach(function (entry) {
            arrays[entry[0]] = table.subarray(offset, offset + entry[1]);
            offset += entry[1];
        });
        if (offset !== table.length)
            throw new Error("attnbrain_lookup.bin holds " + table.length + " numbers, its description " + offset);
        bridge.meta = meta;
        bridge.arrays = arrays;
    });

    // The subject's vertex number of a vertex of the viewer's surface file.
    function subjectVertex(hemi, ctmVertex) {
        return bridge.arrays.ctm_to_vertex[(hemi === "right" ? bridge.meta.n_vertices[0] : 0) + ctmVertex];
    }

    // Geometry row of a volume voxel (x, y, z), or null: volIndex is sorted, so binary search.
    function rowOfVoxel(x, y, z) {
        var shape = bridge.meta.volume_shape;   // [nz, ny, nx]
        if (x < 0 || y < 0 || z < 0 || z >= shape[0] || y >= shape[1] || x >= shape[2]) return null;
        var target = (z * shape[1] + y) * shape[2] + x;
        var volIndex = bridge.arrays.vol_index, lo = 0, hi = volIndex.length - 1;
        while (lo <= hi) {
            var mid = (lo + hi) >> 1, v = volIndex[mid];
            if (v === target) return mid;
            if (v < target) lo = mid + 1; else hi = mid - 1;
        }
        return null;
    }

    // ---------------------------------------------------------------------------------- viewer access
    function surface() {
        var v = window.viewer;
        return v && v.surfs && v.surfs[0] ? v.surfs[0].surf : null;
    }

    function viewerReady() {
        var v = window.viewer, surf = surface();
        return !!(v && v.active && v.loaded && v.loaded.state() === "resolved" &&
                  v.active.loaded && v.active.loaded.state() === "resolved" &&
                  surf && surf.picker && surf.picker.lkdt && surf.picker.rkdt && surf.picker.x);
    }

    function viewName(mix) {
        for (var name in MIX)
            if (Math.abs(mix - MIX[name]) < 1e-3) return name;
        return "other";
    }

    function state() {
        var v = window.viewer;
        var mix = v.setMix();
        return {active: v.active.name, datasets: bridge.meta.datasets, mix: mix, view: viewName(mix),
                marked: bridge.marked, keys: bridge.keys};
    }

    // "request" is the request's type (what a page switches on); "params" the whole request.
    function ack(request, ok, extra) {
        var msg = {type: PREFIX + "ack", request: request.type, params: request, ok: ok, state: state()};
        for (var k in extra || {}) msg[k] = extra[k];
        post(msg);
    }

    // After the next two frames, so what the ack reports is on screen.
    function afterDraw(fn) {
        window.viewer.schedule();
        requestAnimationFrame(function () { requestAnimationFrame(fn); });
    }

    // ---------------------------------------------------------------------------------- picks
    function installPickHook() {
        var v = window.viewer, picker = surface().picker, pending = null;
        // The picker reports every pick it makes, including the re-picks pycortex runs itself after a
        // dataset switch; only picks made by a click (the controls' "pick" event, whose viewer handler
        // was registered first and has already run) are posted.
        picker.callback = function (vec, hemi, ptidx) { pending = {vec: vec, hemi: hemi, ptidx: ptidx}; };
        picker.callback_nonpick = function () { pending = null; };
        v.controls.addEventListener("pick", function () {
            if (pending === null) return;
            var p = pending;
            pending = null;
            // revIndex undoes the browser loader's reordering, subjectVertex the surface file's.
            var vertex = subjectVertex(p.hemi, picker.revIndex[p.hemi][p.ptidx]);
            var row = rowOfVoxel(p.vec.x, p.vec.y, p.vec.z);
            bridge.marked = {voxel: row, hemi: p.hemi, vertex: vertex};
            post({type: PREFIX + "pick", voxel: row, hemi: p.hemi, vertex: vertex,
                  ijk: [p.vec.x, p.vec.y, p.vec.z]});
        });
    }

    // ---------------------------------------------------------------------------------- requests
    var handlers = {
        setDataset: function (msg) {
            var v = window.viewer;
            if (!Object.prototype.hasOwnProperty.call(v.dataviews, msg.name))
                return ack(msg, false, {error: "unknown dataset " + JSON.stringify(msg.name) +
                                               "; available: " + bridge.meta.datasets.join(", ")});
            v._lastPickEvt = undefined;   // else pycortex re-picks the old click point and moves the marker
            v.setData(msg.name);
            v.active.loaded.done(function () { afterDraw(function () { ack(msg, true); }); });
        },
        setView: function (msg) {
            var v = window.viewer;
            if (!Object.prototype.hasOwnProperty.call(MIX, msg.view))
                return ack(msg, false, {error: "unknown view " + JSON.stringify(msg.view) +
                                               "; expected flat, inflated or fiducial"});
            var mix = MIX[msg.view];
            delete v._animation;   // a request overrides a running fold/inflate animation
            if (msg.animate) {
                var secs = parseFloat(viewopts.anim_speed);
                v.animate([{state: "mix", idx: secs, value: mix}]);
                setTimeout(function () {
                    if (mix === 1 && v.fitFlatView) v.fitFlatView();
                    afterDraw(function () { ack(msg, true); });
                }, secs * 1000 + 50);
                return;
            }
            v.setMix(mix);
            if (mix === 1 && v.fitFlatView) v.fitFlatView();
            afterDraw(function () { ack(msg, true); });
        },
        mark: function (msg) {
            var v = window.viewer, surf = surface(), picker = surf.picker;
            if (msg.voxel === null || msg.voxel === undefined) {
                picker.process_nonpick();
                bridge.marked = null;
                return afterDraw(function () { ack(msg, true); });
            }
            var row = msg.voxel;
            if (typeof row !== "number" || Math.floor(row) !== row || row < 0 || row >= bridge.meta.n_voxels)
                return ack(msg, false, {error: "voxel must be an integer row in 0.." +
                                               (bridge.meta.n_voxels - 1) + ", got " + JSON.stringify(row)});
            var hemi = bridge.arrays.mark_hemi[row] === 1 ? "right" : "left";
            var vertex = bridge.arrays.mark_vertex[row];
            var ptidx = surf.hemis[hemi].indexMap[bridge.arrays.mark_ctm_vertex[row]];
            picker.addMarker(hemi, ptidx, false);
            v._lastPickEvt = undefined;
            bridge.marked = {voxel: row, hemi: hemi, vertex: vertex};
            afterDraw(function () { ack(msg, true, {hemi: hemi, vertex: vertex}); });
        },
        blur: function (msg) {
            if (document.activeElement && document.activeElement.blur) document.activeElement.blur();
            try { window.parent.focus(); } catch (e) { /* focus is best effort */ }
            ack(msg, true);
        },
        setKeys: function (msg) {
            if (msg.mode !== "viewer" && msg.mode !== "parent")
                return ack(msg, false, {error: "mode must be 'viewer' or 'parent', got " + JSON.stringify(msg.mode)});
            bridge.keys = msg.mode;
            ack(msg, true);
        },
        getState: function (msg) { ack(msg, true); }
    };

    function handle(msg) {
        var name = msg.type.slice(PREFIX.length);
        if (!Object.prototype.hasOwnProperty.call(handlers, name))
            return ack(msg, false, {error: "unknown message type " + JSON.stringify(msg.type)});
        try {
            handlers[name](msg);
        } catch (e) {
            ack(msg, false, {error: String(e)});
        }
    }

    window.addEventListener("message", function (event) {
        if (event.source !== window.parent || event.origin !== ORIGIN) return;
        var msg = event.data;
        if (!msg || typeof msg.type !== "string" || msg.type.indexOf(PREFIX) !== 0) return;
        if (bridge.ready) handle(msg); else bridge.queue.push(msg);
    });

    // ---------------------------------------------------------------------------------- keys
    // Registered while the page is parsed, before pycortex binds its shortcuts on document ready, so in
    // "parent" mode this capture listener runs first and stops them.
    ["keydown", "keypress", "keyup"].forEach(function (type) {
        window.addEventListener(type, function (event) {
            if (bridge.keys !== "parent") return;
            event.stopImmediatePropagation();
            event.preventDefault();
            if (type === "keydown")
                post({type: PREFIX + "key", key: event.key, code: event.code, repeat: event.repeat,
                      shiftKey: event.shiftKey, ctrlKey: event.ctrlKey, altKey: event.altKey,
                      metaKey: event.metaKey});
        }, true);
    });

    // ---------------------------------------------------------------------------------- start-up
    lookupLoaded.then(function () {
        var timer = setInterval(function () {
            if (!viewerReady()) return;
            clearInterval(timer);
            installPickHook();
            bridge.ready = true;
            var st = state();
            post({type: PREFIX + "ready", datasets: st.datasets, active: st.active, view: st.view,
                  n_voxels: bridge.meta.n_voxels});
            var queued = bridge.queue;
            bridge.queue = [];
            queued.forEach(handle);
        }, 100);
    }).catch(function (e) {
        bridge.error = String(e);
        post({type: PREFIX + "error", error: bridge.error});
    });
})();
