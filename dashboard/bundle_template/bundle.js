/* attnbrain offline bundle player: plays the scenes of data/bundle.json (written by dashboard/bundle.py).
 *
 * Each scene's filters are applied here exactly as the dashboard applies them (DashboardData.visible in
 * dashboard/data.py and umap_colour_codes in dashboard/umap_view.py): a voxel is shown when it is binned under
 * the scene's rule (or has a defined r, with bin set "all"), its bin code is among the scene's bins,
 * |r| >= threshold, it lies in the scene's ROIs and hemispheres and, coloured by a contrast, its outcome is
 * among the scene's outcomes (coloured by r / noise ceiling, its ceiling is reliable); shown voxels take their
 * bin's colour, their outcome's or their ceiling step's, other voxels are faint or hidden. The flatmaps are the run's images with the dashboard's
 * filter layer for the scene on top. State for tests: window.attnbrainBundle.
 */
(function () {
    "use strict";

    var TYPES = {int8: Int8Array, uint8: Uint8Array, int16: Int16Array, uint16: Uint16Array, int32: Int32Array,
                 float32: Float32Array, float64: Float64Array};
    var CODE = null;   // dashboard/umap_view.py UMAP_CODE, from bundle.json
    var state = {doc: null, arrays: {}, index: -1, codes: {}, ready: false, viewerLoaded: false, viewerReady: false};
    window.attnbrainBundle = state;

    function $(id) { return document.getElementById(id); }

    function fail(text) {
        var el = $("message");
        el.textContent = text;
        el.hidden = false;
    }

    function fmt(v, digits) {
        return v === null || v === undefined ? "n/a" : Number(v).toFixed(digits);
    }

    function binLabel(code) {
        var c = state.doc.colours;
        if (code === -2) return "significant r < 0";
        if (code === -1) return "n.s.";
        return "r " + c.bin_labels[code];
    }

    // ------------------------------------------------------------------------------------------ filters
    /* Uint8Array of colour codes (one per voxel row) for one condition under a scene's filters. */
    function colourCodes(m, filters) {
        var a = state.arrays, n = state.doc.n_voxels;
        var bins = filters.bin_set === "all" ? a["bins_all_" + m] : a["bins_" + filters.rule + "_" + m];
        var r = a["r_" + m];
        var shownBins = {};
        filters.bins.forEach(function (b) { shownBins[b] = true; });
        var outcome = filters.colour === "contrast" ? a["outcome_" + filters.contrast] || null : null;
        var ceiling = filters.colour === "ceiling" ? a["ceiling_" + m] : null;
        var adds = filters.colour === "adds" ? a.adds : null;
        var shownAdds = {};
        (filters.adds || []).forEach(function (c) { shownAdds[c] = true; });
        var shownOutcomes = {};
        filters.outcomes.forEach(function (o) { shownOutcomes[o] = true; });
        var rois = null;
        if (filters.rois.length && a.roi) {
            rois = {};
            filters.rois.forEach(function (name) {
                var i = state.doc.roi_names.indexOf(name);
                if (i >= 0) rois[i] = true;
            });
        }
        var hemis = null;
        if (a.hemi && !(filters.hemis.indexOf("L") >= 0 && filters.hemis.indexOf("R") >= 0)) {
            hemis = {};
            filters.hemis.forEach(function (h) { hemis[h === "L" ? 0 : 1] = true; });
        }
        var other = filters.ns_mode === "hidden" ? CODE.hidden : CODE.faint;
        var codes = new Uint8Array(n);
        for (var v = 0; v < n; v++) {
            var b = bins[v];
            var keep = b !== -1 && shownBins[b] === true;
            if (keep && filters.threshold > 0) keep = Math.abs(r[v]) >= filters.threshold;
            if (keep && rois) keep = rois[a.roi[v]] === true;
            if (keep && hemis) keep = hemis[a.hemi[v]] === true;
            if (keep && outcome) keep = shownOutcomes[outcome[v]] === true;
            if (keep && ceiling) keep = ceiling[v] >= 0;
            if (keep && adds) keep = shownAdds[adds[v]] === true;
            if (!keep) codes[v] = other;
            else if (ceiling) codes[v] = CODE.ceiling0 + ceiling[v];
            else if (adds) codes[v] = CODE.adds0 + adds[v];
            else if (outcome) codes[v] = CODE.outcome0 + outcome[v] + 1;
            else codes[v] = b === -2 ? CODE.negative : b + CODE.bin0;
        }
        return codes;
    }

    // ------------------------------------------------------------------------------------------ UMAP
    function pointOf(m, voxel) {
        var position = state.position[m];
        return position && voxel >= 0 && voxel < position.length ? position[voxel] : -1;
    }

    function coordsOf(m, points) {
        var c = state.arrays["umap_coords_" + m], out = {x: [], y: [], z: []};
        points.forEach(function (i) {
            if (i < 0) return;
            out.x.push(c[3 * i]); out.y.push(c[3 * i + 1]); out.z.push(c[3 * i + 2]);
        });
        return out;
    }

    function drawUmap(m, scene, voxelCodes) {
        var info = state.doc.umap[m], div = $("umap-" + m);
        if (!info.n) {
            div.innerHTML = "";
            var p = document.createElement("p");
            p.className = "reason";
            p.textContent = info.reason;
            div.appendChild(p);
            return;
        }
        var fig = JSON.parse(JSON.stringify(info.figure));
        var voxels = state.arrays["umap_voxels_" + m], c = state.arrays["umap_coords_" + m];
        var n = voxels.length, x = new Float32Array(n), y = new Float32Array(n), z = new Float32Array(n);
        var colour = new Uint8Array(n);
        for (var i = 0; i < n; i++) {
            x[i] = c[3 * i]; y[i] = c[3 * i + 1]; z[i] = c[3 * i + 2];
            colour[i] = voxelCodes[voxels[i]];
        }
        var t0 = fig.data[0];
        t0.x = x; t0.y = y; t0.z = z; t0.marker.color = colour;
        var sel = scene.selected === null ? [] : [pointOf(m, scene.selected)];
        var one = coordsOf(m, sel);
        fig.data[1].x = one.x; fig.data[1].y = one.y; fig.data[1].z = one.z;
        var set = coordsOf(m, scene.selected_set.map(function (v) { return pointOf(m, v); }));
        fig.data[2].x = set.x; fig.data[2].y = set.y; fig.data[2].z = set.z;
        var layout = fig.layout;
        delete layout.height;
        layout.autosize = true;
        layout.uirevision = "scene-" + state.index;      // a new scene applies its camera
        layout.scene.camera = scene.cameras[m] || layout.scene.camera;
        Plotly.react(div, fig.data, layout, {displaylogo: false, responsive: true,
                                            toImageButtonOptions: {format: "png", scale: 2, filename: "umap-" + m}});
    }

    // ------------------------------------------------------------------------------------------ flatmaps
    function drawFlat(m, scene) {
        var fm = state.doc.flatmap, div = $("flat-" + m);
        if (!fm) {
            if (!div.firstChild && state.doc.flatmap_reason) {
                var p = document.createElement("p");
                p.className = "reason";
                p.textContent = state.doc.flatmap_reason;
                div.appendChild(p);
            }
            return;
        }
        if (!div.firstChild) {
            // At most a third of the screen's height, so a whole scene fits on a projector.
            div.style.maxWidth = (33 * fm.width / fm.height).toFixed(2) + "vh";
            var base = document.createElement("img");
            base.src = fm.images[m];
            base.alt = "flatmap, attention " + m;
            var layer = document.createElement("img");
            layer.className = "layer";
            layer.alt = "";
            var mark = document.createElement("div");
            mark.className = "mark";
            div.appendChild(base); div.appendChild(layer); div.appendChild(mark);
        }
        div.querySelector("img.layer").src = fm.layers[state.index][m];
        var mark = div.querySelector(".mark"), cap = scene.selected === null ? null :
            state.doc.voxels[String(scene.selected)];
        if (cap && cap.flat_px) {
            mark.style.left = (100 * (cap.flat_px[0] + 0.5) / fm.width) + "%";
            mark.style.top = (100 * (cap.flat_px[1] + 0.5) / fm.height) + "%";
            mark.hidden = false;
        } else {
            mark.hidden = true;
        }
    }

    // ------------------------------------------------------------------------------------------ captions
    function voxelCaption(scene) {
        var el = $("scene-voxel");
        el.innerHTML = "";
        if (scene.selected === null) return;
        var cap = state.doc.voxels[String(scene.selected)];
        var head = "voxel " + cap.voxel;
        if (cap.roi !== undefined) head += " · " + cap.roi + (cap.hemi ? " (" + cap.hemi + ")" : "") +
            (cap.ijk ? " · ijk " + cap.ijk.join(",") : "");
        el.appendChild(document.createTextNode(head + " · "));
        ["off", "on"].forEach(function (m, k) {
            var span = document.createElement("span");
            span.className = "cond-" + m;
            var code = cap.bins[m][scene.filters.rule];
            span.textContent = "r " + m + " " + fmt(cap.r[m], 3) + " (" + binLabel(code) + ")";
            el.appendChild(span);
            if (k === 0) el.appendChild(document.createTextNode(" · "));
        });
        el.appendChild(document.createTextNode(" · Δr " + fmt(cap.r.on === null || cap.r.off === null ? null :
                                                              cap.r.on - cap.r.off, 3)));
    }

    function filterCaption(scene) {
        var f = scene.filters, doc = state.doc;
        var rule = {p: "p ≤ " + doc.level + " uncorrected", q: "FDR q ≤ " + doc.level,
                    perm: "block-permutation FDR q ≤ " + doc.level}[f.rule];
        var bins = f.bins.map(function (b) { return b === -2 ? "r < 0" : doc.colours.bin_labels[b]; });
        var parts = [f.bin_set === "all" ? "all voxels binned" : rule, "bins " + (bins.length ? bins.join(", ") : "none")];
        if (f.colour === "ceiling") parts.push("coloured by r / noise ceiling");
        if (f.colour === "adds") parts.push("coloured by what attention adds");
        if (f.colour === "contrast" && doc.contrasts[f.contrast]) {
            var words = doc.contrasts[f.contrast].outcomes;
            parts.push("coloured by " + doc.contrasts[f.contrast].label + " (" +
                       f.outcomes.map(function (o) { return words[String(o)]; }).join(", ") + ")");
        }
        if (f.rois.length) parts.push("ROIs " + f.rois.join(", "));
        if (f.hemis.length !== 2) parts.push("hemisphere " + (f.hemis.join(", ") || "none"));
        if (f.threshold > 0) parts.push("|r| ≥ " + f.threshold);
        parts.push("others " + f.ns_mode);
        if (scene.selected_set.length) parts.push(scene.selected_set.length + " voxels in the selected set");
        $("scene-filters").textContent = parts.join(" · ");
    }

    function legend(filters) {
        var c = state.doc.colours, el = $("legend");
        el.textContent = "";
        function item(colour, label, ring) {
            var span = document.createElement("span"), sw = document.createElement("span");
            sw.className = "swatch";
            if (ring) { sw.style.border = "2px solid " + colour; sw.style.borderRadius = "50%"; }
            else sw.style.background = colour;
            span.appendChild(sw);
            span.appendChild(document.createTextNode(label));
            el.appendChild(span);
        }
        var contrast = filters.colour === "contrast" ? state.doc.contrasts[filters.contrast] : null;
        if (filters.colour === "adds") {
            el.appendChild(document.createTextNode("what attention adds (joint model): "));
            [1, 2, 3, 0].forEach(function (i) { item(c.adds[i], c.adds_labels[i]); });
        } else if (filters.colour === "ceiling") {
            el.appendChild(document.createTextNode("r / noise ceiling (reliable ceilings only): "));
            c.ceiling.forEach(function (hex, i) { item(hex, c.ceiling_labels[i]); });
        } else if (contrast) {
            el.appendChild(document.createTextNode(contrast.label + ": "));
            ["1", "-1", "0"].forEach(function (o) { item(c.outcomes[o], contrast.outcomes[o]); });
        } else {
            el.appendChild(document.createTextNode(filters.bin_set === "all" ? "r bins (all voxels): " : "r bins: "));
            c.bins.forEach(function (hex, i) { item(hex, c.bin_labels[i]); });
            item(c.negative, filters.bin_set === "all" ? "r < 0" : "significant r < 0");
        }
        item(c.ns, "n.s. / filtered out");
        item(c.highlight, "selected voxel");
        item(c.set, "selected set", true);
    }

    // ------------------------------------------------------------------------------------------ scenes
    function show(index) {
        var scenes = state.doc.scenes;
        index = Math.max(0, Math.min(scenes.length - 1, index));
        if (index === state.index) return;
        state.index = index;
        var scene = scenes[index];
        $("scene-title").textContent = scene.title || "Scene " + (index + 1);
        $("scene-note").textContent = scene.note;
        $("counter").textContent = (index + 1) + " / " + scenes.length;
        voxelCaption(scene);
        filterCaption(scene);
        legend(scene.filters);
        ["off", "on"].forEach(function (m) {
            var col = $("col-" + m);
            col.hidden = scene.conditions.indexOf(m) < 0;
            var codes = colourCodes(m, scene.filters);
            state.codes[m] = codes;
            if (!col.hidden) {
                drawUmap(m, scene, codes);
                drawFlat(m, scene);
            }
        });
        ["off", "on"].forEach(function (m) {
            var div = $("umap-" + m);
            if (!$("col-" + m).hidden && div.data) Plotly.Plots.resize(div);
        });
        syncViewer();
        if (history.replaceState) history.replaceState(null, "", "#scene=" + (index + 1));
        state.shown = (state.shown || 0) + 1;
    }

    function onKey(key) {
        if (key === "ArrowRight" || key === "PageDown") show(state.index + 1);
        else if (key === "ArrowLeft" || key === "PageUp") show(state.index - 1);
        else if (key === "Home") show(0);
        else if (key === "End") show(state.doc.scenes.length - 1);
        else if (key === "f" || key === "F") toggleFullscreen();
        else if (/^[0-9]$/.test(key)) show(key === "0" ? 9 : Number(key) - 1);
        else return false;
        return true;
    }

    function toggleFullscreen() {
        if (document.fullscreenElement) document.exitFullscreen();
        else if (document.documentElement.requestFullscreen) document.documentElement.requestFullscreen();
    }

    // ------------------------------------------------------------------------------------------ viewer
    function post(msg) {
        var frame = $("viewer");
        if (state.viewerReady && frame.contentWindow) frame.contentWindow.postMessage(msg, window.location.origin);
    }

    function syncViewer() {
        if (!state.viewerReady) return;
        var scene = state.doc.scenes[state.index];
        post({type: "attnbrain:setDataset", name: scene.viewer.condition});
        post({type: "attnbrain:setView", view: scene.viewer.view});
        post({type: "attnbrain:mark", voxel: scene.selected});
    }

    function toggleViewer() {
        var panel = $("viewer-panel"), frame = $("viewer");
        panel.hidden = !panel.hidden;
        if (!panel.hidden && !state.viewerLoaded) {
            state.viewerLoaded = true;
            frame.src = state.doc.viewer;
        }
    }

    // The viewer says "ready" once its surfaces are loaded; from then on it follows the scenes, and keys pressed
    // in it come back as attnbrain:key so the keyboard keeps stepping through the scenes.
    window.addEventListener("message", function (event) {
        var frame = $("viewer"), msg = event.data;
        if (event.origin !== window.location.origin || event.source !== frame.contentWindow || !msg) return;
        if (msg.type === "attnbrain:ready") {
            state.viewerReady = true;
            post({type: "attnbrain:setKeys", mode: "parent"});
            syncViewer();
        } else if (msg.type === "attnbrain:ack") {
            state.viewerState = msg.state;
        } else if (msg.type === "attnbrain:key") {
            onKey(msg.key);
        }
    });

    // ------------------------------------------------------------------------------------------ start
    function start(doc, buffer) {
        state.doc = doc;
        Object.keys(doc.arrays.index).forEach(function (name) {
            var spec = doc.arrays.index[name];
            state.arrays[name] = new TYPES[spec.dtype](buffer, spec.offset, spec.length);
        });
        state.position = {};
        ["off", "on"].forEach(function (m) {
            var voxels = state.arrays["umap_voxels_" + m];
            if (!voxels) return;
            var position = new Int32Array(doc.n_voxels).fill(-1);
            for (var i = 0; i < voxels.length; i++) position[voxels[i]] = i;
            state.position[m] = position;
        });
        $("run").textContent = "run " + doc.run_id;
        $("simulated").hidden = !doc.simulated;
        document.title = "attnbrain scenes · " + doc.run_id;
        CODE = doc.umap_code;
        $("prev").addEventListener("click", function () { show(state.index - 1); });
        $("next").addEventListener("click", function () { show(state.index + 1); });
        $("fullscreen").addEventListener("click", toggleFullscreen);
        if (doc.viewer) {
            $("viewer-toggle").hidden = false;
            $("viewer-toggle").addEventListener("click", toggleViewer);
        }
        document.addEventListener("keydown", function (e) {
            if (e.ctrlKey || e.metaKey || e.altKey) return;
            if (onKey(e.key)) e.preventDefault();
        });
        var m = /scene=(\d+)/.exec(window.location.hash);
        show(m ? Number(m[1]) - 1 : 0);
        state.ready = true;
    }

    if (window.location.protocol === "file:") {
        fail("This bundle must be served over http (the browser does not let a file:// page load its data): run " +
             "python -m http.server --directory <this folder> 8000 and open 127.0.0.1:8000 in the browser");
        return;
    }
    Promise.all([
        fetch("data/bundle.json").then(function (r) { if (!r.ok) throw new Error("data/bundle.json: " + r.status); return r.json(); }),
        fetch("data/arrays.bin").then(function (r) { if (!r.ok) throw new Error("data/arrays.bin: " + r.status); return r.arrayBuffer(); }),
    ]).then(function (loaded) { start(loaded[0], loaded[1]); })
      .catch(function (err) { fail("The bundle could not be loaded: " + err.message); });
}());
