"""Charts of the Explore and Prune pages (charts only: data comes from core/): Vega-Lite specs
(Explore's histograms to click or drag over, Prune & Export's charts redrawn in place as its
sliders move) and Plotly figures (Explore's scatter, drawn on request)."""

from __future__ import annotations

import html
from collections.abc import Sequence

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from core.histogram import Histogram

PRUNED_COLOR = "crimson"
KEPT_COLOR = "#9db8d3"


# ---- Prune & Export: charts redrawn at each move of a slider ----------------------------------
#
# Vega-Lite specs and their data (st.vega_lite_chart(data, spec)). A spec stays the same while the
# sliders move, only the data changes, and the browser updates such a chart in place; a changed
# Plotly figure is a new chart, drawn from scratch. Drawn as SVG: what is drawn is in the page.

VegaChart = tuple[pd.DataFrame, dict]
_SVG = {"embedOptions": {"renderer": "svg"}}


def cut_histogram_chart(
    hist: Histogram, title: str, cuts: Sequence[tuple[float, float]] = (), height: int = 300
) -> VegaChart:
    """Bars of HIST (equal-width bins); each of CUTS, (line, end), shades from a dashed line at
    `line` to `end` (what a rule prunes)."""
    data = pd.DataFrame(
        {
            "kind": ["bin"] * len(hist.counts) + ["cut"] * len(cuts),
            "left": [*hist.edges[:-1], *(line for line, _ in cuts)],
            "right": [*hist.edges[1:], *(end for _, end in cuts)],
            "count": [*hist.counts, *(0 for _ in cuts)],
        }
    )
    x = {"field": "left", "type": "quantitative", "title": None}
    spec = {
        "title": title,
        "height": height,
        "usermeta": _SVG,
        "layer": [
            {
                "transform": [{"filter": "datum.kind == 'bin'"}],
                "mark": "rect",
                "encoding": {
                    "x": x | {"scale": {"zero": False, "nice": False}},
                    "x2": {"field": "right"},
                    "y": {"field": "count", "type": "quantitative", "title": "samples"},
                    "y2": {"datum": 0},
                    "tooltip": [
                        {"field": "left", "title": "from", "format": ".4g"},
                        {"field": "right", "title": "to", "format": ".4g"},
                        {"field": "count", "title": "samples", "format": ","},
                    ],
                },
            },
            {
                "transform": [{"filter": "datum.kind == 'cut'"}],
                "mark": {"type": "rect", "color": PRUNED_COLOR, "opacity": 0.15},
                "encoding": {"x": x, "x2": {"field": "right"}},
            },
            {
                "transform": [{"filter": "datum.kind == 'cut'"}],
                "mark": {"type": "rule", "color": PRUNED_COLOR, "strokeDash": [6, 4]},
                "encoding": {"x": x},
            },
        ],
    }
    return data, spec


