"""The console's charts: well-formed SVG, every figure also in text, nothing unescaped."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import date, timedelta

from gateway.console import charts

SVG = "{http://www.w3.org/2000/svg}"
DAYS = [date(2026, 11, 1) + timedelta(days=n) for n in range(3)]


def _parsed(markup: str) -> ET.Element:
    return ET.fromstring(str(markup))  # noqa: S314 - our own output, parsed to check it is well formed


def test_daily_bars_are_on_one_scale_and_titled_with_their_counts() -> None:
    svg = _parsed(
        charts.daily_small_multiples(DAYS, {"police": [0, 5, 10], "dwp": [10, 0, 0]}, what="people")
    )
    bars = svg.findall(f"{SVG}rect")
    heights = [float(bar.get("height", "0")) for bar in bars]
    assert len(bars) == 6 and heights[2] == heights[3] == max(heights) and heights[0] == 0
    assert heights[1] == max(heights) / 2
    titles = [bar.find(f"{SVG}title").text for bar in bars]  # type: ignore[union-attr]
    assert titles[1] == "police 2026-11-02: 5 people"


def test_labels_are_escaped() -> None:
    hostile = '<script>alert("x")</script>'
    markup = str(charts.horizontal_bars([(hostile, 3)], what="refusals", empty="none"))
    assert "<script>" not in markup and "&lt;script&gt;" in markup
    assert _parsed(markup).find(f"{SVG}text") is not None


def test_quota_bars_mark_the_quota_and_flag_a_client_at_it() -> None:
    svg = _parsed(charts.quota_bars([("a", "police", 50, 50), ("b", "dwp", 10, None)], empty="none"))
    lines = svg.findall(f"{SVG}line")
    assert len(lines) == 1  # only the client with a quota has a mark
    first, second = svg.findall(f"{SVG}rect")
    assert first.get("fill") != second.get("fill")  # at the quota: drawn in the warning colour
    assert "no daily limit" in (second.find(f"{SVG}title").text or "")  # type: ignore[union-attr]
    assert first.get("width") == second.get("width")  # each row on its own scale: both full


def test_long_client_names_are_clipped_and_kept_whole_in_the_title() -> None:
    name = "mash-safeguarding-344355b270e0-and-a-much-longer-tail"
    svg = _parsed(charts.quota_bars([(name, "mash-safeguarding", 3, 200)], empty="none"))
    assert all(len(text.text or "") <= 40 for text in svg.findall(f"{SVG}text"))
    rect = svg.find(f"{SVG}rect")
    assert rect is not None and float(rect.get("x", "0")) > 6.4 * 39
    assert name in (rect.find(f"{SVG}title").text or "")  # type: ignore[union-attr]


def test_the_latency_histogram_counts_every_sample_once() -> None:
    samples = [0.5, 1.5, 1.7, 7.0, 250.0]
    svg = _parsed(charts.latency_histogram(samples, empty="none"))
    counts = [
        int((bar.find(f"{SVG}title").text or "").split(": ")[1].split()[0])
        for bar in svg.findall(f"{SVG}rect")
    ]  # type: ignore[union-attr]
    assert sum(counts) == len(samples) and counts[1] == 2 and counts[-1] == 1
    assert charts.percentile(samples, 0.5) == 1.7 and charts.percentile([], 0.5) is None


def test_an_empty_chart_says_so() -> None:
    assert "Nothing yet" in str(charts.horizontal_bars([], what="x", empty="Nothing yet"))
