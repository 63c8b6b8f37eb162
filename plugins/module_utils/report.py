# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fleet report: per-host stats (contract 4, docs/report.md) -> rows, fleet totals, and four renderings.

Pure Python, no Ansible imports, so the callback stays thin and the logic is unit-tested on synthetic fleets.
Every layer publishes ``edgeslim.layers.<layer> = {status, reclaimed_mb, measured_by, attributed_mb, details}``;
the measure stage publishes ``edgeslim.memory.{before,after} = {MemTotal_kb, MemAvailable_kb, boot_id}`` plus
``model`` and ``profile``. Services show up in MemAvailable, boot layers (SWIOTLB, carveouts) in MemTotal.
"""

from __future__ import annotations

import html
import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any
from xml.etree import ElementTree as ET

LAYERS = ("services", "swiotlb", "carveouts")
# Host status, worst first: the first that applies wins.
# not_reached: a canary abort stopped the play before the host's batch started.
STATUS_ORDER = ("unreachable", "rolled_back", "failed", "pending_reboot", "ok", "not_run", "not_reached")
FAILING = ("failed", "rolled_back", "unreachable")
# Layer statuses whose megabytes are not counted: undone, failed, or a plan (check mode changed nothing).
NOT_COUNTED = ("rolled_back", "failed", "planned")


def layer_record(
    status: str,
    measured_by: str,
    details: dict[str, Any],
    reclaimed_mb: float | None = None,
    attributed_mb: float | None = None,
) -> dict[str, Any]:
    """One layer's record as the layers publish it (``edgeslim.layers.<layer>``, docs/report.md)."""
    return {
        "status": status,
        "reclaimed_mb": reclaimed_mb,
        "measured_by": measured_by,
        "attributed_mb": attributed_mb,
        "details": details,
    }


def layer_status(layer: str, status: str, **details: Any) -> dict[str, Any]:
    """A layer's record without figures (a refusal, a skip, a restore): measured by MemAvailable for the services
    layer, by MemTotal for the boot layers."""
    return layer_record(status, "MemAvailable" if layer == "services" else "MemTotal", details)


def _num(value: Any) -> float | None:
    """Stats may arrive as numbers or as templated strings; '', None and junk mean 'not measured'."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _mb(kb: Any) -> float | None:
    n = _num(kb)
    return None if n is None else round(n / 1024.0, 1)


@dataclass
class Row:
    host: str
    model: str = ""
    profile: str = ""
    status: str = "not_run"
    memtotal_before_mb: float | None = None
    memtotal_after_mb: float | None = None
    memavailable_before_mb: float | None = None
    memavailable_after_mb: float | None = None
    reclaimed_mb: dict[str, float | None] = field(default_factory=dict)
    layer_status: dict[str, str] = field(default_factory=dict)
    total_mb: float = 0.0
    pending_reboot: bool = False
    rolled_back: bool = False
    planned: list[str] = field(default_factory=list)  # layers check mode planned (the host counts as ok)
    rebooted_between_snapshots: bool = False
    notes: list[str] = field(default_factory=list)


def build_row(host: str, data: dict[str, Any] | None, outcome: str) -> Row:
    """One host. ``outcome`` comes from Ansible's own stats: ok, failed, unreachable (or skipped), or not_reached."""
    data = data or {}
    row = Row(host=host, model=str(data.get("model") or ""), profile=str(data.get("profile") or ""))
    if outcome == "not_reached":
        row.status = "not_reached"
        row.notes.append("not reached: the rollout stopped before this host's batch")
        return row
    memory = data.get("memory") or {}
    before, after = memory.get("before") or {}, memory.get("after") or {}
    row.memtotal_before_mb = _mb(before.get("MemTotal_kb"))
    row.memtotal_after_mb = _mb(after.get("MemTotal_kb"))
    row.memavailable_before_mb = _mb(before.get("MemAvailable_kb"))
    row.memavailable_after_mb = _mb(after.get("MemAvailable_kb"))
    if before.get("boot_id") and after.get("boot_id") and before["boot_id"] != after["boot_id"]:
        row.rebooted_between_snapshots = True
        row.notes.append("rebooted between snapshots")
    layers = data.get("layers") or {}
    for name in LAYERS:
        layer = layers.get(name)
        if not isinstance(layer, dict):
            continue
        status = str(layer.get("status") or "unknown")
        row.layer_status[name] = status
        mb = _num(layer.get("reclaimed_mb"))
        row.reclaimed_mb[name] = None if mb is None else round(mb, 1)
        if mb is not None and status not in NOT_COUNTED:
            row.total_mb += mb
        row.pending_reboot |= status == "pending_reboot"
        if status == "planned":
            row.planned.append(name)
            row.notes.append(f"{name} planned (check mode: nothing changed)")
        details = layer.get("details")
        reason = details.get("reason") if isinstance(details, dict) else None
        if status == "skipped" and reason:
            row.notes.append(f"{name} skipped: {reason}")
        row.rolled_back |= status == "rolled_back"
        drift = layer.get("drift")
        if isinstance(drift, list):  # what the device shows differently from what the layer applied
            row.notes.extend(f"{name} drift: {sentence}" for sentence in drift)
    row.total_mb = round(row.total_mb, 1)
    if outcome == "unreachable":
        row.status = "unreachable"
    elif row.rolled_back:
        row.status = "rolled_back"
    elif outcome == "failed" or "failed" in row.layer_status.values():
        row.status = "failed"
    elif row.pending_reboot:
        row.status = "pending_reboot"
    elif data.get("status") == "ok" or (outcome == "ok" and (data.get("memory") or row.layer_status)):
        row.status = "ok"
    return row


