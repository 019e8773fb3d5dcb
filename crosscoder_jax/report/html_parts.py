"""The report's HTML pieces shared by its sections: escaping, number formatting, tables."""

from __future__ import annotations

import html
import math
from typing import Any, Callable, Sequence


def esc(x: Any) -> str:
    return html.escape(str(x))


def fmt(v: Any, nd: int = 4) -> str:
    """A table cell: floats to `nd` significant digits (nan as "nan"), anything else as text."""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.{nd}g}"
    return esc(v)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], left: int = 1, cls: str = "",
          cell: Callable[[Any], str] = fmt) -> str:
    """An HTML table; the first `left` columns left-aligned; no header row when every header is empty."""
    h = "".join(f'<th class="{"l" if j < left else ""}">{esc(x)}</th>' for j, x in enumerate(header))
    h = f"<tr>{h}</tr>" if any(header) else ""
    body = "".join("<tr>" + "".join(f'<td class="{"l" if j < left else ""}">{cell(x)}</td>' for j, x in enumerate(r))
                   + "</tr>" for r in rows)
    return f'<table class="{cls}">{h}{body}</table>'
