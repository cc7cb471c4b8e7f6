"""Downloads from the dashboard: the voxel table and the selected voxel's series as CSV, NIfTI maps (per
condition and per contrast), fsaverage GIfTI maps (runs with a mapper file), flatmap PNGs (Flask routes that build each file on the fly from :mod:`core.outputs.export`, never writing into the results
folder), and the PNG/SVG switch of the 2-D figures' camera button (:func:`dashboard.plotting.figure_config`).

The panel's component ids live here, beside the only code that uses them.
"""
from __future__ import annotations

import re
from functools import lru_cache

from dash import Input, Output, Patch, dcc, html
from flask import Response, abort

from core.outputs import export
from core.vocabulary import CONDITION_LABELS, CONTRAST_LABELS

from . import flatmaps, ids
from .data import DashboardData
from .plotting import FIGURE_FORMATS, figure_config, figure_outputs

__all__ = ["DOWNLOADS", "FIGURE_FORMAT", "SERIES_LINK", "two_d_graphs", "nifti_files", "export_urls", "series_url",
           "series_link", "figure_configs", "format_patch", "downloads_panel", "register", "register_routes"]

DOWNLOADS = "downloads"
#: RadioItems choosing what the camera button of every 2-D figure saves: "png" or "svg".
FIGURE_FORMAT = "figure-format"
#: The link to the selected voxel's series CSV (its href follows the selection).
SERIES_LINK = "export-series"

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def two_d_graphs(data: DashboardData) -> list[str]:
    """Ids of the layout's 2-D figures (the ones the format switch acts on)."""
    return [ids.R_SCATTER, ids.BIN_COUNTS, ids.ROI_MEANS, ids.ROI_CONTRAST, ids.ROI_PARTITION, ids.JACCARD,
            ids.JACCARD_MAP, ids.ROI_RDM, ids.AGREEMENT] + flatmaps.graphs(data)


def _stem(data: DashboardData) -> str:
    return "attnbrain_" + (_SAFE.sub("_", data.run_id) or "run")


def nifti_files(data: DashboardData) -> dict[str, tuple[str, str, str]]:
    """Every NIfTI download of the run by file name: ``{filename: (kind, name, field)}``.

    ``kind`` is ``"nifti"`` (``name`` a condition, fields :data:`core.outputs.export.NIFTI_FIELDS`; file
    ``<stem>_<field>_<condition>.nii.gz``) or ``"nifti_contrast"`` (``name`` one of the run's contrasts, fields
    :data:`core.outputs.export.CONTRAST_NIFTI_FIELDS`; file ``<stem>_<field>_<contrast>.nii.gz``) or
    ``"nifti_joint"`` (``name`` ``"joint"``, fields :func:`core.outputs.export.joint_nifti_fields`). The route
    looks names up here rather than parsing them, since contrasts (``on_off``) and fields (``delta_lo``) hold
    underscores; no two downloads share a name.
    """
    stem = _stem(data)
    entries = [("nifti", m, f) for m in data.conditions for f in export.NIFTI_FIELDS]
    entries += [("nifti_contrast", c, f) for c in data.results.contrast_names() for f in export.CONTRAST_NIFTI_FIELDS]
    entries += [("nifti_joint", "joint", f) for f in export.joint_nifti_fields(data.results)]
    files = {f"{stem}_{f}_{name}.nii.gz": (kind, name, f) for kind, name, f in entries}
    if len(files) != len(entries):          # cannot happen with the vocabulary's names; guard the lookup
        raise RuntimeError("two NIfTI downloads share a file name")
    return files


def export_urls(data: DashboardData) -> dict[str, str]:
    """URL of every fixed download: ``table``, ``nifti:<condition>:<field>``, ``nifti_contrast:<contrast>:<field>``
    (each contrast of the run), ``nifti_joint:joint:<field>`` (the joint stage's maps), ``flatmap:<condition>``,
    and with a mapper file's fsaverage mapper ``gifti:<condition>:<field>:<lh|rh>``."""
    base = f"{data.url_prefix}/export"
    urls = {"table": f"{base}/{_stem(data)}_voxels.csv"}
    for filename, (kind, name, f) in nifti_files(data).items():
        urls[f"{kind}:{name}:{f}"] = f"{base}/nifti/{filename}"
    with_fsaverage = bool(data.results.config.get("data", {}).get("mapper")) and \
        export.fsaverage_unavailable_reason(data.results) is None
    for m in data.conditions:
        urls[f"flatmap:{m}"] = f"{base}/flatmap/{_stem(data)}_flatmap_{m}.png"
        for f in export.FSAVERAGE_FIELDS if with_fsaverage else ():
            for hemi in ("lh", "rh"):
                urls[f"gifti:{m}:{f}:{hemi}"] = f"{base}/gifti/{_stem(data)}_{f}_{m}.{hemi}.func.gii"
    return urls