def build_rows(custom: dict[str, Any], outcomes: dict[str, str]) -> list[Row]:
    """``custom``: host -> its ``edgeslim`` stats; ``outcomes``: host -> ok/failed/unreachable."""
    hosts = sorted(set(custom) | set(outcomes))
    return [build_row(h, custom.get(h), outcomes.get(h, "ok")) for h in hosts]


def progress_line(rows: list[Row], batch: int | None = None, batches: int | None = None, hosts: int = 0) -> str:
    """One line per finished batch: hosts done so far, how many failed, MB reclaimed so far."""
    t = totals(rows)
    done = [r for r in rows if r.status != "not_reached"]
    failed = sum(1 for r in done if r.status in FAILING)
    where = f"batch {batch}/{batches}" if batch and batches else (f"batch {batch}" if batch else "progress")
    of = f"/{hosts}" if hosts else ""
    return (f"edgeslim {where}: {len(done)}{of} hosts done, {len(done) - failed} ok, {failed} failed, "
            f"{t['reclaimed_mb_total']:.0f} MB reclaimed so far")  # fmt: skip


def totals(rows: list[Row]) -> dict[str, Any]:
    by_status = {s: 0 for s in STATUS_ORDER}
    per_layer = dict.fromkeys(LAYERS, 0.0)
    for r in rows:
        by_status[r.status] = by_status.get(r.status, 0) + 1
        for name, mb in r.reclaimed_mb.items():
            if mb is not None and r.layer_status.get(name) not in NOT_COUNTED:
                per_layer[name] += mb
    return {
        "hosts": len(rows),
        "by_status": {k: v for k, v in by_status.items() if v},
        "reclaimed_mb": {k: round(v, 1) for k, v in per_layer.items()},
        "reclaimed_mb_total": round(sum(per_layer.values()), 1),
    }


def run_stats(rows: list[Row]) -> dict[str, Any]:
    """Run-level fleet totals for ``set_stats`` (per_host false), the artifact AWX/AAP hands to the next workflow
    node: every status is present (0 when none), so a condition never meets an undefined key."""
    t = totals(rows)
    return {
        "hosts": t["hosts"],
        "by_status": {s: t["by_status"].get(s, 0) for s in STATUS_ORDER},
        "failed_total": sum(t["by_status"].get(s, 0) for s in FAILING),
        "reclaimed_mb": t["reclaimed_mb"],
        "reclaimed_mb_total": t["reclaimed_mb_total"],
        "complete": not t["by_status"].get("not_reached"),
    }


