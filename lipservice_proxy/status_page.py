"""The admin status page (`GET /`): the policy in force, the top patterns, kept versus dropped over time.

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


def chart_svg(points: Sequence[Bucket], step: float) -> str:
    """Stacked steps of kept (bottom) and dropped (top) records, one step per bucket."""
    width = CHART_WIDTH - _PAD_LEFT - _PAD_RIGHT
    height = CHART_HEIGHT - _PAD_TOP - _PAD_BOTTOM
    peak = max((p.kept + p.dropped for p in points), default=0) or 1
    slot = width / max(len(points), 1)

    def y(value: int) -> float:
        return _PAD_TOP + height * (1 - value / peak)

    def outline(values: list[int]) -> list[tuple[float, float]]:
        corners = []
        for index, value in enumerate(values):
            corners += [(_PAD_LEFT + index * slot, y(value)), (_PAD_LEFT + (index + 1) * slot, y(value))]
        return corners

    def area(upper: list[int], lower: list[int]) -> str:
        return " ".join(f"{px:.1f},{py:.1f}" for px, py in [*outline(upper), *reversed(outline(lower))])

    kept = [p.kept for p in points]
    total = [p.kept + p.dropped for p in points]
    left, right, bottom = _PAD_LEFT, CHART_WIDTH - _PAD_RIGHT, CHART_HEIGHT - 6
    label = 'font-size="11"'
    return (
        f'<svg id="kept-dropped-chart" xmlns="http://www.w3.org/2000/svg" width="{CHART_WIDTH}" '
        f'height="{CHART_HEIGHT}" viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" role="img" '
        f'aria-label="kept and dropped log records per {step:g} s">'
        f'<rect x="{left}" y="{_PAD_TOP}" width="{width}" height="{height}" fill="#fff" stroke="#e3e6eb"/>'
        f'<polygon class="dropped" fill="{_DROPPED_COLOUR}" points="{area(total, kept)}"/>'
        f'<polygon class="kept" fill="{_KEPT_COLOUR}" points="{area(kept, [0] * len(kept))}"/>'
        f'<text x="{left - 6}" y="{_PAD_TOP + 10}" text-anchor="end" {label}>{_count(peak)}</text>'
        f'<text x="{left - 6}" y="{_PAD_TOP + height}" text-anchor="end" {label}>0</text>'
        f'<text x="{left}" y="{bottom}" {label}>{_duration(len(points) * step)} ago</text>'
        f'<text x="{right}" y="{bottom}" text-anchor="end" {label}>now</text>'
        "</svg>"
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


def _patterns_section(patterns_view: Mapping[str, Any]) -> str:
    patterns = patterns_view.get("patterns", [])
    if not patterns:
        return "<h2>Top patterns</h2><p class='muted'>No log records yet.</p>"
    rows = []
    for p in patterns:
        anomaly = (p.get("anomaly_kind") or "anomaly") if p.get("anomaly") else ""
        rows.append(
            "<tr>"
            f"<td class='id'><code>{_e(p.get('id', ''))}</code></td>"
            f"<td><code class='template'>{_e(p.get('template', ''))}</code></td>"
            f"<td>{_e(p.get('service', ''))}</td>"
            f"<td class='n'>{_count(int(p.get('received', 0)))}</td>"
            f"<td class='n'>{_count(int(p.get('kept', 0)))}</td>"
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
        "<th>kept</th><th>rate</th><th>rule</th><th>reason</th><th>anomaly</th></tr>"
        f"{''.join(rows)}</table>"
    )


def _ratio(value: object) -> str:
    return f"{100 * float(value):.1f}%" if isinstance(value, int | float) else "-"


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
        ("keep ratio", _ratio(projected.get("keep_ratio")), _ratio(in_force.get("keep_ratio"))),
        (
            "bytes saved",
            _ratio(projected.get("bytes_saved_ratio")),
            _ratio(in_force.get("bytes_saved_ratio")),
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
        f"{_e(_ratio(projected.get('keep_ratio')))}</b> of records and saves "
        f"<b class='projected-bytes-saved'>{_e(_ratio(projected.get('bytes_saved_ratio')))}</b> of bytes "
        f"<span class='muted'>(the policy in force: {_e(_ratio(in_force.get('keep_ratio')))} kept, "
        f"{_e(_ratio(in_force.get('bytes_saved_ratio')))} saved)</span></p>"
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
    proposals: Sequence[Mapping[str, Any]] = (),
    token_field: bool = False,
) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(time.time() if now is None else now))
    state = "ready" if ready else "not ready"
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"{'' if proposals else _REFRESH}<meta name='viewport' content='width=device-width'>"
        f"<title>lipservice-proxy status</title><style>{_STYLE}</style></head><body>"
        f"<h1>lipservice-proxy <span class='muted'>{_e(__version__)}</span></h1>"
        f"<div class='muted'>{_e(state)} &middot; {_e(stamp)} &middot; "
        "<a href='/metrics'>metrics</a> &middot; <a href='/api/v1/patterns'>patterns (JSON)</a> &middot; "
        "<a href='/api/v1/policy'>policy (JSON)</a></div>"
        f"{_warnings(policy_view)}"
        f"<h2>Last {_duration(len(points) * step)}</h2>{_tiles(totals)}"
        f"{chart_svg(points, step)}"
        f"<div class='legend muted'><span style='background:{_KEPT_COLOUR}'></span>kept"
        f"<span style='background:{_DROPPED_COLOUR}'></span>dropped (records per {step:g} s)</div>"
        f"{proposals_section(proposals, token_field)}"
        f"{_policy_section(policy_view)}{_patterns_section(patterns_view)}"
        "</body></html>"
    )
