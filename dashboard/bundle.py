"""The offline bundle: a self-contained folder that plays a run's scenes in a browser, without this tool.

``python -m dashboard export-bundle --results DIR [--run RUN] --scenes FILE --out DIR [--force]`` writes::

    OUT/index.html, bundle.js, bundle.css   the player (from ``bundle_template/``)
    OUT/plotly.min.js                       plotly.js of the installed plotly package (no CDN)
    OUT/data/bundle.json                    run info, scenes, colours, the run's bin scheme
                                            (``BinScheme.to_json``), captions of the scenes' voxels, and
                                            the index of data/arrays.bin
    OUT/data/arrays.bin                     little-endian arrays: per condition the UMAP's voxel rows and
                                            quantised coordinates, r, the bin codes under every
                                            significance rule and of all voxels; each contrast's outcome
                                            codes; the steps of r / noise ceiling (-1 where
                                            unreliable); what attention adds (joint
                                            model); the voxels' ROI and hemisphere
    OUT/flatmaps/                           the run's flatmap PNGs and, per scene, the layer that shows its
                                            filters (the dashboard's filter layer)
    OUT/viewer/                             the run's pycortex static viewer, copied

The page filters and colours the voxels itself, as the dashboard does (:meth:`DashboardData.visible`,
:func:`umap_colour_codes`); it needs http, not ``file://`` (the viewer and the data are fetched), so it is
served with ``python -m http.server --directory OUT 8000``. The bundle is built in a temporary folder beside
OUT and renamed into place: an interrupted export leaves no half bundle. Nothing is written into the
results folder.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from core._io import json_default
from core._validation import InputError
from core.vocabulary import ADDS_CODES, ADDS_RGBA, CEILING_LABELS, CEILING_RGBA, CONTRAST_LABELS, OUTCOME_RGBA, PAIR, BinScheme, rgba_hex

__all__ = ["TEMPLATE_DIR", "BUNDLE_VERSION", "build_bundle", "write_bundle", "bundle_size", "main"]

TEMPLATE_DIR = Path(__file__).with_name("bundle_template")
BUNDLE_VERSION = 1
_TEMPLATE_FILES = ("index.html", "bundle.js", "bundle.css")


def _plotly_js() -> Path:
    import plotly
    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise InputError("the installed plotly package has no package_data/plotly.min.js; reinstall plotly",
                         source="export-bundle")
    return path


class _Arrays:
    """Arrays packed into one little-endian file, each 8-byte aligned, with a JSON index."""

    def __init__(self):
        self.index: dict[str, dict] = {}
        self.chunks: list[bytes] = []
        self.size = 0

    def add(self, name: str, arr: np.ndarray) -> None:
        arr = np.ascontiguousarray(arr)
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        pad = -self.size % 8
        if pad:
            self.chunks.append(b"\0" * pad)
            self.size += pad
        self.index[name] = {"offset": self.size, "length": int(arr.size), "dtype": arr.dtype.name,
                            "shape": list(arr.shape)}
        payload = arr.tobytes()
        self.chunks.append(payload)
        self.size += len(payload)


def _scene_voxels(scenes: list[dict]) -> list[int]:
    return sorted({s["selected"] for s in scenes if s["selected"] is not None})


def _flat_pixel(data, voxel: int) -> list[float] | None:
    """The voxel's (column, row) on the flatmap images: the centre of its pixels or, for a voxel that owns no
    pixel (another voxel wins every pixel it touches), its flat position mapped as the images were made."""
    col, row = data.flatmap.centre[voxel]
    if np.isfinite(col):
        return [float(col), float(row)]
    from core.cortex.flatmap import flat_to_pixel
    try:
        meta = json.loads((data.flatmap.folder / "flatmap_meta.json").read_text())
        flat_xy = data.results.array("dataset", "flat_xy")[voxel]
        colrow = flat_to_pixel(flat_xy, extents=meta["extents"], height=data.flatmap.height,
                               width=data.flatmap.width)[0]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return [float(colrow[0]), float(colrow[1])] if np.isfinite(colrow).all() else None


def _caption(data, voxel: int, rules: list[str]) -> dict:
    cap = {"voxel": voxel, "r": {}, "p": {}, "q": {}, "bins": {}}
    for m in data.conditions:
        cap["r"][m] = float(data.r[m][voxel])
        cap["p"][m] = float(data.p[m][voxel])
        cap["q"][m] = float(data.q[m][voxel])
        cap["bins"][m] = {rule: int(data.bins(m, rule)[voxel]) for rule in rules if m in ("off", "on")}
    if data.has_geometry:
        cap["roi"] = data.roi_names[int(data.roi[voxel])] if data.roi_names else ""
        cap["hemi"] = {1: "R", 0: "L"}.get(int(data.hemi[voxel]), "")
    if data.has_volume:
        cap["ijk"] = [int(v) for v in data.ijk[voxel]]
    if data.flatmap is not None:
        cap["flat_px"] = _flat_pixel(data, voxel)
    # JSON has no NaN: a voxel without a valid r shows "n/a".
    for key in ("r", "p", "q"):
        cap[key] = {m: (v if np.isfinite(v) else None) for m, v in cap[key].items()}
    return cap


def _filter_state(scene: dict):
    from .data import FilterState
    f = scene["filters"]
    return FilterState.from_controls(f["rule"], f["bins"], f["rois"], f["hemis"], f["threshold"], f["ns_mode"],
                                     f["colour"], f["contrast"], f["outcomes"], f["bin_set"], f["adds"])


def build_bundle(results, scenes: list[dict], folder: str | Path) -> dict:
    """Write the bundle's files into ``folder`` (which must exist and be empty).

    Parameters
    ----------
    results : core.outputs.Results
        The opened run (only read).
    scenes : list of dict
        Validated scenes (:func:`dashboard.scenefile.load_scenes`), at least one.
    folder : path
        Where to write.

    Returns
    -------
    dict
        The ``data/bundle.json`` document.
    """
    from .data import DashboardData, FilterState
    from .filters import outcome_labels
    from .flatmaps import state_layer
    from .plotting import HIGHLIGHT_COLOUR, SET_COLOUR, provenance
    from .server import png_bytes
    from .umap_view import UMAP_CODE, UMAP_COLOURS, make_umap_figure, shared_camera, umap_marker_size

    if not scenes:
        raise InputError("no scenes to play; save at least one scene in the dashboard", source="export-bundle",
                         field="scenes")
    folder = Path(folder)
    data = DashboardData(results)
    # The run's bins label and colour the page (its legend, captions and filter names).
    scheme = BinScheme.from_config(results.config).to_json()
    pair = PAIR
    arrays = _Arrays()
    umap = {}
    camera = shared_camera(data) if data.umap else None
    for m in pair:
        if m in data.umap:
            view = data.umap[m]
            arrays.add(f"umap_voxels_{m}", view.voxels.astype(np.int32))
            arrays.add(f"umap_coords_{m}", view.coords.astype(np.uint16))
            fig = make_umap_figure(np.zeros((0, 3), np.uint16), np.zeros(0, np.uint8), condition=m,
                                   run_id=data.run_id, simulated=data.simulated)
            spec = fig.to_plotly_json()
            spec["data"][0]["marker"]["size"] = umap_marker_size(view.voxels.size)
            # The scene (ranges, aspect, opening camera) fitted to this cloud as the dashboard fits it.
            fitted = make_umap_figure(view.coords, np.zeros(view.voxels.size, np.uint8), condition=m,
                                      run_id=data.run_id, simulated=data.simulated, camera=camera)
            spec["layout"]["scene"] = fitted.layout.scene.to_plotly_json()
            umap[m] = {"n": int(view.voxels.size), "figure": json.loads(json.dumps(spec, default=json_default))}
        else:
            umap[m] = {"n": 0, "reason": data.umap_reason[m]}
        arrays.add(f"r_{m}", data.r[m].astype(np.float64))       # float64: thresholds compare as in the dashboard
        for rule in data.rules:
            arrays.add(f"bins_{rule}_{m}", data.bins(m, rule).astype(np.int8))
        arrays.add(f"bins_all_{m}", data.bins(m, data.default_rule, "all").astype(np.int8))
        arrays.add(f"ceiling_{m}", data.ceiling_bins(m))
    arrays.add("adds", data.adds_codes())
    for c in data.contrasts:
        arrays.add(f"outcome_{c}", data.outcome(FilterState(colour="contrast", contrast=c)).astype(np.int8))
    if data.has_geometry:
        arrays.add("roi", data.roi.astype(np.int16))
    if data.has_hemispheres:                # a mapper file may not know them: then no hemisphere filter
        arrays.add("hemi", data.hemi.astype(np.int8))
    (folder / "data").mkdir()
    with open(folder / "data" / "arrays.bin", "wb") as fh:
        for chunk in arrays.chunks:
            fh.write(chunk)

    flatmap = None
    if data.flatmap is not None and all(m in data.flatmap.images for m in pair):
        fm = data.flatmap
        (folder / "flatmaps").mkdir()
        images = {}
        for m in pair:
            images[m] = f"flatmaps/{m}.png"
            shutil.copyfile(fm.folder / fm.images[m], folder / images[m])
        layers, made = [], {}
        for i, scene in enumerate(scenes):
            state = _filter_state(scene)
            layers.append({})
            for m in pair:
                if (m, state) not in made:
                    name = f"flatmaps/layer_{len(made)}_{m}.png"
                    layer = state_layer(data, m, state)
                    (folder / name).write_bytes(png_bytes(layer, compress_level=6))
                    made[(m, state)] = name
                layers[i][m] = made[(m, state)]
        flatmap = {"width": fm.width, "height": fm.height, "images": images, "layers": layers}

    viewer = None
    if data.viewer_dir is not None:
        shutil.copytree(data.viewer_dir, folder / "viewer", symlinks=False)
        viewer = "viewer/index.html"

    doc = {
        "version": BUNDLE_VERSION, "run_id": data.run_id, "simulated": data.simulated,
        "n_voxels": data.n_voxels, "conditions": list(pair), "rules": data.rules, "level": data.level,
        "roi_names": data.roi_names if data.has_geometry else [],
        "provenance": {m: provenance(data.run_id, data.simulated, m) for m in pair},
        "colours": {"umap": UMAP_COLOURS, "bins": scheme["colours"], "bin_labels": scheme["labels"],
                    "negative": scheme["negative"]["colour"], "ns": scheme["ns"]["colour"],
                    "outcomes": {str(o): rgba_hex(c) for o, c in OUTCOME_RGBA.items()},
                    "ceiling": [rgba_hex(c) for c in CEILING_RGBA], "ceiling_labels": list(CEILING_LABELS),
                    "adds": [rgba_hex(c) for c in ADDS_RGBA], "adds_labels": [ADDS_CODES[a] for a in range(4)],
                    "highlight": HIGHLIGHT_COLOUR, "set": SET_COLOUR},
        "umap_code": UMAP_CODE,
        "contrasts": {c: {"label": CONTRAST_LABELS[c], "outcomes": {str(o): w for o, w in outcome_labels(c).items()}}
                      for c in data.contrasts},
        "bin_scheme": scheme,
        "arrays": {"file": "data/arrays.bin", "index": arrays.index},
        "umap": umap, "flatmap": flatmap, "flatmap_reason": data.flatmap_reason, "viewer": viewer,
        "scenes": scenes, "voxels": {str(v): _caption(data, v, data.rules) for v in _scene_voxels(scenes)},
    }
    (folder / "data" / "bundle.json").write_text(json.dumps(doc, separators=(",", ":"), allow_nan=False))
    for name in _TEMPLATE_FILES:
        shutil.copyfile(TEMPLATE_DIR / name, folder / name)
    shutil.copyfile(_plotly_js(), folder / "plotly.min.js")
    return doc


def bundle_size(folder: str | Path) -> int:
    """Total bytes of the files in a bundle folder."""
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def _check_out(out: Path, results_dir: Path, force: bool) -> None:
    out_r, res_r = out.resolve(), results_dir.resolve()
    if out_r == res_r or out_r.is_relative_to(res_r) or res_r.is_relative_to(out_r):
        raise InputError("the bundle folder may not be the results folder, inside it or hold it (nothing is "
                         "written into the results); choose another --out", source=str(out), field="--out")
    if out.exists() and not out.is_dir():
        raise InputError("expected a folder for the bundle, found a file; choose another --out", source=str(out),
                         field="--out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise InputError("output folder is not empty; choose an empty or new folder, or add --force to replace "
                         "it", source=str(out), field="--out")


def write_bundle(results, scenes: list[dict], out: str | Path, *, force: bool = False) -> Path:
    """Build the bundle beside ``out`` and rename it into place (replacing ``out`` only with ``force`` unless
    it is empty). Returns ``out``."""
    out = Path(out)
    _check_out(out, Path(results.out), force)
    out.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    old = None
    try:
        build_bundle(results, scenes, build)
        os.chmod(build, 0o755)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / "bundle")
        os.replace(build, out)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        if old is not None and (old / "bundle").exists() and not out.exists():
            os.replace(old / "bundle", out)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return out


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line and exit code 2, like every other input problem
        print(f"error: python -m dashboard export-bundle: {message}", file=sys.stderr)
        raise SystemExit(2)


def parse_args(argv=None) -> argparse.Namespace:
    p = _Parser(prog="python -m dashboard export-bundle",
                description="Write a self-contained folder that plays a run's scenes in a browser, offline.")
    p.add_argument("--results", required=True, type=Path, help="results folder written by precompute.py --out")
    p.add_argument("--run", default=None, help="run id inside the folder (default: the newest finished run)")
    p.add_argument("--scenes", required=True, type=Path, help="scenes JSON file (the dashboard's export, or "
                   "RESULTS/<run>/scenes/scenes.json)")
    p.add_argument("--out", required=True, type=Path, help="folder to write (new or empty; see --force)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    return p.parse_args(argv)


def _load_scenes(path: Path, results) -> tuple[list[dict], str | None]:
    from dashboard.scenefile import load_scenes, scene_context
    if path.is_dir():
        raise InputError("expected a scenes JSON file, found a folder; pass RESULTS/<run>/scenes/scenes.json or "
                         "a file exported from the dashboard", source=str(path), field="--scenes")
    if not path.exists():
        raise InputError("scenes file not found; export the scenes from the dashboard first", source=str(path),
                         field="--scenes")
    if path.suffix != ".json":
        raise InputError(f"expected a .json scenes file, found {path.suffix or 'no suffix'!r}", source=str(path),
                         field="--scenes")
    scenes, warning = load_scenes(path, **scene_context(results))
    if not scenes:
        raise InputError("the scenes file holds no scenes; save at least one scene in the dashboard",
                         source=str(path), field="scenes")
    return scenes, warning


def main(argv=None) -> int:
    """``python -m dashboard export-bundle ...``: 0 when written, 2 for a bad input (one ``error:`` line),
    3 when the bundle could not be written (disk full, permissions)."""
    from core.outputs.reader import open_results

    args = parse_args(argv)
    try:
        results = open_results(args.results, args.run)
        scenes, warning = _load_scenes(args.scenes, results)
        _check_out(args.out, Path(results.out), args.force)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
        out = write_bundle(results, scenes, args.out, force=args.force)
    except InputError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {args.out}: the bundle could not be written ({exc.strerror or exc}); nothing was "
              "replaced", file=sys.stderr)
        return 3
    size = bundle_size(out)
    print(f"bundle of run {results.run_id}: {len(scenes)} scene(s), {size / 1e6:.1f} MB in {out}")
    print(f"serve it with: python -m http.server --directory {out} 8000   (then open http://127.0.0.1:8000/)")
    return 0