def _fmt(n: float | None) -> str:
    return "-" if n is None else f"{n:.0f}"


def _pair(a: float | None, b: float | None) -> str:
    return f"{_fmt(a)}>{_fmt(b)}"


HEADERS = ["host", "model", "profile", "MemTotal MB", "MemAvail MB", *LAYERS, "total MB", "status"]


def _cells(r: Row) -> list[str]:
    return [
        r.host,
        r.model,
        r.profile,
        _pair(r.memtotal_before_mb, r.memtotal_after_mb),
        _pair(r.memavailable_before_mb, r.memavailable_after_mb),
        *[_fmt(r.reclaimed_mb.get(name)) for name in LAYERS],
        _fmt(r.total_mb),
        r.status + (" (rebooted)" if r.rebooted_between_snapshots else "") + (" (planned)" if r.planned else ""),
    ]


def _total_cells(t: dict[str, Any]) -> list[str]:
    status = ", ".join(f"{k} {v}" for k, v in t["by_status"].items())
    return [f"FLEET ({t['hosts']})", "", "", "", "", *[_fmt(t["reclaimed_mb"][n]) for n in LAYERS],
            _fmt(t["reclaimed_mb_total"]), status]  # fmt: skip


def render_table(rows: list[Row]) -> str:
    body = [_cells(r) for r in rows] + [_total_cells(totals(rows))]
    widths = [max(len(h), *(len(c[i]) for c in body)) for i, h in enumerate(HEADERS)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    sep = "  ".join("-" * w for w in widths)
    out = [line.format(*HEADERS), sep, *(line.format(*c) for c in body[:-1]), sep, line.format(*body[-1])]
    return "\n".join(s.rstrip() for s in out) + "\n"


def render_json(rows: list[Row]) -> str:
    return json.dumps({"hosts": [asdict(r) for r in rows], "totals": totals(rows)}, indent=2, sort_keys=True) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(rows: list[Row], title: str = "edgeslim: reclaimed memory") -> str:
    t = totals(rows)
    out = [f"### {title}", ""]
    out.append(
        f"**{t['reclaimed_mb_total']:.0f} MB** reclaimed on {t['hosts']} hosts ("
        + ", ".join(f"{k}: {v}" for k, v in t["by_status"].items())
        + ")."
    )
    out += ["", "| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    out += ["| " + " | ".join(_md_escape(c) for c in _cells(r)) + " |" for r in rows]
    out.append("| " + " | ".join(f"**{c}**" if c else "" for c in _total_cells(t)) + " |")
    chart = render_mermaid(rows)
    if chart:
        out += ["", chart.rstrip("\n"), ""]
        out.append(
            f"_Reclaimed MB per host, stacked left to right: {', '.join(LAYERS)}. Megabytes of rolled-back, failed "
            f"and planned layers are not counted; at most {CHART_HOSTS} bars, the last the mean of the other hosts._"
        )
    return "\n".join(out) + "\n"


def render_junit(rows: list[Row], suite: str = "edgeslim.slim") -> str:
    """One testcase per host; failed, rolled back and unreachable hosts are failures."""
    failing = FAILING
    bad = sum(1 for r in rows if r.status in failing)
    skipped = sum(1 for r in rows if r.status == "not_reached")
    ts = ET.Element("testsuite", name=suite, tests=str(len(rows)), failures=str(bad), errors="0", skipped=str(skipped))
    for r in rows:
        case = ET.SubElement(ts, "testcase", classname=f"{suite}.{r.profile or 'none'}", name=r.host)
        props = ET.SubElement(case, "properties")
        for key, value in (("model", r.model), ("reclaimed_mb", str(r.total_mb)),
                           ("pending_reboot", str(r.pending_reboot).lower()), ("status", r.status)):  # fmt: skip
            ET.SubElement(props, "property", name=key, value=value)
        if r.status in failing:
            failure = ET.SubElement(case, "failure", type=r.status, message=f"{r.host}: {r.status}")
            failure.text = "; ".join([f"{k}={v}" for k, v in r.layer_status.items()] + r.notes)
        elif r.status == "not_reached":
            ET.SubElement(case, "skipped", message=f"{r.host}: not reached (the rollout stopped before its batch)")
    return ET.tostring(ts, encoding="unicode", xml_declaration=True) + "\n"


# Pictures ---------------------------------------------------------------------------------------------------------
# One colour per layer (the HTML bars and the Mermaid chart) and per host status (the HTML chips and legend).
LAYER_COLOURS = {"services": "#4c78a8", "swiotlb": "#b279a2", "carveouts": "#72b7b2"}
STATUS_COLOURS = {
    "ok": "#2b8a3e",
    "planned": "#74c0fc",  # ok, but check mode only planned its layers
    "pending_reboot": "#f59f00",
    "rolled_back": "#e8590c",
    "failed": "#c92a2a",
    "unreachable": "#343a40",
    "not_run": "#adb5bd",
    "not_reached": "#dee2e6",
}
CHART_HOSTS = 20  # the Mermaid chart shows the hosts that reclaimed most, the rest as one "others" bar


def counted_mb(row: Row) -> dict[str, float]:
    """The megabytes of each layer that count towards the row's total (not rolled back, failed or planned)."""
    out = {}
    for name in LAYERS:
        mb = row.reclaimed_mb.get(name)
        out[name] = 0.0 if mb is None or row.layer_status.get(name) in NOT_COUNTED else mb
    return out


def status_key(row: Row) -> str:
    """The key of the row's status colour: its status, or ``planned`` for an ok host whose layers were only planned."""
    if row.status == "ok" and row.planned:
        return "planned"
    return row.status if row.status in STATUS_COLOURS else "not_run"


def _nice_ceiling(value: float) -> float:
    """The smallest round number (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 times a power of ten) >= value, the end of
    an axis split in five steps; 1 for nothing."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if step * power >= value:
            return step * power
    return 10 * power  # pragma: no cover - the loop always returns


def _plain(value: float) -> str:
    """A number as Mermaid reads it: digits and at most one decimal, never an exponent."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


_MERMAID_LABEL = re.compile(r"[^A-Za-z0-9._:@/+ (),-]")


def _mermaid_label(text: str, limit: int = 32) -> str:
    """A category label safe inside Mermaid's double quotes and a Markdown code fence."""
    text = _MERMAID_LABEL.sub("_", text)
    return text if len(text) <= limit else text[: limit - 1] + "~"


def chart_series(rows: list[Row], limit: int = CHART_HOSTS) -> tuple[list[str], dict[str, list[float]]]:
    """Categories and per-layer megabytes for the Markdown chart: every host when there are at most ``limit``,
    else the ``limit - 1`` that reclaimed most and one "others (N hosts, mean)" bar with the mean of the rest. Hosts
    that did not end ``ok`` carry their status in the label."""
    ranked = sorted(rows, key=lambda r: (-r.total_mb, r.host))
    shown, rest = (ranked, []) if len(ranked) <= limit else (ranked[: limit - 1], ranked[limit - 1 :])
    labels, series = [], {name: [] for name in LAYERS}
    for row in shown:
        key = status_key(row)
        labels.append(row.host if key == "ok" else f"{row.host} ({key})")
        for name, mb in counted_mb(row).items():
            series[name].append(round(mb, 1))
    if rest:  # their mean, not their sum: one bar N times a host's would flatten every other bar
        labels.append(f"others ({len(rest)} hosts, mean)")
        for name in LAYERS:
            series[name].append(round(sum(counted_mb(r)[name] for r in rest) / len(rest), 1))
    return labels, series


def render_mermaid(rows: list[Row], limit: int = CHART_HOSTS) -> str:
    """A Mermaid ``xychart-beta`` of reclaimed MB per host, stacked by layer (docs/report.md, "The chart").

    xychart has no stacked bars: each ``bar`` line is drawn over the previous ones at the same place. So the bars
    are cumulative, tallest first (services + swiotlb + carveouts, then services + swiotlb, then services) and what
    shows of each is its layer's share; the init directive gives them the layers' colours. Empty for no hosts.
    """
    if not rows:
        return ""
    labels, series = chart_series(rows, limit)
    cumulative, running = [], [0.0] * len(labels)
    for name in LAYERS:
        running = [round(a + b, 1) for a, b in zip(running, series[name])]
        cumulative.append((name, running))
    top = _nice_ceiling(max(cumulative[-1][1]))
    palette = ", ".join(LAYER_COLOURS[layer[0]] for layer in reversed(cumulative))
    init = {"themeVariables": {"xyChart": {"plotColorPalette": palette}}}
    out = [
        "```mermaid",
        "%%{init: " + json.dumps(init) + "}%%",
        "xychart-beta horizontal",
        '    title "Reclaimed MB per host, stacked by layer"',
        "    x-axis [" + ", ".join(f'"{_mermaid_label(label)}"' for label in labels) + "]",
        f'    y-axis "MB" 0 --> {_plain(top)}',
    ]
    for layer in reversed(cumulative):
        out.append("    bar [" + ", ".join(_plain(v) for v in layer[1]) + "]")
    out.append("```")
    return "\n".join(out) + "\n"


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _ink(fill: str) -> str:
    """Black or white text, whichever reads better on ``fill`` (#rrggbb)."""
    r, g, b = (int(fill[i : i + 2], 16) for i in (1, 3, 5))
    return "#111" if 0.299 * r + 0.587 * g + 0.114 * b > 150 else "#fff"


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


HTML_WIDTH = 960  # px of each chart; the page scrolls for long fleets (24 px per host)
_LABEL_W, _CHIP_W, _BAR_X, _BAR_W, _ROW_H, _BAR_H, _AXIS_H = 210, 118, 344, 500, 24, 16, 26

_CSS = """
body{font:14px/1.4 "DejaVu Sans",Arial,sans-serif;color:#212529;margin:24px;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:22px 0 6px}
.headline{font-size:16px;margin:0 0 10px}.muted{color:#6c757d}
.legend{display:flex;flex-wrap:wrap;gap:6px 14px;align-items:center;margin:4px 0}
.legend span{display:inline-flex;align-items:center;gap:5px}
.sw{display:inline-block;width:14px;height:14px;border-radius:2px}
.chip{display:inline-block;padding:1px 8px;border-radius:9px;font-size:12px;white-space:nowrap}
.scroll{overflow:auto;max-width:100%}
svg text{font-family:"DejaVu Sans",Arial,sans-serif;font-size:12px}
table{border-collapse:collapse;margin-top:6px}
th,td{border-bottom:1px solid #dee2e6;padding:3px 8px;text-align:left;vertical-align:top}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
td:first-child{white-space:nowrap}
tfoot td{font-weight:bold;border-top:2px solid #adb5bd}
td.notes{color:#495057;font-size:12px;max-width:360px}
"""


def _chip(key: str, text: str | None = None) -> str:
    fill = STATUS_COLOURS[key]
    return f'<span class="chip" style="background:{fill};color:{_ink(fill)}">{_esc(text or key)}</span>'


def _legend(rows: list[Row]) -> str:
    layers = "".join(f'<span><i class="sw" style="background:{LAYER_COLOURS[n]}"></i>{_esc(n)}</span>' for n in LAYERS)
    counts: dict[str, int] = {}
    for row in rows:
        counts[status_key(row)] = counts.get(status_key(row), 0) + 1
    chips = "".join(f"<span>{_chip(k)} <span class=muted>{counts.get(k, 0)}</span></span>" for k in STATUS_COLOURS)
    return f'<div class="legend"><b>layers</b> {layers}</div><div class="legend"><b>status</b> {chips}</div>'


def _segments(x: float, y: float, height: float, scale: float, parts: dict[str, float], tip: str) -> list[str]:
    """Stacked rectangles, one per layer with megabytes, left to right in layer order."""
    out = []
    for name in LAYERS:
        mb = parts.get(name) or 0.0
        if mb <= 0:
            continue
        width = max(mb * scale, 1.0)
        out.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height}" '
            f'fill="{LAYER_COLOURS[name]}"><title>{_esc(tip)}{_esc(name)} {mb:.0f} MB</title></rect>'
        )
        x += width
    return out