def group_share_chart(table: pd.DataFrame, label: str) -> VegaChart:
    """Kept and pruned share of each group's samples (core.groups.group_table), its first row on
    top."""
    groups = table["group"].astype(str)
    hover = [
        f"{p:,} of {n:,} samples pruned, {k:,} kept"
        for p, k, n in zip(table["pruned"], table["kept"], table["samples"], strict=True)
    ]
    rows = pd.DataFrame(
        {
            "group": groups,
            "order": range(len(table)),
            "share": table["pruned_share"],
            "label": [f"{s:.1%}" for s in table["pruned_share"]],
            "counts": hover,
        }
    )
    data = pd.concat(
        [rows.assign(part="pruned"), rows.assign(part="kept", share=1 - rows["share"], label="")],
        ignore_index=True,
    )
    # Nominal axis: group names that read as numbers (years) stay names.
    y = {
        "field": "group",
        "type": "nominal",
        "title": None,
        "sort": {"field": "order", "op": "min"},
        "axis": {"labelOverlap": False},
    }
    spec = {
        "title": f"Share of samples pruned, per {label}",
        "height": 90 + 26 * len(table),  # with the title, the legend and the axis
        "usermeta": _SVG,
        "encoding": {"y": y},
        "layer": [
            {
                "mark": "bar",
                "encoding": {
                    "x": {
                        "field": "share",
                        "type": "quantitative",
                        "stack": "zero",
                        "title": None,
                        "scale": {"domain": [0, 1]},
                        "axis": {"format": ".0%", "values": [0, 0.2, 0.4, 0.6, 0.8, 1]},
                    },
                    "color": {
                        "field": "part",
                        "type": "nominal",
                        "title": None,
                        "scale": {
                            "domain": ["pruned", "kept"],
                            "range": [PRUNED_COLOR, KEPT_COLOR],
                        },
                        "legend": {"orient": "top"},
                    },
                    "order": {"field": "part", "sort": "descending"},  # pruned first, from 0
                    "tooltip": [
                        {"field": "group", "title": label},
                        {"field": "counts", "title": "samples"},
                    ],
                },
            },
            {  # a share too narrow to label is in the tooltip
                "transform": [{"filter": "datum.part == 'pruned' && datum.share >= 0.06"}],
                "mark": {"type": "text", "align": "right", "dx": -4, "color": "white"},
                "encoding": {
                    "x": {"field": "share", "type": "quantitative"},
                    "text": {"field": "label"},
                },
            },
        ],
    }
    return data, spec


def kept_curve_chart(
    curve: pd.DataFrame, group_curve: pd.DataFrame | None, has_tokens: bool
) -> VegaChart:
    """Kept share of tokens (bytes without token counts) against the share of samples pruned,
    for all samples and, when grouped, one line per group; the current ratio marked."""
    y = "kept_tokens_share" if has_tokens else "kept_bytes_share"
    every = "all samples"
    parts = [curve.assign(series=every)]
    if group_curve is not None:
        parts.append(group_curve.rename(columns={"group": "series"}))
    data = pd.concat(parts, ignore_index=True)[["series", "pruned_ratio", y, "current"]]
    data = data.rename(columns={y: "kept"})
    groups = [] if group_curve is None else list(dict.fromkeys(group_curve["group"].astype(str)))
    palette = group_colors(groups)
    color = {
        "field": "series",
        "type": "nominal",
        "title": None,
        "scale": {
            "domain": [every, *groups],
            "range": ["black", *(palette[g] for g in groups)],
        },
        "legend": {"orient": "right"} if groups else None,
    }
    percent = {"type": "quantitative", "axis": {"format": ".0%"}}
    mine = f"datum.series == '{every}'"
    spec = {
        "title": f"Kept share of {'tokens' if has_tokens else 'bytes'} against share of samples "
        "pruned",
        "height": 280 if group_curve is None else 380,
        "usermeta": _SVG,
        "encoding": {
            "x": {"field": "pruned_ratio", "title": "share of scored samples pruned"} | percent,
            "y": {"field": "kept", "title": "kept share", "scale": {"domain": [0, 1.02]}} | percent,
            "color": color,
            "tooltip": [
                {"field": "series", "title": "samples"},
                {"field": "pruned_ratio", "title": "pruned", "format": ".1%"},
                {"field": "kept", "title": "kept", "format": ".1%"},
            ],
        },
        "layer": [
            {
                "mark": "line",
                "encoding": {
                    "strokeWidth": {"condition": {"test": mine, "value": 3}, "value": 1.5}
                },
            },
            {"transform": [{"filter": mine}], "mark": {"type": "point", "filled": True}},
            {  # the current ratio: on every line, larger and red on all samples'
                "transform": [{"filter": "datum.current"}],
                "mark": {"type": "point", "filled": True, "opacity": 1},
                "encoding": {
                    "size": {"condition": {"test": mine, "value": 160}, "value": 70},
                    "color": {"condition": {"test": mine, "value": PRUNED_COLOR}} | color,
                },
            },
        ],
    }
    return data, spec


