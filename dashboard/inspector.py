"""The voxel inspector: r, p, q, bin and r / ceiling per condition, the paired contrasts (Δr with its interval,
p, q, outcome), the series, the test images that drive the voxel
with their attention maps, and its RDM neighbours; the pure functions behind it and its callback.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from dash import Input, Output, dcc, html

from core.vocabulary import CONDITION_LABELS, CONTRAST_LABELS, PAIR

from . import ids
from .data import DashboardData
from .plotting import CONDITION_COLOURS, TEMPLATE, title

__all__ = ["make_series_figure", "top_stimuli", "neighbours", "contrast_rows", "partition_rows", "inspector_children",
           "inspector_panel", "register"]


def make_series_figure(measured: np.ndarray, predicted: dict[str, np.ndarray], r: dict[str, float], *,
                       voxel: int, run_id: str, simulated: bool) -> go.Figure:
    """Measured vs predicted test series of one voxel, both conditions on one plot.

    Parameters
    ----------
    measured : array of shape (n_test,)
    predicted : dict of str -> array of shape (n_test,)
        Predicted series per condition.
    r : dict of str -> float
        Test correlation per condition (in the legend).
    voxel : int

    Notes
    -----
    Every series is drawn z-scored: ridge predictions shrink towards 0, so on raw scales their shape would
    hide; z-scoring changes no correlation.
    """
    def z(a):
        a = np.asarray(a, dtype=np.float64)
        return ((a - a.mean()) / (a.std() or 1.0)).astype(np.float32)
    traces = [go.Scatter(y=z(measured), mode="lines", name="measured", line=dict(color="#222", width=2))]
    for m, pred in predicted.items():
        traces.append(go.Scatter(y=z(pred), mode="lines", name=f"predicted {m} (r = {r[m]:.3f})",
                                 line=dict(color=CONDITION_COLOURS.get(m, "#777"), width=1.5)))
    return go.Figure(data=traces, layout=dict(
        template=TEMPLATE, height=270, margin=dict(l=45, r=10, t=55, b=75),
        title=title(f"Voxel {voxel}: measured vs predicted test series", run_id, simulated),
        xaxis=dict(title=dict(text="test sample", standoff=2), gridcolor="#eee"),
        yaxis=dict(title="z-scored response", gridcolor="#eee"),
        legend=dict(orientation="h", y=-0.42, font=dict(size=10))))


def _fmt(value: float, digits: int = 3) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    if value != 0 and abs(value) < 10 ** -digits:
        return f"{value:.1e}"
    return f"{value:.{digits}f}"


def top_stimuli(predicted: np.ndarray, n: int = 5) -> np.ndarray:
    """Indices of the ``n`` test stimuli with the highest predicted response, highest first."""
    pred = np.asarray(predicted, dtype=np.float64)
    n = min(n, pred.size)
    top = np.argpartition(-pred, n - 1)[:n] if n else np.zeros(0, dtype=np.int64)
    return top[np.argsort(-pred[top], kind="stable")]


def neighbours(data: DashboardData, condition: str, voxel: int) -> list[tuple[int, float]]:
    """The voxel's nearest neighbours in the condition's RDM: [(voxel, correlation distance)], self excluded."""
    if condition not in data.knn or condition not in data.umap:
        return []
    emb, idx, dist = data.knn[condition]
    pos = int(data.umap[condition].position[voxel]) if condition in data.umap else -1
    if pos < 0:
        return []
    return [(int(emb[j]), float(d)) for j, d in zip(idx[pos], dist[pos]) if int(j) != pos]


def contrast_rows(data: DashboardData, voxel: int) -> html.Table:
    """The voxel's paired contrasts: Δr with its interval, p, q and the outcome, one row per contrast."""
    from .filters import outcome_labels
    test = data.contrast_test
    ci = f"{100 * float(test.get('ci', 0.95)):g}% interval"
    body = []
    for name, c in data.contrasts.items():
        if not bool(c["valid"][voxel]):
            cells = ["n/a (a correlation is undefined)", "–", "–", "–"]
        else:
            cells = [f"{_fmt(float(c['delta'][voxel]))} [{_fmt(float(c['delta_lo'][voxel]))}, "
                     f"{_fmt(float(c['delta_hi'][voxel]))}]", _fmt(float(c["p"][voxel]), 4),
                     _fmt(float(c["q"][voxel]), 4), outcome_labels(name)[int(c["outcome"][voxel])]]
        body.append(html.Tr([html.Th(CONTRAST_LABELS[name])] + [html.Td(x) for x in cells]))
    level = f"{float(test.get('level', data.level)):g}"
    return html.Table([
        html.Thead(html.Tr([html.Th("contrast"), html.Th(f"Δr [{ci}]"), html.Th("p"), html.Th("q (FDR)"),
                            html.Th(f"outcome (q ≤ {level})")])),
        html.Tbody(body)], className="stats contrasts",
        title="paired test over the same test samples: circular block bootstrap of r_a − r_b "
              f"(blocks of {test.get('block_length', '?')} samples, {test.get('n_boot', '?')} resamples)")


