"""Charts as inline SVG, drawn on the server: readable without JavaScript, nothing fetched.

Every figure is also written as text (an SVG `<title>` per mark, and a caption with the totals), so
a screen reader or a printed page loses nothing. Colours are presentation attributes, not `style`,
so the console's Content-Security-Policy needs no inline styles.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from html import escape
from typing import Final

from markupsafe import Markup

_INK: Final = "#1d2a36"
_MUTED: Final = "#6b7785"
_BAR: Final = "#2f6690"
_OVER: Final = "#b3261e"
_QUOTA: Final = "#d08c00"
_GRID: Final = "#d9dee3"


def _svg(width: int, height: int, label: str, body: list[str]) -> Markup:
    return Markup(  # noqa: S704 - every text in it went through escape() above
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{escape(label)}" font-family="sans-serif" font-size="11">'
        f"<title>{escape(label)}</title>{''.join(body)}</svg>"
    )


def _text(x: float, y: float, text: str, *, anchor: str = "start", fill: str = _INK) -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" fill="{fill}">{escape(text)}</text>'


def daily_small_multiples(days: Sequence[date], series: dict[str, list[int]], *, what: str) -> Markup:
    """One row of daily bars per series (an agreement), all on one scale."""
    row, label_width, bar_gap = 34, 170, 2
    width = 640
    plot = width - label_width - 60
    step = plot / max(len(days), 1)
    top = max((max(values) for values in series.values() if values), default=0)
    height = 24 + row * len(series) + 18
    body = []
    for i, (name, values) in enumerate(series.items()):
        base = 20 + row * (i + 1)
        body.append(_text(0, base - 4, name))
        body.append(
            f'<line x1="{label_width}" y1="{base}" x2="{label_width + plot:.1f}" y2="{base}" '
            f'stroke="{_GRID}"/>'
        )
        for j, value in enumerate(values):
            tall = 0 if top == 0 else (row - 8) * value / top
            x = label_width + j * step
            body.append(
                f'<rect x="{x:.1f}" y="{base - tall:.1f}" width="{max(step - bar_gap, 1):.1f}" '
                f'height="{tall:.1f}" fill="{_BAR}"><title>{escape(name)} {days[j].isoformat()}: '
                f"{value} {escape(what)}</title></rect>"
            )
        body.append(_text(width - 55, base - 4, f"{sum(values):,}", fill=_MUTED))
    if days:
        bottom = 20 + row * len(series) + 14
        body.append(_text(label_width, bottom, days[0].strftime("%d %b")))
        body.append(_text(label_width + plot, bottom, days[-1].strftime("%d %b"), anchor="end"))
    return _svg(width, height, f"{what} per day, {len(days)} days, by agreement", body)


def horizontal_bars(items: Sequence[tuple[str, int]], *, what: str, empty: str) -> Markup:
    """A bar per item, longest first, each labelled with its count."""
    if not items:
        return _svg(640, 30, empty, [_text(0, 18, empty, fill=_MUTED)])
    row, label_width, width = 22, 230, 640
    plot = width - label_width - 70
    top = max(count for _, count in items)
    body = []
    for i, (name, count) in enumerate(items):
        y = 6 + row * i
        wide = 0 if top == 0 else plot * count / top
        body.append(_text(0, y + 13, name))
        body.append(
            f'<rect x="{label_width}" y="{y}" width="{wide:.1f}" height="{row - 6}" fill="{_BAR}">'
            f"<title>{escape(name)}: {count:,} {escape(what)}</title></rect>"
        )
        body.append(_text(label_width + wide + 6, y + 13, f"{count:,}", fill=_MUTED))
    return _svg(width, 10 + row * len(items), f"{what} by code", body)


def quota_bars(items: Sequence[tuple[str, str, int, int | None]], *, empty: str) -> Markup:
    """Distinct people disclosed today per client (name, agreement, count, quota), each row on its own
    scale: a client with a quota fills its row at the quota (the mark), whatever the others' quotas."""
    if not items:
        return _svg(640, 30, empty, [_text(0, 18, empty, fill=_MUTED)])
    row, width = 26, 640
    names = [_clipped(name) for name, _, _, _ in items]
    label_width = min(300, 12 + int(6.4 * max(len(name) for name in names)))
    plot = width - label_width - 110
    unlimited = max((count for _, _, count, quota in items if not quota), default=1) or 1
    body = []
    for i, ((name, agreement, count, quota), shown) in enumerate(zip(items, names, strict=True)):
        y = 6 + row * i
        scale = quota or unlimited
        wide = plot * min(count, scale) / scale
        over = quota is not None and count >= quota
        allowed = f" of {quota:,} allowed" if quota else ", no daily limit"
        body.append(_text(0, y + 14, shown))
        body.append(f'<rect x="{label_width}" y="{y}" width="{wide:.1f}" height="{row - 8}" '
                    f'fill="{_OVER if over else _BAR}"><title>{escape(name)} ({escape(agreement)}): '
                    f"{count:,} people today{allowed}</title></rect>")  # fmt: skip
        if quota:
            x = label_width + plot
            body.append(f'<line x1="{x:.1f}" y1="{y - 2}" x2="{x:.1f}" y2="{y + row - 6}" stroke="{_QUOTA}" '
                        'stroke-width="3"/>')  # fmt: skip
        label = f"{count:,} / {quota:,}" if quota else f"{count:,} (no limit)"
        body.append(_text(label_width + plot + 8, y + 14, label, fill=_OVER if over else _MUTED))
    return _svg(
        width, 10 + row * len(items), "People disclosed today per client, against the daily quota", body
    )


def _clipped(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


LATENCY_BUCKETS: Final = (
    (1, "<1 ms"),
    (2, "1-2"),
    (5, "2-5"),
    (10, "5-10"),
    (20, "10-20"),
    (50, "20-50"),
    (100, "50-100"),
    (float("inf"), ">100 ms"),
)


def latency_histogram(samples_ms: Sequence[float], *, empty: str) -> Markup:
    """How long requests waited for their audit event to commit: a histogram over fixed buckets."""
    if not samples_ms:
        return _svg(640, 30, empty, [_text(0, 18, empty, fill=_MUTED)])
    counts = [0] * len(LATENCY_BUCKETS)
    for sample in samples_ms:
        counts[next(i for i, (upper, _) in enumerate(LATENCY_BUCKETS) if sample < upper)] += 1
    width, height, bottom = 640, 170, 140
    step = width / len(LATENCY_BUCKETS)
    top = max(counts)
    body = [f'<line x1="0" y1="{bottom}" x2="{width}" y2="{bottom}" stroke="{_GRID}"/>']
    for i, ((_, label), count) in enumerate(zip(LATENCY_BUCKETS, counts, strict=True)):
        tall = (bottom - 20) * count / top if top else 0
        x = i * step
        body.append(
            f'<rect x="{x + 6:.1f}" y="{bottom - tall:.1f}" width="{step - 12:.1f}" height="{tall:.1f}" '
            f'fill="{_BAR}"><title>{escape(label)}: {count:,} events</title></rect>'
        )
        body.append(_text(x + step / 2, bottom - tall - 4, f"{count:,}", anchor="middle", fill=_MUTED))
        body.append(_text(x + step / 2, bottom + 16, label, anchor="middle"))
    return _svg(width, height, f"Audit commit latency of the newest {len(samples_ms):,} events", body)


def percentile(samples: Sequence[float], fraction: float) -> float | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
