"""The filters: significance rule, bins, ROIs, hemispheres, |r| and how filtered-out voxels look; the legend
of the colours they produce; and the callback that recolours every view when they change.

A filter change patches the uint8 colour arrays (and the flatmaps' filter layer) only, never coordinates.
"""
from __future__ import annotations

from dash import Input, Output, Patch, dcc, html

from core.vocabulary import (ADDS_CODES, ADDS_RGBA, BIN_SETS, CEILING_LABELS, CEILING_RGBA, COLOURINGS, CONDITION_LABELS, CONTRAST_LABELS,
                             NEGATIVE_CODE, NEGATIVE_RGBA, NS_RGBA, OUTCOME_RGBA, PAIR, rgba_css, rgba_hex)

from . import flatmaps, ids, r_scatter, umap_view
from .data import DashboardData, FilterState
from .plotting import HIGHLIGHT_COLOUR, SET_COLOUR, figure_outputs, figure_values

__all__ = ["CONTROLS", "control_deps", "rule_label", "outcome_labels", "filter_controls", "filter_message", "legend",
           "legend_items", "graphs", "filter_patches", "register"]

#: The filter controls, keyed by the :meth:`FilterState.from_controls` argument each one gives.
CONTROLS = {"rule": ids.RULE, "bins": ids.BINS, "rois": ids.ROIS, "hemis": ids.HEMIS, "threshold": ids.THRESHOLD,
            "ns": ids.NS_MODE, "colour": ids.COLOUR, "contrast": ids.CONTRAST, "outcomes": ids.OUTCOMES,
            "bin_set": ids.BIN_SET, "adds": ids.ADDS}
_HEMIS = {"L": "left", "R": "right"}


def control_deps(kind=Input, **kw) -> dict:
    """The controls' values as callback dependencies (``Input``, ``State`` or ``Output``, made with ``kw``),
    keyed as :data:`CONTROLS`."""
    return {key: kind(cid, "value", **kw) for key, cid in CONTROLS.items()}


def rule_label(data: DashboardData, rule: str, *, study: bool = False) -> str:
    """A significance rule at the run's level, e.g. ``FDR q ≤ 0.01`` (``study``: the control's longer label,
    which names the study's rule)."""
    level = f"{data.level:g}"
    p = f"p ≤ {level} uncorrected (the study)" if study else f"p ≤ {level} (uncorrected)"
    return {"p": p, "q": f"FDR q ≤ {level}", "perm": f"block-permutation FDR q ≤ {level}"}.get(rule, rule)


def filter_controls(data: DashboardData) -> list:
    """The filter controls, set to the run's default filters."""
    state = data.default_filters()
    scheme = data.bin_scheme
    bins = [{"label": lab, "value": code} for code, lab in zip(scheme.codes, scheme.labels)] + \
        [{"label": scheme.negative_label, "value": NEGATIVE_CODE}]
    rois = [{"label": n, "value": n} for n in data.roi_names]
    return [
        html.Div([html.Label("Significance"),
                  dcc.RadioItems(id=ids.RULE, options=[{"label": rule_label(data, r, study=True), "value": r}
                                                       for r in data.rules],
                                 value=state.rule, className="radio")], className="control"),
        html.Div([html.Label("Bins"),
                  dcc.Checklist(id=ids.BINS, options=bins, value=list(state.bins), inline=True,
                                className="check")], className="control"),
        html.Div([html.Label("ROIs"),
                  dcc.Dropdown(id=ids.ROIS, options=rois, value=list(state.rois), multi=True, placeholder="all ROIs",
                               disabled=not data.has_geometry)], className="control wide",
                 style=None if data.has_geometry else {"display": "none"}),
        html.Div([html.Label("Hemisphere"),
                  dcc.Checklist(id=ids.HEMIS, options=[{"label": _HEMIS[h], "value": h} for h in state.hemis],
                                value=list(state.hemis), inline=True, className="check")], className="control",
                 # Without hemispheres (no cortex, or a mapper file without a fsaverage mapper) it filters nothing.
                 style=None if data.has_hemispheres else {"display": "none"}),
        html.Div([html.Label("|r| ≥"),
                  dcc.Slider(id=ids.THRESHOLD, min=0, max=0.6, step=0.01, value=state.threshold,
                             marks={v: f"{v:g}" for v in (0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)},
                             tooltip={"placement": "bottom"})], className="control wide"),
        html.Div([html.Label("Not shown voxels"),
                  dcc.RadioItems(id=ids.NS_MODE, options=[{"label": v, "value": v} for v in ("faint", "hidden")],
                                 value=state.ns, inline=True, className="radio")], className="control"),
        html.Div([html.Label("Binned voxels"),
                  dcc.RadioItems(id=ids.BIN_SET, options=[{"label": lab, "value": v} for v, lab in BIN_SETS.items()],
                                 value=state.bin_set, inline=True, className="radio")], className="control"),
        html.Div([html.Label("Colour by"),
                  dcc.RadioItems(id=ids.COLOUR, options=[{"label": lab, "value": v,
                                                          "disabled": (v == "contrast" and not data.contrasts)
                                                          or (v == "ceiling" and not data.r_norm)
                                                          or (v == "adds" and not data.joint)}
                                                         for v, lab in COLOURINGS.items()],
                                 value=state.colour, inline=True, className="radio")], className="control"),
        html.Div([html.Label("Contrast"),
                  dcc.Dropdown(id=ids.CONTRAST, options=[{"label": CONTRAST_LABELS[c], "value": c}
                                                         for c in data.contrasts],
                               value=state.contrast, clearable=False, disabled=not data.contrasts)],
                 className="control"),
        html.Div([html.Label("Outcomes shown"),
                  dcc.Checklist(id=ids.OUTCOMES, options=[{"label": lab, "value": o}
                                                          for o, lab in outcome_labels(state.contrast).items()],
                                value=list(state.outcomes), inline=True, className="check")], className="control"),
        html.Div([html.Label("Attention adds: shown"),
                  dcc.Checklist(id=ids.ADDS, options=[{"label": lab, "value": a} for a, lab in ADDS_CODES.items()],
                                value=list(state.adds), inline=True, className="check")], className="control"),
    ]


