"""The admin status page (`GET /`): the policy in force, the top patterns, kept versus dropped over time,
and the read-outs of readouts.py (projected costs, services, anomalies, each pattern's last hour).

Server-rendered HTML with an inline SVG chart: no script, no build step, no asset to fetch; it
refreshes itself every 15 s with a meta tag. Everything that comes from logs or policy files
(templates, services, reasons) is untrusted and goes through `html.escape`, in text and attributes.
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence
from typing import Any

from . import __version__
from .timeline import Bucket

CHART_WIDTH, CHART_HEIGHT = 720, 180
SPARK_WIDTH, SPARK_HEIGHT = 120, 24
PAGE_ANOMALIES = 50  # rows on the page; /api/v1/summary has them all
# the page reloads itself, but not under a person reading a proposal (or typing the admin token)
_REFRESH = "<meta http-equiv='refresh' content='15'>"
PROPOSAL_CHANGES = 25  # rows of a proposal's diff on the page, busiest patterns first
_PAD_LEFT, _PAD_RIGHT, _PAD_TOP, _PAD_BOTTOM = 56, 8, 10, 22
_KEPT_COLOUR, _DROPPED_COLOUR = "#2a9d8f", "#c9ced6"

_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1d2330;background:#fafbfc}
h1{font-size:20px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 8px}
.muted{color:#687083} .tiles{display:flex;gap:12px;flex-wrap:wrap;margin:16px 0}
.tile{background:#fff;border:1px solid #e3e6eb;border-radius:6px;padding:8px 14px;min-width:120px}
.tile b{display:block;font-size:20px}
table{border-collapse:collapse;background:#fff;border:1px solid #e3e6eb}
#patterns,#policy-history{width:100%} td.id code{white-space:nowrap}
th,td{padding:4px 8px;border-bottom:1px solid #eef0f3;text-align:left;vertical-align:top}
th{background:#f3f5f8;font-weight:600} td.n{text-align:right;font-variant-numeric:tabular-nums}
code{font:12px ui-monospace,monospace;word-break:break-all} .anomaly{color:#b42318;font-weight:600}
.warning{background:#fff4e5;border:1px solid #f0b35b;border-radius:6px;padding:8px 14px;margin:12px 0}
.proposal{background:#fff;border:1px solid #f0b35b;border-radius:6px;padding:8px 14px;margin:12px 0}
.proposal table{margin:6px 0} td.rate{white-space:nowrap} .decide{display:inline-block;margin-right:8px}
button.apply{background:#2a9d8f;color:#fff;border:0;border-radius:4px;padding:6px 14px}
button.reject{background:#fff;border:1px solid #c9ced6;border-radius:4px;padding:6px 14px}
.legend span{display:inline-block;width:10px;height:10px;margin:0 4px 0 12px;vertical-align:middle}
#services,#anomalies{width:100%} td.spark{padding:2px 8px} td.spark svg{display:block}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _count(value: int) -> str:
    return f"{value:,}"


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def _size(nbytes: int) -> str:
    if nbytes < 1024:
        return f"{nbytes} B"
    size = nbytes / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


class _StackedSteps:
    """Kept (bottom) and dropped (top) records as two polygons of steps in a box, scaled to the peak."""

    def __init__(
        self, kept: Sequence[int], dropped: Sequence[int], box: tuple[float, float, float, float]
    ) -> None:
        self.kept = list(kept)
        self.total = [k + d for k, d in zip(kept, dropped, strict=True)]
        self.peak = max(self.total, default=0) or 1
        self._left, self._top, self._width, self._height = box
        self._slot = self._width / max(len(self.kept), 1)

    def _y(self, value: int) -> float:
        return self._top + self._height * (1 - value / self.peak)

    def _outline(self, values: list[int]) -> list[tuple[float, float]]:
        corners = []
        for index, value in enumerate(values):
            y = self._y(value)
            corners += [(self._left + index * self._slot, y), (self._left + (index + 1) * self._slot, y)]
        return corners

    def _area(self, upper: list[int], lower: list[int]) -> str:
        corners = [*self._outline(upper), *reversed(self._outline(lower))]
        return " ".join(f"{px:.1f},{py:.1f}" for px, py in corners)

    def polygons(self) -> str:
        dropped = self._area(self.total, self.kept)
        kept = self._area(self.kept, [0] * len(self.kept))
        return (
            f'<polygon class="dropped" fill="{_DROPPED_COLOUR}" points="{dropped}"/>'
            f'<polygon class="kept" fill="{_KEPT_COLOUR}" points="{kept}"/>'
        )


def chart_svg(points: Sequence[Bucket], step: float) -> str:
    """Stacked steps of kept (bottom) and dropped (top) records, one step per bucket."""
    width = CHART_WIDTH - _PAD_LEFT - _PAD_RIGHT
    height = CHART_HEIGHT - _PAD_TOP - _PAD_BOTTOM
    steps = _StackedSteps(
        [p.kept for p in points], [p.dropped for p in points], (_PAD_LEFT, _PAD_TOP, width, height)
    )
    peak = steps.peak
    left, right, bottom = _PAD_LEFT, CHART_WIDTH - _PAD_RIGHT, CHART_HEIGHT - 6
    label = 'font-size="11"'
    return (
        f'<svg id="kept-dropped-chart" xmlns="http://www.w3.org/2000/svg" width="{CHART_WIDTH}" '
        f'height="{CHART_HEIGHT}" viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" role="img" '
        f'aria-label="kept and dropped log records per {step:g} s">'
        f'<rect x="{left}" y="{_PAD_TOP}" width="{width}" height="{height}" fill="#fff" stroke="#e3e6eb"/>'
        f"{steps.polygons()}"
        f'<text x="{left - 6}" y="{_PAD_TOP + 10}" text-anchor="end" {label}>{_count(peak)}</text>'
        f'<text x="{left - 6}" y="{_PAD_TOP + height}" text-anchor="end" {label}>0</text>'
        f'<text x="{left}" y="{bottom}" {label}>{_duration(len(points) * step)} ago</text>'
        f'<text x="{right}" y="{bottom}" text-anchor="end" {label}>now</text>'
        "</svg>"
    )


def spark_svg(kept: Sequence[int], dropped: Sequence[int], step: float) -> str:
    """A pattern's last hour in a table cell: kept under dropped per minute, scaled to its own peak."""
    steps = _StackedSteps(kept, dropped, (0.0, 1.0, SPARK_WIDTH, SPARK_HEIGHT - 2.0))
    title = (
        f"last {_duration(len(kept) * step)}: {_count(sum(kept))} kept, {_count(sum(dropped))} dropped; "
        f"peak {_count(steps.peak)} per {_duration(step)}"
    )
    return (
        f'<svg class="spark" xmlns="http://www.w3.org/2000/svg" '
        f'width="{SPARK_WIDTH}" height="{SPARK_HEIGHT}" '
        f'viewBox="0 0 {SPARK_WIDTH} {SPARK_HEIGHT}" role="img" aria-label="{_e(title)}">'
        f"<title>{_e(title)}</title>"
        f'<rect x="0" y="0" width="{SPARK_WIDTH}" height="{SPARK_HEIGHT}" fill="#fff" stroke="#eef0f3"/>'
        f"{steps.polygons()}</svg>"
    )


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