# ---- Explore: charts a click or a box selects from --------------------------------------------
#
# The histograms are Vega-Lite specs with two selection parameters (st.vega_lite_chart(on_select=
# ...)): HIST_CLICK, a click on a bar, and HIST_SPAN, a drag along x over several. Lighter than
# Plotly in a browser (a new tab need not load Plotly's script before its first charts). The
# scatter, drawn only on request, stays a Plotly figure (st.plotly_chart(on_select=...)).

# Tableau 10 first: its first colours are easy to tell apart (Plotly's 1st and 4th are both violet).
GROUP_PALETTE = qualitative.T10 + qualitative.Safe
SELECTED_FILL = "#f5b700"
HIST_CLICK = "bar"  # point selection: [{"left": ..., "right": ...}] of the clicked bar
HIST_SPAN = "span"  # interval selection on x: {"left": [low, high]} of a drag


def group_colors(labels: list[str]) -> dict[str, str]:
    """One colour per group label of a grouping (in its order), "other" and "(none)" in greys."""
    from core.groups import MISSING, OTHER

    named = [g for g in labels if g not in (OTHER, MISSING)]
    colors = {g: GROUP_PALETTE[i % len(GROUP_PALETTE)] for i, g in enumerate(named)}
    return colors | {OTHER: "#9e9e9e", MISSING: "#d0d0d0"}


def group_legend_html(title: str, colors: dict[str, str], sizes: dict[str, int]) -> str:
    """One colour key for every chart of a grouped page (the charts draw no legend of their own)."""
    items = "".join(
        f'<span style="white-space:nowrap;margin-right:14px">'
        f'<span style="display:inline-block;width:11px;height:11px;border-radius:2px;'
        f'background:{color};margin-right:5px;vertical-align:-1px"></span>'
        f"{html.escape(str(group))} <span style='color:#888'>{sizes.get(group, 0):,}</span></span>"
        for group, color in colors.items()
        if sizes.get(group)
    )
    title = f"<b>{html.escape(title)}</b>"
    return f'<div style="font-size:0.85rem;line-height:1.8">{title}: {items}</div>'