def _axis_steps(top: float) -> int:
    """How many grid steps split ``top`` (a ``_nice_ceiling``) into round ones: 1, 2, 2.5 or 5 times a power of ten."""
    for steps in (5, 4, 6, 8, 3):
        step = top / steps
        mantissa = step / 10 ** math.floor(math.log10(step))
        if any(abs(mantissa - m) < 1e-9 for m in (1, 2, 2.5, 5)):
            return steps
    return 5


def _axis(top: float, y0: float, y1: float) -> list[str]:
    """Vertical grid lines with their MB labels above the bars, from 0 to ``top`` in round steps."""
    out = []
    steps = _axis_steps(top)
    for i in range(steps + 1):
        value = top * i / steps
        x = _BAR_X + _BAR_W * i / steps
        out.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" y2="{y1}" stroke="#e9ecef"/>')
        out.append(f'<text x="{x:.1f}" y="{y0 - 6}" text-anchor="middle" fill="#6c757d">{_plain(value)}</text>')
    return out


def host_chart_svg(rows: list[Row]) -> str:
    """One row per host: name, status chip, its reclaimed MB stacked by layer, the total (inline SVG)."""
    top = _nice_ceiling(max((r.total_mb for r in rows), default=0.0))
    scale = _BAR_W / top
    height = _AXIS_H + _ROW_H * max(len(rows), 1) + 6
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{HTML_WIDTH}" height="{height}" '
        f'viewBox="0 0 {HTML_WIDTH} {height}" role="img" aria-label="reclaimed MB per host">'
    ]
    out += _axis(top, _AXIS_H, height - 4)
    for i, row in enumerate(rows):
        y = _AXIS_H + i * _ROW_H
        mid = y + _ROW_H / 2 + 4
        key = status_key(row)
        fill = STATUS_COLOURS[key]
        out.append(
            f'<text x="{_LABEL_W - 8}" y="{mid:.1f}" text-anchor="end"><title>{_esc(row.host)}</title>'
            f"{_esc(_short(row.host, 30))}</text>"
        )
        out.append(f'<rect x="{_LABEL_W}" y="{y + 4}" width="{_CHIP_W}" height="{_ROW_H - 8}" rx="8" fill="{fill}"/>')
        out.append(
            f'<text x="{_LABEL_W + _CHIP_W / 2}" y="{mid:.1f}" text-anchor="middle" fill="{_ink(fill)}" '
            f'font-size="11">{_esc(key)}</text>'
        )
        parts = counted_mb(row)
        out += _segments(_BAR_X, y + (_ROW_H - _BAR_H) / 2, _BAR_H, scale, parts, f"{row.host}: ")
        end = _BAR_X + sum(max(mb * scale, 1.0) for mb in parts.values() if mb > 0)
        label = f"{row.total_mb:.0f} MB"
        undone = [f"{n} {row.layer_status[n]}" for n in LAYERS if row.layer_status.get(n) in ("failed", "rolled_back")]
        if undone:
            label += " (" + ", ".join(undone) + ")"
        if row.planned:
            label += " (planned: " + ", ".join(row.planned) + ")"
        elif row.status == "not_reached":
            label = "not reached"
        out.append(f'<text x="{end + 6:.1f}" y="{mid:.1f}" fill="#495057">{_esc(label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def fleet_chart_svg(rows: list[Row]) -> str:
    """The fleet totals as one bar stacked by layer, each part labelled with its MB."""
    t = totals(rows)
    total = t["reclaimed_mb_total"]
    width = _BAR_X + _BAR_W - _LABEL_W
    scale = width / total if total > 0 else 0.0
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{HTML_WIDTH}" height="58" viewBox="0 0 {HTML_WIDTH} 58" '
        f'role="img" aria-label="fleet totals">',
        f'<text x="{_LABEL_W - 8}" y="22" text-anchor="end" font-weight="bold">FLEET ({t["hosts"]} hosts)</text>',
        f'<rect x="{_LABEL_W}" y="8" width="{width}" height="20" fill="#f1f3f5"/>',
    ]
    out += _segments(_LABEL_W, 8, 20, scale, t["reclaimed_mb"], "fleet: ")
    out.append(f'<text x="{_LABEL_W + width + 8}" y="22" font-weight="bold">{total:.0f} MB</text>')
    x = _LABEL_W
    for name in LAYERS:
        mb = t["reclaimed_mb"][name]
        out.append(f'<rect x="{x}" y="38" width="12" height="12" fill="{LAYER_COLOURS[name]}"/>')
        out.append(f'<text x="{x + 17}" y="49">{_esc(name)} {mb:.0f} MB</text>')
        x += 170
    out.append("</svg>")
    return "\n".join(out)