def series_url(data: DashboardData, voxel: int) -> str:
    return f"{data.url_prefix}/export/series/{_stem(data)}_voxel{int(voxel)}_series.csv"


def downloads_panel(data: DashboardData) -> html.Details:
    """The collapsible "Downloads" section: links that download files, and the figure format switch."""
    urls = export_urls(data)

    def link(text, href, **kw):
        return html.A(text, href=href, download="", className="download", **kw)

    rows = [html.P([link("voxel table (CSV)", urls["table"]), " · ",
                    html.Span("select a voxel to download its series", id=SERIES_LINK)])]
    reason = export.nifti_unavailable_reason(data.results)
    if reason:
        rows.append(html.P(f"NIfTI maps: not available. {reason}.", className="notice"))
    else:
        for m in data.conditions:
            rows.append(html.P([f"NIfTI, {CONDITION_LABELS.get(m, m)}: "]
                               + [x for f in export.NIFTI_FIELDS
                                  for x in (link(f, urls[f"nifti:{m}:{f}"]), " ")]))
        for c in data.results.contrast_names():
            rows.append(html.P([f"NIfTI, contrast {CONTRAST_LABELS.get(c, c)}: "]
                               + [x for f in export.CONTRAST_NIFTI_FIELDS
                                  for x in (link(f, urls[f"nifti_contrast:{c}:{f}"]), " ")]))
        joint_fields = export.joint_nifti_fields(data.results)
        if joint_fields:
            rows.append(html.P(["NIfTI, what attention adds (joint model): "]
                               + [x for f in joint_fields for x in (link(f, urls[f"nifti_joint:joint:{f}"]), " ")]))
    if any(k.startswith("gifti:") for k in urls):
        for m in data.conditions:
            rows.append(html.P([f"fsaverage GIfTI, {CONDITION_LABELS.get(m, m)}: "]
                               + [x for f in export.FSAVERAGE_FIELDS for hemi in ("lh", "rh")
                                  for x in (link(f"{f} {hemi}", urls[f"gifti:{m}:{f}:{hemi}"]), " ")]))
    if data.flatmap is not None:
        rows.append(html.P(["flatmap PNG: "] + [x for m in data.conditions if m in data.flatmap.images
                                                 for x in (link(CONDITION_LABELS.get(m, m), urls[f"flatmap:{m}"]),
                                                           " ")]))
    rows.append(html.Div([html.Label("figure camera button saves"),
                          dcc.RadioItems(id=FIGURE_FORMAT, options=[{"label": "PNG", "value": "png"},
                                                                    {"label": "SVG", "value": "svg"}],
                                         value="png", inline=True, className="radio"),
                          html.Span("(3-D UMAPs always PNG)", className="hint")], className="control"))
    return html.Details([html.Summary("Downloads"), *rows], id=DOWNLOADS, className="downloads")


def series_link(data: DashboardData, voxel) -> html.A | str:
    """What the series slot of the panel shows for the selected ``voxel`` (None: nothing selected)."""
    if isinstance(voxel, bool) or not isinstance(voxel, int) or not 0 <= voxel < data.n_voxels:
        return "select a voxel to download its series"
    return html.A(f"voxel {voxel} series (CSV)", href=series_url(data, voxel), download="", className="download")


def figure_configs(data: DashboardData, fmt) -> dict[str, dict]:
    """Configs of :func:`two_d_graphs` by graph id, for the format switch's value (anything unknown: PNG)."""
    fmt = fmt if fmt in FIGURE_FORMATS else "png"
    return {g: figure_config(g, fmt) for g in two_d_graphs(data)}


def format_patch(fmt) -> Patch:
    """A small figure change sent with a new config: ``dcc.Graph`` redraws (and so takes the config) only when
    its figure changes, and this touches nothing drawn (``layout.meta``)."""
    patch = Patch()
    patch["layout"]["meta"] = {"image_format": fmt if fmt in FIGURE_FORMATS else "png"}
    return patch