def filter_message() -> html.Div:
    """Where the filter callback says how many voxels pass."""
    return html.Div(id=ids.FILTER_MSG, className="filter-msg")


def outcome_labels(contrast: str) -> dict[int, str]:
    """The outcome codes of a contrast in words, e.g. ``{1: "on better", -1: "off better", 0: "no detectable
    difference"}`` (the codes' order: helps, hurts, none)."""
    a, b = contrast.split("_")
    return {1: f"{a} better", -1: f"{b} better", 0: "no detectable difference"}


def legend_items(data: DashboardData, state: FilterState) -> list:
    """The colour legend's items for a filter state: the bins (or a contrast's outcomes), significant negative r,
    filtered out, the selection markers; and what the bins can hold at this test length."""
    def item(colour, label, ring=False):
        style = {"borderColor": colour} if ring else {"background": colour}
        return html.Span([html.Span(className="swatch ring" if ring else "swatch", style=style), label],
                         className="legend-item")
    scheme = data.bin_scheme
    markers = [item(rgba_css(NS_RGBA), "n.s. / filtered out"), item(HIGHLIGHT_COLOUR, "selected voxel"),
               item(SET_COLOUR, "selected set", ring=True)]
    if state.colour == "adds":
        test = data.joint_test
        items = [item(rgba_hex(ADDS_RGBA[a]), lab) for a, lab in ADDS_CODES.items()]
        note = (f"Joint on+off model: unique variance of each feature set above 0 at FDR q ≤ {test.get('level', 0.05):g} "
                f"(one-sided block bootstrap over test samples, blocks of {test.get('block_length', '?')}; "
                "conservative where the joint model is one of the single models)." if data.joint else
                "This run has no joint stage: rerun precompute.py.")
        return [html.Span("what attention adds:", className="legend-title"), *items, *markers,
                html.Span(note, className="legend-note")]
    if state.colour == "ceiling":
        min_ev = data.results.config.get("stats", {}).get("ceiling_min_ev", 0.1)
        items = [item(rgba_hex(c), lab) for c, lab in zip(CEILING_RGBA, CEILING_LABELS)]
        note = ("r / noise ceiling (r_norm) of voxels whose ceiling is reliable (explainable variance ≥ "
                f"{min_ev:g}, stats.ceiling_min_ev); the others are drawn as filtered out." if data.r_norm else
                "This run has no noise ceiling (its test set has no repeats): no voxel can be shown.")
        return [html.Span("r / noise ceiling:", className="legend-title"), *items, *markers,
                html.Span(note, className="legend-note")]
    if data.outcome(state) is not None:
        test = data.contrast_test
        head = f"{CONTRAST_LABELS[state.contrast]} (paired test, FDR q ≤ {test.get('level', data.level):g}):"
        items = [item(rgba_hex(OUTCOME_RGBA[o]), lab) for o, lab in outcome_labels(state.contrast).items()]
        note = (f"Δr per voxel over the same test samples; block bootstrap ({test.get('n_boot', '?')} resamples, "
                f"blocks of {test.get('block_length', '?')} samples) gives its interval and p.")
        return [html.Span(head, className="legend-title"), *items, *markers, html.Span(note, className="legend-note")]
    negative = scheme.negative_label if state.bin_set == "significant" else f"r<{scheme.edges[0]:g}"
    head = "r bins (significant voxels):" if state.bin_set == "significant" else "r bins (all voxels):"
    out = [html.Span(head, className="legend-title")] + \
        [item(c, lab) for c, lab in zip(scheme.hex, scheme.labels)] + [item(rgba_hex(NEGATIVE_RGBA), negative)]
    out += markers
    if state.bin_set == "significant":
        out.append(html.Span(bin_floor_note(data, state.rule), className="legend-note"))
    return out