def selectable_histogram_chart(
    hist: Histogram,
    title: str,
    selected: tuple[float | None, float | None] | None = None,
    colors: dict[str, str] | None = None,
    share: bool = False,
    height: int = 260,
) -> VegaChart:
    """HIST as bars to click or drag over (the selection parameters HIST_CLICK and HIST_SPAN);
    per group (HIST.by_group) stacked, or with SHARE one step line per group of the share of its
    samples in each bin, over bins to click. SELECTED (a score range) is shaded, the bars outside
    it faded. The data: a row per bar ("bar": group, left, right, value, y0, y1, inside), per bin
    ("bin": the click targets of SHARE) and the shade ("shade")."""
    frame = hist.frame()
    edges = list(hist.edges)
    centres = _centres(frame, hist.log_x).tolist() if len(frame) else []
    series = hist.by_group or {"": hist.counts}
    rows: list[tuple] = []
    base = [0.0] * len(frame)
    top = [0.0] * len(frame)
    for group, counts in series.items():
        total = sum(counts) or 1
        for i, count in enumerate(counts):
            value = count / total if share else count
            y0 = 0.0 if share else base[i]
            rows.append(("bar", group, edges[i], edges[i + 1], centres[i], value, y0, y0 + value))
            base[i] = y0 + value
            top[i] = max(top[i], y0 + value)
    if share:
        rows += [
            ("bin", "", edges[i], edges[i + 1], centres[i], top[i], 0.0, top[i])
            for i in range(len(frame))
        ]
    if selected is not None and edges:
        low, high = selected
        low = edges[0] if low is None else max(low, edges[0])
        high = edges[-1] if high is None else min(high, edges[-1])
        rows.append(("shade", "", low, high, None, 0, 0.0, 0.0))
    data = pd.DataFrame(
        rows, columns=["kind", "group", "left", "right", "centre", "value", "y0", "y1"]
    )
    data["inside"] = [
        kind != "bar" or _overlaps((left, right), selected)
        for kind, left, right in zip(data["kind"], data["left"], data["right"], strict=True)
    ]

    x = {
        "field": "left",
        "type": "quantitative",
        "title": None,
        "scale": {"type": "log" if hist.log_x else "linear", "zero": False, "nice": False}
        | ({"domain": [edges[0], edges[-1]]} if edges else {}),
    }
    y = {"type": "quantitative", "title": "share of the group" if share else "samples"}
    if share:
        y["axis"] = {"format": ".0%"}
    value_tip = (
        {"field": "value", "title": "of the group", "format": ".1%"}
        if share
        else {"field": "value", "title": "samples", "format": ","}
    )
    group_tip = [{"field": "group", "title": "group"}] if hist.by_group else []
    tooltip = [
        *group_tip,
        {"field": "left", "title": "from", "format": ".4g"},
        {"field": "right", "title": "to", "format": ".4g"},
        value_tip,
    ]
    color = (
        {
            "field": "group",
            "type": "nominal",
            "legend": None,
            "scale": {
                "domain": list(series),
                "range": [(colors or {}).get(g) or GROUP_PALETTE[0] for g in series],
            },
        }
        if hist.by_group
        else None
    )
    params = [
        {"name": HIST_CLICK, "select": {"type": "point", "fields": ["left", "right"]}},
        {"name": HIST_SPAN, "select": {"type": "interval", "encodings": ["x"]}},
    ]
    layers: list[dict] = [
        {
            "transform": [{"filter": "datum.kind == 'shade'"}],
            "mark": {"type": "rect", "color": SELECTED_FILL, "opacity": 0.2},
            "encoding": {"x": x, "x2": {"field": "right"}},
        }
    ]
    if share:
        layers += [
            {  # click targets: the bins, unseen
                "transform": [{"filter": "datum.kind == 'bin'"}],
                "params": params,
                "mark": {"type": "rect", "fill": "#888", "fillOpacity": 0, "cursor": "pointer"},
                "encoding": {
                    "x": x,
                    "x2": {"field": "right"},
                    "y": y | {"field": "y1"},
                    "y2": {"datum": 0},
                    "tooltip": tooltip[1:3],
                },
            },
            {
                "transform": [{"filter": "datum.kind == 'bar'"}],
                "mark": {"type": "line", "interpolate": "step", "strokeWidth": 1.5},
                "encoding": {
                    "x": {"field": "centre", "type": "quantitative"},
                    "y": y | {"field": "value"},
                    "detail": {"field": "group"},
                }
                | ({"color": color} if color else {}),
            },
        ]
    else:
        bar_encoding = {
            "x": x,
            "x2": {"field": "right"},
            "y": y | {"field": "y1"},
            "y2": {"field": "y0"},
            "opacity": {"condition": {"test": "datum.inside", "value": 1}, "value": 0.35},
            "tooltip": tooltip,
        }
        layers.append(
            {
                "transform": [{"filter": "datum.kind == 'bar'"}],
                "params": params,
                "mark": {"type": "rect", "cursor": "pointer"},
                "encoding": bar_encoding | ({"color": color} if color else {}),
            }
        )
    spec = {
        "title": title,
        "height": height,
        "usermeta": _SVG,
        "layer": layers,
    }
    return data, spec


def _centres(frame: pd.DataFrame, log_x: bool) -> pd.Series:
    if log_x:
        return (frame["left"] * frame["right"]) ** 0.5
    return (frame["left"] + frame["right"]) / 2


def _overlaps(bin_: tuple, selected: tuple[float | None, float | None] | None) -> bool:
    if selected is None:
        return True
    low, high = selected
    return (low is None or bin_[1] > low) and (high is None or bin_[0] < high)