def _table(rows: list[Row]) -> str:
    t = totals(rows)
    head = ["host", "model", "profile", "status", *LAYERS, "total MB", "notes"]
    numeric = set(LAYERS) | {"total MB"}
    out = ["<table><thead><tr>" + "".join(f"<th{' class=n' if h in numeric else ''}>{_esc(h)}</th>" for h in head)]
    out.append("</tr></thead><tbody>")
    for row in rows:
        cells = _cells(row)
        layer_cells = "".join(
            f'<td class=n title="{_esc(row.layer_status.get(n, "-"))}">{_esc(_fmt(row.reclaimed_mb.get(n)))}</td>'
            for n in LAYERS
        )
        out.append(
            f"<tr><td>{_esc(row.host)}</td><td>{_esc(row.model)}</td><td>{_esc(row.profile)}</td>"
            f"<td>{_chip(status_key(row), cells[-1])}</td>{layer_cells}<td class=n>{_esc(_fmt(row.total_mb))}</td>"
            f'<td class="notes">{"<br>".join(_esc(n) for n in row.notes)}</td></tr>'
        )
    status = ", ".join(f"{k} {v}" for k, v in t["by_status"].items())
    layer_totals = "".join(f"<td class=n>{_fmt(t['reclaimed_mb'][n])}</td>" for n in LAYERS)
    out.append(
        f"</tbody><tfoot><tr><td>FLEET ({t['hosts']})</td><td></td><td></td><td>{_esc(status)}</td>"
        f"{layer_totals}<td class=n>{_fmt(t['reclaimed_mb_total'])}</td><td></td></tr></tfoot></table>"
    )
    return "\n".join(out)


