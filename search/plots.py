"""Pareto plots of task metric against tuned-parameter budget, from plain rows (no MLflow, no Optuna here).

A row is a mapping with ``trial``, ``design`` (preset name or label), ``description``, ``hyperparameters`` (the
sampled ones in words, or ""), ``budget`` (%), ``metric``,
``status`` (``Status.COMPLETED`` or ``Status.STOPPED``), ``step`` and ``on_front``. Completed trials are filled
circles, stopped ones grey crosses at the metric they had reached; the front is red, joined by a step line.

Both files are drawn by matplotlib. ``pareto.html`` is the plot as inline SVG where hovering a point shows its
trial, design and dimensions (an SVG ``<title>``: no JavaScript, no network). It is small on purpose: MLflow's
artifact viewer (3.17) shows an empty pane for HTML pages above about a megabyte, and a page that inlines
plotly.js is 4.6 MB (1.9 MB even gzipped), so a plotly page only renders when opened directly.
"""

from __future__ import annotations

import html
import io
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from search.schema import Status

Rows = Sequence[Mapping[str, Any]]
FRONT, COMPLETED, STOPPED = "#d62728", "#1f77b4", "#7f7f7f"


def pareto_png(rows: Rows, metric: str, title: str, path: str | Path) -> Path:
    """The plot as a PNG."""
    _draw(rows, metric, title).savefig(path)
    return Path(path)


def pareto_html(rows: Rows, metric: str, title: str, path: str | Path) -> Path:
    """The plot as a page of inline SVG; hovering a point shows what it is."""
    buffer = io.StringIO()
    _draw(rows, metric, title).savefig(buffer, format="svg")
    svg = buffer.getvalue()
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r'width="[\d.]+pt" height="[\d.]+pt"', 'width="100%"', svg, count=1)  # scales to the pane (viewBox)
    svg = re.sub(r'<g id="point-(\d+)">',  # each point's group, named by _draw: its tooltip goes inside
                 lambda m: m.group(0) + f"<title>{html.escape(_tip(rows[int(m.group(1))], metric))}</title>", svg)
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
            f"<body style='margin:0'>{svg}</body></html>")
    Path(path).write_text(page)
    return Path(path)


def _tip(row: Mapping[str, Any], metric: str) -> str:
    hyper = row.get("hyperparameters")
    return (f"trial {row['trial']} · {row['design']}\n{row.get('description', '')}" + (f"\n{hyper}" if hyper else "")
            + f"\nbudget {row['budget']:.4f}% · {metric} {row['metric']:.4f} at step {row.get('step', '')}")


def _draw(rows: Rows, metric: str, title: str) -> Any:
    """The figure: one scatter per point (its group id ``point-K`` carries the SVG tooltip), the front's step line.
    A bare ``Figure`` (no pyplot): no global backend or figure registry to set up or clean after."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5), dpi=120)
    ax = figure.subplots()
    labelled: set[str] = set()
    for k, row in enumerate(rows):
        kind = "front" if row["on_front"] else "stopped by ASHA" if row["status"] == Status.STOPPED else "completed"
        style = {"front": dict(color=FRONT, s=60, zorder=3), "completed": dict(color=COMPLETED, s=30),
                 "stopped by ASHA": dict(color=STOPPED, marker="x", s=30)}[kind]
        point = ax.scatter([row["budget"]], [row["metric"]], label=None if kind in labelled else kind, **style)
        point.set_gid(f"point-{k}")
        labelled.add(kind)
    front = sorted((r for r in rows if r["on_front"]), key=lambda r: r["budget"])
    ax.step([r["budget"] for r in front], [r["metric"] for r in front], where="post", color=FRONT, linewidth=1)
    ax.margins(y=0.15)  # room above the highest point for its two-line label
    middle = sum(ax.get_xlim()) / 2
    for row in front:  # a label on the right half reads leftwards, so that long ones stay inside the axes
        label = "\n".join(filter(None, (str(row["design"]), row.get("hyperparameters"))))
        right = row["budget"] > middle
        note = ax.annotate(label, (row["budget"], row["metric"]), textcoords="offset points", fontsize=7,
                           xytext=(-4 if right else 4, 4), ha="right" if right else "left")
        note.set_in_layout(False)  # the axes keep their size whatever the labels say
    ax.set(xlabel="tuned parameters (% of the pretrained model)", ylabel=metric, title=title)
    ax.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    return figure
