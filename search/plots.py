"""Pareto plots of task metric against tuned-parameter budget, from plain rows (no MLflow, no Optuna here).

A row is a mapping with ``trial``, ``design`` (preset name or id), ``description``, ``budget`` (%), ``metric``,
``status`` (``Status.COMPLETED`` or ``Status.STOPPED``) and ``on_front``. Completed trials are filled circles, stopped ones hollow
crosses at the metric they had reached; the front is joined by a step line. The HTML embeds plotly's
JavaScript (it renders with no network); the PNG is drawn with matplotlib (no browser needed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from search.schema import Status

Rows = Sequence[Mapping[str, Any]]


def pareto_figure(rows: Rows, metric: str, title: str) -> Any:
    """An interactive plotly figure; hovering a point shows its trial, design and dimensions."""
    import plotly.graph_objects as go

    figure = go.Figure()
    groups = (("front", lambda r: r["on_front"], dict(symbol="circle", size=12, color="#d62728")),
              ("completed", lambda r: not r["on_front"] and r["status"] == Status.COMPLETED, dict(symbol="circle", size=9, color="#1f77b4")),
              ("stopped by ASHA", lambda r: r["status"] == Status.STOPPED, dict(symbol="x-thin-open", size=9, color="#7f7f7f",
                                                                          line=dict(width=2, color="#7f7f7f"))))
    for name, keep, marker in groups:
        chosen = [r for r in rows if keep(r)]
        figure.add_trace(go.Scatter(
            x=[r["budget"] for r in chosen], y=[r["metric"] for r in chosen], mode="markers", name=name, marker=marker,
            customdata=[[r["trial"], r["design"], r.get("description", ""), r.get("step", "")] for r in chosen],
            hovertemplate="trial %{customdata[0]} · %{customdata[1]}<br>%{customdata[2]}<br>budget %{x:.4f}%"
                          f"<br>{metric} %{{y:.4f}} at step %{{customdata[3]}}<extra></extra>"))
    front = sorted((r for r in rows if r["on_front"]), key=lambda r: r["budget"])
    figure.add_trace(go.Scatter(x=[r["budget"] for r in front], y=[r["metric"] for r in front], mode="lines",
                                line=dict(shape="hv", color="#d62728", width=1), name="Pareto front", hoverinfo="skip"))
    figure.update_layout(title=title, xaxis_title="tuned parameters (% of the pretrained model)", yaxis_title=metric,
                         template="plotly_white")
    return figure


def write_html(figure: Any, path: str | Path) -> Path:
    """A self-contained page: plotly's JavaScript inlined, not fetched from a CDN."""
    figure.write_html(str(path), include_plotlyjs=True, full_html=True)
    return Path(path)


def pareto_png(rows: Rows, metric: str, title: str, path: str | Path) -> Path:
    """The same plot as a PNG, drawn with matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    stopped = [r for r in rows if r["status"] == Status.STOPPED]
    complete = [r for r in rows if r["status"] == Status.COMPLETED and not r["on_front"]]
    front = sorted((r for r in rows if r["on_front"]), key=lambda r: r["budget"])
    ax.scatter([r["budget"] for r in stopped], [r["metric"] for r in stopped], marker="x", color="#7f7f7f",
               label="stopped by ASHA")
    ax.scatter([r["budget"] for r in complete], [r["metric"] for r in complete], color="#1f77b4", label="completed")
    ax.step([r["budget"] for r in front], [r["metric"] for r in front], where="post", color="#d62728", linewidth=1)
    ax.scatter([r["budget"] for r in front], [r["metric"] for r in front], color="#d62728", s=60, label="front", zorder=3)
    for r in front:
        ax.annotate(str(r["design"]), (r["budget"], r["metric"]), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set(xlabel="tuned parameters (% of the pretrained model)", ylabel=metric, title=title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return Path(path)