def _tiles(totals: Bucket) -> str:
    received = totals.received
    saved = totals.bytes_received - totals.bytes_kept
    tiles = [
        ("received", _count(received)),
        ("kept", f"{_count(totals.kept)} ({_percent(totals.kept, received)})"),
        ("dropped", f"{_count(totals.dropped)} ({_percent(totals.dropped, received)})"),
        ("bytes saved", f"{_size(saved)} ({_percent(saved, totals.bytes_received)})"),
    ]
    if totals.rejected:
        tiles.append(("rejected as invalid", _count(totals.rejected)))
    cells = "".join(
        f'<div class="tile"><span class="muted">{_e(name)}</span><b>{_e(value)}</b></div>'
        for name, value in tiles
    )
    return f'<div class="tiles">{cells}</div>'


def _money(value: float) -> str:
    return f"{value:,.2f}"


def _cost_section(summary: Mapping[str, Any]) -> str:
    """Projected costs, only when `admin.price_per_gib` is set."""
    cost = summary.get("cost")
    if not cost:
        return ""
    rows = "".join(
        f"<tr><th>{_e(name)}</th><td class='n'>{cost['gib_per_day'][name]:,.3f}</td>"
        f"<td class='n'>{_money(cost['per_day'][name])}</td>"
        f"<td class='n'>{_money(cost['per_month'][name])}</td>"
        "</tr>"
        for name in ("received", "kept", "saved")
    )
    window = float(cost["window_seconds"])
    rough = "; under 10 min of traffic, a rough figure" if window < 600 else ""
    return (
        "<h2>Cost</h2>"
        f"<p class='muted'>Projected from the bytes of the last {_e(_duration(window))} "
        f"at {_e(format(cost['price_per_gib'], 'g'))} per GiB (a month is 30 days{rough}).</p>"
        "<table id='cost'><tr><th></th><th>GiB per day</th><th>per day</th><th>per month</th></tr>"
        f"{rows}</table>"
    )