def bin_floor_note(data: DashboardData, rule: str) -> str:
    """What the lowest bins can hold when only significant voxels are binned: the critical r of the t-test at
    this test length and the smallest significant r found under ``rule``."""
    from core.stats import critical_r_t
    edges = data.bin_scheme.edges
    alternative = data.results.config.get("stats", {}).get("alternative", "two-sided")
    r_crit = critical_r_t(data.n_test, data.level, alternative)
    found = data.critical_r(rule)
    smallest = ", ".join(f"{m} {found[m]:.3f}" if found[m] is not None else f"{m} none" for m in PAIR)
    empty = [lab for lab, lo, hi in zip(data.bin_scheme.labels, edges, edges[1:] + (1.0,)) if hi <= r_crit]
    partly = [lab for lab, lo, hi in zip(data.bin_scheme.labels, edges, edges[1:] + (1.0,)) if lo < r_crit < hi]
    text = f"With {data.n_test} test samples the t-test at p ≤ {data.level:g} needs r ≥ {r_crit:.3f}"
    if empty:
        text += f", so {'bins' if len(empty) > 1 else 'bin'} {', '.join(empty)} cannot be filled by significant voxels"
    if partly:
        text += f" (bin {partly[0]} only above it)"
    return text + f"; smallest significant r under {rule_label(data, rule)}: {smallest}. Bin all voxels to see " \
        "every bin."


def legend(data: DashboardData) -> html.Div:
    """The colour legend of the run's default filters (the filter callback keeps it current)."""
    return html.Div(legend_items(data, data.default_filters()), id=ids.LEGEND, className="legend")


def graphs(data: DashboardData) -> list[str]:
    """Graphs a filter change recolours: the UMAPs, the flatmaps and the r scatter."""
    return umap_view.graphs(data) + flatmaps.graphs(data) + [ids.R_SCATTER]


def filter_patches(data: DashboardData, state: FilterState) -> tuple[dict[str, Patch], str]:
    """Patches that recolour every view for a filter state: colour arrays (uint8), the UMAP point sizes
    when hidden points must not be clickable, and the flatmap layer images; never coordinates.

    Returns
    -------
    patches : dict of graph id -> Patch
    message : str
        How many voxels pass the filters per condition.
    """
    out: dict[str, Patch] = {}
    visible = {m: data.visible(m, state) for m in PAIR}
    umap_view.recolour_patches(data, state, visible, out)
    r_scatter.recolour_patches(data, state, visible, out)
    flatmaps.recolour_patches(data, state, out)
    head = rule_label(data, state.rule) if state.bin_set == "significant" else "all voxels with a defined r"
    if data.outcome(state) is not None:
        head += f", coloured by {CONTRAST_LABELS[state.contrast]}"
    elif state.colour == "ceiling":
        head += ", coloured by r / noise ceiling (reliable ceilings only)"
    elif state.colour == "adds":
        head += ", coloured by what attention adds (joint model)"
    message = f"{head}: " + " · ".join(
        f"{int(visible[m].sum()):,} voxels shown with {CONDITION_LABELS[m]}" for m in PAIR)
    return out, message


def register(app, data: DashboardData) -> None:
    """Every view recolours when a filter changes."""
    recoloured = graphs(data)

    @app.callback(output=dict(message=Output(ids.FILTER_MSG, "children"), legend=Output(ids.LEGEND, "children"),
                              figures=figure_outputs(recoloured)),
                  inputs=dict(filters=control_deps(Input)), prevent_initial_call=True)
    def on_filters(filters):
        state = FilterState.from_controls(**filters)
        patches, message = filter_patches(data, state)
        return dict(message=message, legend=legend_items(data, state), figures=figure_values(recoloured, patches))

    @app.callback(Output(ids.OUTCOMES, "options"), Input(ids.CONTRAST, "value"), prevent_initial_call=True)
    def on_contrast(contrast):
        # The outcome checkboxes name the contrast's own conditions ("on better", "uniform better", ...).
        return [{"label": lab, "value": o} for o, lab in outcome_labels(contrast or "on_off").items()]