def partition_rows(data: DashboardData, voxel: int) -> html.Table:
    """The voxel's joint on+off model: test R^2 of the joint and single models, unique-on / unique-off (with the
    one-sided p and q of their test) and shared variance, and the on-band weight cross-validation chose."""
    j, v = data.joint, int(voxel)
    level = f"{float(data.joint_test.get('level', 0.05)):g}"

    def val(name):
        return _fmt(float(j[name][v]), 4)
    rows = [("test R², joint / on / off", f"{val('r2_joint')} / {val('r2_on')} / {val('r2_off')}", "", ""),
            ("unique on (joint − off)", val("unique_on"), _fmt(float(j["p_unique_on"][v]), 4),
             _fmt(float(j["q_unique_on"][v]), 4)),
            ("unique off (joint − on)", val("unique_off"), _fmt(float(j["p_unique_off"][v]), 4),
             _fmt(float(j["q_unique_off"][v]), 4)),
            ("shared (on + off − joint)", val("shared"), "", ""),
            ("on-band weight (CV)", _fmt(float(j["gamma_on"][v]), 2)
             + ("" if "fitted" not in j or bool(j["fitted"][v]) else " (no band predicts it in CV: its better "
                                                                     "single model kept)"), "", "")]
    if "unique_on_vs_uniform" in j:
        rows.append(("on beyond uniform gain (on+uniform − uniform)", val("unique_on_vs_uniform"),
                     _fmt(float(j["p_unique_on_vs_uniform"][v]), 4), _fmt(float(j["q_unique_on_vs_uniform"][v]), 4)))
    return html.Table([
        html.Thead(html.Tr([html.Th("joint on+off model"), html.Th("value"), html.Th("p (one-sided)"),
                            html.Th(f"q (FDR, ≤ {level} adds)")])),
        html.Tbody([html.Tr([html.Th(a)] + [html.Td(x) for x in rest]) for a, *rest in rows])],
        className="stats joint",
        title="banded ridge over the on and off features; unique and shared variance are differences of test R² "
              "(negative estimates kept); the test resamples test samples in blocks and is conservative where "
              "the joint model is one of the single models")