def percent(value: object) -> str:
    """A ratio as a percentage; "-" when there is none (nothing received)."""
    return f"{100 * float(value):.1f}%" if isinstance(value, int | float) else "-"


def _services_section(summary: Mapping[str, Any]) -> str:
    services = summary.get("services", [])
    if not services:
        return ""
    rows = "".join(
        f"<tr><td>{_e(s['service'])}</td><td class='n'>{_count(s['received'])}</td>"
        f"<td class='n'>{_count(s['kept'])}</td><td class='n'>{_count(s['dropped'])}</td>"
        f"<td class='n'>{percent(s['keep_ratio'])}</td><td class='n'>{_e(_size(s['bytes_received']))}</td>"
        f"<td class='n'>{_e(_size(s['bytes_kept']))}</td>"
        f"<td class='n'>{_e(_size(s['bytes_saved']))}</td></tr>"
        for s in services
    )
    return (
        "<h2>Services <span class='muted'>(last hour)</span></h2>"
        "<table id='services'><tr><th>service</th><th>received</th><th>kept</th><th>dropped</th>"
        "<th>keep ratio</th><th>bytes received</th><th>bytes kept</th><th>bytes saved</th></tr>"
        f"{rows}</table>"
    )


def _boost_text(boost: Mapping[str, Any] | None) -> str:
    if boost is None:
        return "declined: the boost budget (anomaly_boost.max_share) was spent"
    state = "running" if boost.get("running") else "no longer running"
    return f"rate {format(float(boost['rate']), 'g')} until {boost['until']} ({state})"


def _anomalies_section(summary: Mapping[str, Any]) -> str:
    anomalies = summary.get("anomalies", [])
    if not anomalies:
        return "<h2>Anomalies <span class='muted'>(last hour)</span></h2><p class='muted'>None.</p>"
    rows = []
    for a in anomalies[:PAGE_ANOMALIES]:
        patterns = list(a.get("patterns", []))
        shown = ", ".join(str(p) for p in patterns[:3]) + (
            f" and {len(patterns) - 3} more" if len(patterns) > 3 else ""
        )
        rows.append(
            f"<tr><td>{_e(a.get('detected_at', ''))}</td><td class='anomaly'>{_e(a.get('kind', ''))}</td>"
            f"<td>{_e(a.get('service', ''))}</td><td><code>{_e(shown)}</code></td>"
            f"<td>{_e(a.get('message', ''))}</td><td>{_e(_boost_text(a.get('boost')))}</td></tr>"
        )
    more = len(anomalies) - len(rows)
    more_html = f"<p class='muted'>{more} older ones in <a href='/api/v1/summary'>the summary</a>.</p>"
    return (
        f"<h2>Anomalies <span class='muted'>(last hour: {len(anomalies)})</span></h2>"
        "<table id='anomalies'><tr><th>detected at</th><th>kind</th><th>service</th><th>patterns</th>"
        f"<th>what</th><th>boost</th></tr>{''.join(rows)}</table>{more_html if more else ''}"
    )