def selected_bins(
    selection: dict, edges: Sequence[float], log_x: bool = False
) -> tuple[float, float, bool] | None:
    """(left, right, closed) spanned by the bins (of EDGES) that a click (HIST_CLICK: the bar's
    fields) or a drag (HIST_SPAN: {"left": [low, high]}) selected in a selectable_histogram_chart;
    closed when the last bin is among them. A drag takes the bins whose centre it covers (or the
    one it lies in). None when none is selected. The edges are EDGES' own (exact) values."""
    n = len(edges) - 1
    if n < 1:
        return None
    span = (selection.get(HIST_SPAN) or {}).get("left")
    if span:
        low, high = min(span), max(span)
        mid = [
            (a * b) ** 0.5 if log_x else (a + b) / 2
            for a, b in zip(edges[:-1], edges[1:], strict=True)
        ]
        picked = [i for i in range(n) if low <= mid[i] <= high] or [
            i for i in range(n) if edges[i + 1] > low and edges[i] < high
        ]
    else:
        points = selection.get(HIST_CLICK) or []
        if isinstance(points, dict):  # none: {}
            points = []
        picked = [
            min(range(n), key=lambda i, v=p["left"]: abs(edges[i] - v))
            for p in points
            if isinstance(p, dict) and p.get("left") is not None
        ]
    if not picked:
        return None
    first, last = min(picked), max(picked)
    return edges[first], edges[last + 1], last == n - 1


def scatter_figure(
    points: pd.DataFrame,
    x_title: str,
    y_title: str,
    log_x: bool = False,
    colors: dict[str, str] | None = None,
    region: tuple[tuple, tuple] | None = None,
    height: int = 380,
) -> go.Figure:
    """POINTS (sample_id, x, y[, group]) to click (customdata: the sample id) or box-select, one
    trace per group; REGION ((x0, x1), (y0, y1), None for unbounded) outlined."""
    grouped = "group" in points.columns
    parts = points.groupby("group", sort=False) if grouped else [("", points)]
    order = list(colors or {})
    parts = sorted(parts, key=lambda p: order.index(p[0]) if p[0] in order else len(order))
    fig = go.Figure(
        [
            go.Scattergl(
                x=part["x"],
                y=part["y"],
                mode="markers",
                name=str(group),
                marker=dict(size=4, opacity=0.5, color=(colors or {}).get(group)),
                customdata=part[["sample_id"]],
                hovertemplate=f"{group + '<br>' if group else ''}sample %{{customdata[0]}}<br>"
                f"{x_title} %{{x:.4g}}<br>{y_title} %{{y:.4g}}<extra></extra>",
            )
            for group, part in parts
        ]
    )
    fig.update_layout(
        title=f"{y_title} against {x_title}",
        height=height,
        margin=dict(l=10, r=10, t=40, b=10),
        showlegend=False,
        clickmode="event+select",
    )
    if region is not None:
        (x0, x1), (y0, y1) = region
        fig.add_shape(
            type="rect",
            x0=points["x"].min() if x0 is None else x0,
            x1=points["x"].max() if x1 is None else x1,
            y0=points["y"].min() if y0 is None else y0,
            y1=points["y"].max() if y1 is None else y1,
            line=dict(color=SELECTED_FILL, width=2),
            fillcolor=SELECTED_FILL,
            opacity=0.15,
        )
    fig.update_xaxes(title=x_title, type="log" if log_x else "linear")
    fig.update_yaxes(title=y_title)
    return fig


def selected_region(selection: dict) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """((x0, x1), (y0, y1)) that the points a box (or lasso) selected in a scatter_figure span;
    None for a click or no selection."""
    if not (selection.get("box") or selection.get("lasso")):
        return None
    points = [p for p in selection.get("points", []) if "x" in p and "y" in p]
    if not points:
        return None
    xs, ys = [p["x"] for p in points], [p["y"] for p in points]
    return (min(xs), max(xs)), (min(ys), max(ys))


def clicked_sample(selection: dict) -> str | None:
    """The sample id of a point clicked in a scatter_figure (None for a box or no click)."""
    if selection.get("box") or selection.get("lasso"):
        return None
    points = [p for p in selection.get("points", []) if p.get("customdata")]
    return str(points[0]["customdata"][0]) if points else None