def inspector_children(data: DashboardData, voxel: int | None) -> list:
    """The voxel inspector's contents for ``voxel`` (None = the empty-state hint)."""
    if voxel is None:
        return [html.P("Click a voxel in any view (UMAPs, flatmaps, the 3-D viewer, the r scatter, the neighbourhood "
                       "map, the table) or search for one by id or i,j,k.", className="hint")]
    v = int(voxel)
    res = data.results
    conds = data.conditions
    head = [html.H3(f"Voxel {v}")]
    facts = []
    if data.file_voxel is not None:
        facts.append(f"column {int(data.file_voxel[v])} of the response file")
    if data.has_volume:
        i, j, k = (int(c) for c in data.ijk[v])
        facts.append(f"i,j,k {i},{j},{k}")
    if data.has_geometry:
        if data.has_hemispheres:
            facts.append("left hemisphere" if data.hemi[v] == 0 else "right hemisphere")
        facts.append(f"ROI {data.roi_names[data.roi[v]] if data.roi_names else data.roi[v]}")
    if data.simulated:
        facts.append("SIMULATED data")
    head.append(html.P(" · ".join(facts), className="facts"))

    rows = [("r", lambda m: _fmt(data.r[m][v])), ("p", lambda m: _fmt(data.p[m][v], 4)),
            ("q (FDR)", lambda m: _fmt(data.q[m][v], 4)),
            ("bin", lambda m: data.bin_scheme.label(int(data.stored_bins[m][v])))]
    if data.alpha:
        rows.append(("ridge alpha", lambda m: f"{float(data.alpha[m][v]):.3g}" if m in data.alpha else "–"))
    if data.cv:
        rows.append(("CV R² (fold mean)", lambda m: _fmt(float(data.cv[m][v])) if m in data.cv else "–"))
    if data.ceiling:
        rows.append(("noise ceiling", lambda m: _fmt(float(data.ceiling[m][v])) if m in data.ceiling else "–"))
    if data.r_norm:
        def r_norm(m):
            if m not in data.r_norm:
                return "–"
            if m in data.ceiling_valid and not data.ceiling_valid[m][v]:
                return "n/a (ceiling unreliable)"
            return _fmt(float(data.r_norm[m][v]))
        rows.append(("r / ceiling", r_norm))
    table = html.Table([
        html.Thead(html.Tr([html.Th("")] + [html.Th(CONDITION_LABELS.get(m, m)) for m in conds])),
        html.Tbody([html.Tr([html.Th(name)] + [html.Td(fn(m)) for m in conds]) for name, fn in rows]),
    ], className="stats")
    off, on = PAIR
    if data.contrasts:
        extra = [contrast_rows(data, v)]
    else:
        extra = [html.P([html.B(f"Δr ({on} − {off}) "), _fmt(data.r[on][v] - data.r[off][v]),
                         " (no paired test: this run has no contrasts stage)"], className="delta")]
    if data.joint:
        extra.append(partition_rows(data, v))
    if data.jaccard is not None:
        emb, jac = data.jaccard
        where = np.flatnonzero(emb == v)
        if where.size:
            extra.append(html.P(f"neighbourhood overlap on vs off (Jaccard): {float(jac[where[0]]):.2f}"))
    emb_state = [f"{CONDITION_LABELS[m]}: " + ("in the UMAP" if m in data.umap and data.umap[m].position[v] >= 0
                                       else "not embedded (not significant in either condition)")
                 for m in PAIR]
    extra.append(html.P(" · ".join(emb_state), className="facts"))

    children = head + [table] + extra
    if res.has_stage("encoding"):
        predicted = {m: res.predicted(m, v) for m in conds}
        fig = make_series_figure(res.measured(v), predicted, {m: float(data.r[m][v]) for m in conds}, voxel=v,
                                 run_id=data.run_id, simulated=data.simulated)
        children.append(dcc.Graph(id=ids.SERIES, figure=fig, config={"displaylogo": False}))
        if data.overlays is not None:
            children.append(html.H4("Test images that drive its predicted response most (attention map overlaid)"))
            for m in PAIR:
                top = top_stimuli(predicted[m], 5)
                children.append(html.Div([html.Span(CONDITION_LABELS[m], className="rowlabel")] + [
                    html.A(html.Img(src=data.pixel_url("overlay", int(s)),
                                    title=f"test image {int(s)}: predicted response {predicted[m][s]:.3f} "
                                          f"(attention {m}); click for the plain image",
                                    className="stim"), href=data.pixel_url("thumb", int(s)), target="_blank")
                    for s in top], className="stimrow"))
    for m in PAIR:
        nb = neighbours(data, m, v)
        if not nb:
            continue
        links = [html.A(
            f"{n}" + (f" {data.roi_names[data.roi[n]]}" if data.has_geometry and data.roi_names else "")
            + f" ({d:.2f})", href=ids.voxel_href(n), className="nbr",
            title=f"voxel {n}, correlation distance {d:.3f} in the attention-{m} RDM") for n, d in nb]
        children.append(html.Div([html.Span(f"nearest neighbours, {CONDITION_LABELS[m]} (1 − r):",
                                            className="rowlabel"), *links], className="nbrs"))
    return children


def inspector_panel(data: DashboardData) -> html.Div:
    """The inspector as the page opens (the hint: nothing is selected yet)."""
    return html.Div(inspector_children(data, None), id=ids.INSPECTOR, className="inspector")


def register(app, data: DashboardData) -> None:
    """The inspector follows the selected voxel."""
    @app.callback(output=dict(children=Output(ids.INSPECTOR, "children")),
                  inputs=dict(voxel=Input(ids.SELECTED, "data")))
    def on_inspect(voxel):
        return dict(children=inspector_children(data, voxel if isinstance(voxel, int) else None))