def render_html(rows: list[Row], title: str = "edgeslim: reclaimed memory") -> str:
    """One self-contained page (inline CSS and SVG, no script, nothing fetched): headline, legend, the fleet totals
    bar, a bar per host stacked by layer with its status colour, and the table. Every text from the fleet
    (host names, models, profiles, notes) is HTML-escaped."""
    t = totals(rows)
    summary = ", ".join(f"{k}: {v}" for k, v in t["by_status"].items()) or "no hosts"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{_esc(title)}</h1>",
        f'<p class="headline"><b>{t["reclaimed_mb_total"]:.0f} MB</b> reclaimed on {t["hosts"]} hosts '
        f"({_esc(summary)}). Megabytes of rolled-back, failed and planned layers are not counted.</p>",
        _legend(rows),
        "<h2>Fleet totals</h2>",
        f'<div class="scroll">{fleet_chart_svg(rows)}</div>',
        "<h2>Reclaimed MB per host</h2>",
        f'<div class="scroll">{host_chart_svg(rows)}</div>' if rows else '<p class="muted">No hosts.</p>',
        "<h2>Hosts</h2>",
        _table(rows),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


RENDERERS = {
    "json": render_json,
    "markdown": render_markdown,
    "junit": render_junit,
    "table": render_table,
    "html": render_html,
}
EXTENSIONS = {"json": "json", "markdown": "md", "junit": "xml", "table": "txt", "html": "html"}