def _warnings(policy_view: Mapping[str, Any]) -> str:
    """What the operator should fix (a policy file that does not exist), above everything else."""
    return "".join(f"<p class='warning'>&#9888; {_e(text)}</p>" for text in policy_view.get("warnings", []))


def _policy_section(policy_view: Mapping[str, Any]) -> str:
    current: Mapping[str, Any] = policy_view.get("current", {})
    rates = current.get("severity_rates", {})
    rate_cells = "".join(f"<th>{_e(name)}</th><td class='n'>{_e(rate)}</td>" for name, rate in rates.items())
    first = current.get("first_per_window", {})
    facts = [
        ("version", current.get("version")),
        ("generated by", current.get("generated_by")),
        ("generated at", current.get("generated_at") or "-"),
        ("source", policy_view.get("source", "-")),
        ("pattern rules", len(current.get("patterns", []))),
        ("exemptions", len(current.get("exemptions", []))),
        ("first per window", f"{first.get('count', '-')} per {_duration(float(first.get('window', 0)))}"),
    ]
    fact_rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts)
    reasoning = current.get("reasoning")
    reasoning_html = f"<p><b>Reasoning:</b> {_e(reasoning)}</p>" if reasoning else ""
    history = policy_view.get("history", [])
    history_rows = "".join(
        f"<tr><td class='n'>{_e(h.get('version', '-'))}</td><td>{_e(h.get('generated_by', '-'))}</td>"
        f"<td>{_e(h.get('generated_at') or '-')}</td><td>{_e(h.get('reasoning') or '')}</td></tr>"
        for h in history
    )
    history_html = (
        "<h3>Previous versions</h3><table id='policy-history'><tr><th>version</th><th>generated by</th>"
        f"<th>generated at</th><th>reasoning</th></tr>{history_rows}</table>"
        if history
        else "<p class='muted'>No previous versions in history/.</p>"
    )
    return (
        "<h2>Policy in force</h2>"
        f"<table id='policy'>{fact_rows}</table>{reasoning_html}"
        f"<p></p><table id='severity-rates'><tr>{rate_cells}</tr></table>{history_html}"
    )


def _patterns_section(patterns_view: Mapping[str, Any], summary: Mapping[str, Any]) -> str:
    patterns = patterns_view.get("patterns", [])
    if not patterns:
        return "<h2>Top patterns</h2><p class='muted'>No log records yet.</p>"
    volume = summary.get("pattern_volume", {})
    step = float(volume.get("step_seconds", 60.0))
    series = {(v["service"], v["id"]): v for v in volume.get("patterns", [])}
    rows = []
    for p in patterns:
        anomaly = (p.get("anomaly_kind") or "anomaly") if p.get("anomaly") else ""
        history = series.get((p.get("service", ""), p.get("id", "")))
        spark = spark_svg(history["kept"], history["dropped"], step) if history else ""
        rows.append(
            "<tr>"
            f"<td class='id'><code>{_e(p.get('id', ''))}</code></td>"
            f"<td><code class='template'>{_e(p.get('template', ''))}</code></td>"
            f"<td>{_e(p.get('service', ''))}</td>"
            f"<td class='n'>{_count(int(p.get('received', 0)))}</td>"
            f"<td class='n'>{_count(int(p.get('kept', 0)))}</td>"
            f"<td class='spark'>{spark}</td>"
            f"<td class='n'>{_e(format(float(p.get('rate', 1.0)), '.3g'))}</td>"
            f"<td>{_e(p.get('rule', ''))}</td>"
            f"<td>{_e(p.get('reason') or '')}</td>"
            f"<td class='anomaly'>{_e(anomaly)}</td>"
            "</tr>"
        )
    total = patterns_view.get("total_patterns", len(patterns))
    return (
        f"<h2>Top patterns <span class='muted'>({len(patterns)} of {_e(total)})</span></h2>"
        "<table id='patterns'><tr><th>id</th><th>template</th><th>service</th><th>received</th>"
        "<th>kept</th><th>last hour</th><th>rate</th><th>rule</th><th>reason</th><th>anomaly</th></tr>"
        f"{''.join(rows)}</table>"
    )


