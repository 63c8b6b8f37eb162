# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fleet report: per-host stats (contract 4, docs/report.md) -> rows, fleet totals, and four renderings.

Pure Python, no Ansible imports, so the callback stays thin and the logic is unit-tested on synthetic fleets.
Every layer publishes ``edgeslim.layers.<layer> = {status, reclaimed_mb, measured_by, attributed_mb, details}``;
the measure stage publishes ``edgeslim.memory.{before,after} = {MemTotal_kb, MemAvailable_kb, boot_id}`` plus
``model`` and ``profile``. Services show up in MemAvailable, boot layers (SWIOTLB, carveouts) in MemTotal.
"""

from __future__ import annotations

import json
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


RENDERERS = {"json": render_json, "markdown": render_markdown, "junit": render_junit, "table": render_table}
EXTENSIONS = {"json": "json", "markdown": "md", "junit": "xml", "table": "txt"}
