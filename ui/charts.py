"""Plotly figures shared by the Explore and Prune pages (figures only: data comes from core/)."""

from __future__ import annotations

import plotly.graph_objects as go

from core.histogram import Histogram


def histogram_figure(hist: Histogram, title: str, height: int = 260) -> go.Figure:
    """Bars of HIST; on a log axis each bin is drawn as a filled step between its edges."""
    frame = hist.frame()
    if hist.log_x:
        xs = [
            e
            for left, right in zip(frame["left"], frame["right"], strict=True)
            for e in (left, right)
        ]
        trace = go.Scatter(
            x=xs,
            y=[c for c in frame["count"] for _ in (0, 1)],
            fill="tozeroy",
            mode="lines",
            hovertemplate="%{x:.4g}: %{y} samples<extra></extra>",
        )
    else:
        trace = go.Bar(
            x=(frame["left"] + frame["right"]) / 2,
            y=frame["count"],
            width=frame["right"] - frame["left"],
            customdata=frame[["left", "right"]],
            hovertemplate="%{customdata[0]:.4g} to %{customdata[1]:.4g}: %{y} samples"
            "<extra></extra>",
        )
    fig = go.Figure(trace)
    fig.update_layout(
        title=title, height=height, margin=dict(l=10, r=10, t=40, b=10), bargap=0, showlegend=False
    )
    fig.update_xaxes(type="log" if hist.log_x else "linear")
    fig.update_yaxes(title="samples")
    return fig