def _proposal_form(proposal_id: str, action: str, token_field: bool) -> str:
    token = (
        "<input type='password' name='token' placeholder='admin token' required autocomplete='off'>"
        if token_field
        else ""
    )
    return (
        f"<form method='post' action='/proposals/{_e(proposal_id)}/{action}' class='decide'>"
        f"{token}<button type='submit' name='action' value='{action}' class='{action}'>"
        f"{action.capitalize()}</button></form>"
    )


def _proposal(p: Mapping[str, Any], token_field: bool) -> str:
    projected: Mapping[str, Any] = p.get("projected", {})
    in_force: Mapping[str, Any] = p.get("in_force", {})
    rows = [
        ("records received", _count(int(projected.get("records_received", 0))), None),
        (
            "records kept",
            _count(int(projected.get("records_kept", 0))),
            _count(int(in_force.get("records_kept", 0))),
        ),
        ("keep ratio", percent(projected.get("keep_ratio")), percent(in_force.get("keep_ratio"))),
        (
            "bytes saved",
            percent(projected.get("bytes_saved_ratio")),
            percent(in_force.get("bytes_saved_ratio")),
        ),
        ("ERROR+ kept", _count(int(projected.get("error_and_above_kept", 0))), None),
        ("kept as first of a window", _count(int(projected.get("first_per_window_kept", 0))), None),
    ]
    effect = "".join(
        f"<tr><th>{_e(name)}</th><td class='n'>{_e(now if now is not None else '')}</td>"
        f"<td class='n'>{_e(value)}</td></tr>"
        for name, value, now in rows
    )
    severities = "".join(
        f"<tr><th>{_e(name)}</th><td class='n'>{_count(int(level.get('received', 0)))}</td>"
        f"<td class='n'>{_count(int(level.get('kept', 0)))}</td></tr>"
        for name, level in projected.get("per_severity", {}).items()
    )
    severity_changes = "".join(
        f"<tr><td colspan='2'>all {_e(c.get('severity', ''))} records without a pattern rule</td>"
        f"<td class='n rate'>{_e(format(float(c.get('from_rate', 1.0)), '.3g'))} &rarr; "
        f"{_e(format(float(c.get('to_rate', 1.0)), '.3g'))}</td><td>severity rate</td></tr>"
        for c in p.get("severity_changes", [])
    )
    all_changes = p.get("changes", [])
    changes = "".join(
        f"<tr><td class='id'><code>{_e(c.get('pattern_id', ''))}</code></td>"
        f"<td><code class='template'>{_e(c.get('template', ''))}</code></td>"
        f"<td class='n rate'>{_e(format(float(c.get('from_rate', 1.0)), '.3g'))} &rarr; "
        f"{_e(format(float(c.get('to_rate', 1.0)), '.3g'))}</td><td>{_e(c.get('reason', ''))}</td></tr>"
        for c in all_changes[:PROPOSAL_CHANGES]
    )
    if len(all_changes) > PROPOSAL_CHANGES:
        more = len(all_changes) - PROPOSAL_CHANGES
        changes += f"<tr><td colspan='4' class='muted'>and {more} more (the API lists them all)</td></tr>"
    proposal_id = str(p.get("id", ""))
    return (
        f"<div class='proposal' id='proposal-{_e(proposal_id)}'>"
        f"<p><b>{_e(proposal_id)}</b> <span class='muted'>by {_e(p.get('generated_by', '-'))} at "
        f"{_e(p.get('created_at', '-'))}, over the last "
        f"{_duration(float(projected.get('window_seconds', 0)))} of traffic</span></p>"
        f"<p class='savings'>Projected: keeps <b class='projected-keep-ratio'>"
        f"{_e(percent(projected.get('keep_ratio')))}</b> of records and saves "
        f"<b class='projected-bytes-saved'>{_e(percent(projected.get('bytes_saved_ratio')))}</b> of bytes "
        f"<span class='muted'>(the policy in force: {_e(percent(in_force.get('keep_ratio')))} kept, "
        f"{_e(percent(in_force.get('bytes_saved_ratio')))} saved)</span></p>"
        "<table class='effect'><tr><th></th><th>in force</th><th>proposed</th></tr>"
        f"{effect}</table>"
        "<table class='per-severity'><tr><th>severity</th><th>received</th><th>kept (proposed)</th></tr>"
        f"{severities}</table>"
        f"<p><b>Reasoning:</b> {_e(p.get('reasoning') or '')}</p>"
        "<table class='changes'><tr><th>pattern</th><th>template</th><th>rate</th><th>reason</th></tr>"
        f"{severity_changes}{changes}</table>"
        f"<div class='actions'>{_proposal_form(proposal_id, 'apply', token_field)}"
        f"{_proposal_form(proposal_id, 'reject', token_field)}</div></div>"
    )


