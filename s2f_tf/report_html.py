"""report.html's building blocks: numbers with their intervals, tables, and matplotlib figures as
PNG data URIs (without the `report` extra, figures that draw nothing). No s2f imports."""

from __future__ import annotations

import base64
import html
import io

import numpy as np

KS = (1, 2, 5, 10)
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")


class _NoFigure:  # a Figure and its axes without matplotlib: every call draws nothing
    def __getattr__(self, name: str):
        return lambda *args, **kwargs: self


def _figure(width: float, height: float):
    try:
        from matplotlib.figure import Figure
    except ImportError:  # the `report` extra is not installed: the tables without their plots
        return _NoFigure()
    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _img(fig, alt: str) -> str:
    if isinstance(fig, _NoFigure):
        return ""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = base64.b64encode(buf.getvalue()).decode()
    return f'<img class="plot" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _pct(x) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{100 * x:.1f}"


def _interval(ci: dict | None, percent: bool = True, digits: int = 1) -> str:
    """'12.3 [10.1, 14.6]' from {"value", "low", "high"}."""
    if not ci:
        return "–"
    scale = 100 if percent else 1
    parts = [ci.get(k) for k in ("value", "low", "high")]
    if parts[0] is None or not np.isfinite(parts[0]):
        return "–"
    text = f"{scale * parts[0]:.{digits}f}"
    if all(p is not None and np.isfinite(p) for p in parts[1:]):
        text += f" <small>[{scale * parts[1]:.{digits}f}, {scale * parts[2]:.{digits}f}]</small>"
    return text


def _speakers(n) -> str:
    return f"{n} speaker" + ("" if n == 1 else "s")


def _table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><tr>{head}</tr>{body}</table>'