def register(app, data: DashboardData) -> None:
    """The series link follows the selected voxel; the format switch rewrites the 2-D figures' configs."""
    graphs = two_d_graphs(data)

    @app.callback(output=dict(link=Output(SERIES_LINK, "children")), inputs=dict(voxel=Input(ids.SELECTED, "data")))
    def on_series_link(voxel):
        return dict(link=series_link(data, voxel))

    @app.callback(output=dict(configs={g: Output(g, "config") for g in graphs}, figures=figure_outputs(graphs)),
                  inputs=dict(fmt=Input(FIGURE_FORMAT, "value")), prevent_initial_call=True)
    def on_format(fmt):
        return dict(configs=figure_configs(data, fmt), figures={g: format_patch(fmt) for g in graphs})


def _download(payload: bytes | str, mimetype: str, filename: str) -> Response:
    resp = Response(payload, mimetype=mimetype)
    resp.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Cache-Control"] = "private, max-age=3600"
    return resp


def register_routes(server, data: DashboardData) -> None:
    """Add the download routes under ``data.route_prefix + "/export"`` (the URLs of :func:`export_urls`).

    Files are made in memory per request (the NIfTI maps and the table cached per process); the run's
    folder is only read. Unknown names answer 404, a run without cortex mapping answers 404 with the reason.
    NIfTI file names are looked up in :func:`nifti_files` (per-condition and per-contrast maps share the route).
    """
    from .server import safe_path

    prefix = f"{data.route_prefix}/export"
    name = data.route_prefix.strip("/").replace("/", "_").replace(".", "_")
    stem = _stem(data)
    nifti_names = nifti_files(data)
    flat_re = re.compile(rf"^{re.escape(stem)}_flatmap_([A-Za-z]+)\.png$")
    series_re = re.compile(rf"^{re.escape(stem)}_voxel(\d+)_series\.csv$")

    @lru_cache(maxsize=1)
    def table_bytes() -> bytes:
        return export.table_csv(data.results).encode()

    @lru_cache(maxsize=16)
    def nifti(kind: str, name: str, field: str) -> bytes:
        if kind == "nifti_joint":
            return export.nifti_bytes(export.nifti_joint_map(data.results, field))
        make = export.nifti_contrast_map if kind == "nifti_contrast" else export.nifti_map
        return export.nifti_bytes(make(data.results, name, field))

    def table(filename: str):
        if filename != f"{stem}_voxels.csv":
            abort(404)
        return _download(table_bytes(), "text/csv", filename)

    def nifti_map(filename: str):
        entry = nifti_names.get(filename)
        if entry is None:
            abort(404)
        reason = export.nifti_unavailable_reason(data.results)
        if reason:
            abort(Response(reason, status=404, mimetype="text/plain"))
        return _download(nifti(*entry), "application/gzip", filename)

    def flatmap(filename: str):
        match = flat_re.match(filename)
        fm = data.flatmap
        if not match or fm is None or match.group(1) not in fm.images:
            abort(404)
        path = safe_path(fm.folder, fm.images[match.group(1)])
        if path is None:
            abort(404)
        return _download(path.read_bytes(), "image/png", filename)

    gifti_re = re.compile(rf"^{re.escape(stem)}_([a-z]+)_([A-Za-z]+)\.(lh|rh)\.func\.gii$")

    @lru_cache(maxsize=8)
    def gifti_maps(condition: str, field: str) -> dict:
        return export.fsaverage_gifti(data.results, condition, field)

    def gifti(filename: str):
        match = gifti_re.match(filename)
        if not match or match.group(2) not in data.conditions or match.group(1) not in export.FSAVERAGE_FIELDS:
            abort(404)
        reason = export.fsaverage_unavailable_reason(data.results)
        if reason:
            abort(Response(reason, status=404, mimetype="text/plain"))
        image = gifti_maps(match.group(2), match.group(1))[match.group(3)]
        return _download(export.gifti_bytes(image), "application/octet-stream", filename)

    def series(filename: str):
        match = series_re.match(filename)
        if not match or int(match.group(1)) >= data.n_voxels:
            abort(404)
        return _download(export.series_csv(data.results, int(match.group(1))), "text/csv", filename)

    server.add_url_rule(f"{prefix}/<filename>", f"{name}_export_table", table)
    server.add_url_rule(f"{prefix}/nifti/<filename>", f"{name}_export_nifti", nifti_map)
    server.add_url_rule(f"{prefix}/flatmap/<filename>", f"{name}_export_flatmap", flatmap)
    server.add_url_rule(f"{prefix}/series/<filename>", f"{name}_export_series", series)
    server.add_url_rule(f"{prefix}/gifti/<filename>", f"{name}_export_gifti", gifti)