def proposals_section(proposals: Sequence[Mapping[str, Any]], token_field: bool) -> str:
    """The open proposals (analysis.mode: propose) with their diff, projected effect and forms."""
    if not proposals:
        return ""
    return (
        "<h2 id='proposals'>Proposals awaiting a decision</h2>"
        "<p class='muted'>The page does not refresh itself while a proposal is open.</p>"
    ) + "".join(_proposal(p, token_field) for p in proposals)


def render_status_page(
    *,
    ready: bool,
    policy_view: Mapping[str, Any],
    patterns_view: Mapping[str, Any],
    points: Sequence[Bucket],
    totals: Bucket,
    step: float,
    now: float | None = None,
    summary: Mapping[str, Any] | None = None,
    proposals: Sequence[Mapping[str, Any]] = (),
    token_field: bool = False,
) -> str:
    summary = summary or {}
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(time.time() if now is None else now))
    state = "ready" if ready else "not ready"
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"{'' if proposals else _REFRESH}<meta name='viewport' content='width=device-width'>"
        f"<title>lipservice-proxy status</title><style>{_STYLE}</style></head><body>"
        f"<h1>lipservice-proxy <span class='muted'>{_e(__version__)}</span></h1>"
        f"<div class='muted'>{_e(state)} &middot; {_e(stamp)} &middot; "
        "<a href='/metrics'>metrics</a> &middot; <a href='/api/v1/patterns'>patterns (JSON)</a> &middot; "
        "<a href='/api/v1/policy'>policy (JSON)</a> &middot; "
        "<a href='/api/v1/summary'>summary (JSON)</a></div>"
        f"{_warnings(policy_view)}"
        f"<h2>Last {_duration(len(points) * step)}</h2>{_tiles(totals)}"
        f"{chart_svg(points, step)}"
        f"<div class='legend muted'><span style='background:{_KEPT_COLOUR}'></span>kept"
        f"<span style='background:{_DROPPED_COLOUR}'></span>dropped (records per {step:g} s)</div>"
        f"{proposals_section(proposals, token_field)}"
        f"{_cost_section(summary)}"
        f"{_services_section(summary)}"
        f"{_anomalies_section(summary)}"
        f"{_policy_section(policy_view)}{_patterns_section(patterns_view, summary)}"
        "</body></html>"
    )
