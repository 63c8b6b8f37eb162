"""Fleet report: rows, totals and the four renderings, on small and 1,000-host synthetic fleets."""

from __future__ import annotations

import json
import re
from xml.etree import ElementTree as ET

from ansible_collections.edgeslim.jetson.plugins.module_utils import report


def host_stats(services=800.0, swiotlb=None, status="applied", boot=("b1", "b1"), model="Orin Nano", sw_status=None):
    layers = {"services": {"status": status, "reclaimed_mb": services, "measured_by": "MemAvailable"}}
    if swiotlb is not None or sw_status:
        layers["swiotlb"] = {"status": sw_status or "applied", "reclaimed_mb": swiotlb, "measured_by": "MemTotal"}
    return {
        "model": model,
        "profile": "warehouse_robot",
        "memory": {
            "before": {"MemTotal_kb": 7802880, "MemAvailable_kb": 5000000, "boot_id": boot[0]},
            "after": {"MemTotal_kb": 7802880, "MemAvailable_kb": 5819200, "boot_id": boot[1]},
        },
        "layers": layers,
        "status": "ok",
    }


def test_ok_host_row():
    row = report.build_row("r1", host_stats(services=799.4, swiotlb=60.0), "ok")
    assert row.status == "ok"
    assert row.total_mb == 859.4
    assert row.memtotal_before_mb == 7620.0
    assert row.memavailable_after_mb == round(5819200 / 1024, 1)
    assert not row.rebooted_between_snapshots


def test_carveouts_drift_is_a_note_of_the_row():
    stats = host_stats()
    stats["layers"]["carveouts"] = {"status": "drift", "reclaimed_mb": None, "drift": ["carveout X present again"]}
    row = report.build_row("d", stats, "ok")
    assert row.layer_status["carveouts"] == "drift" and row.status == "ok"
    assert row.notes == ["carveouts drift: carveout X present again"]
    stats["layers"]["carveouts"]["drift"] = None  # no baseline: nothing claimed either way
    assert report.build_row("d", stats, "ok").notes == []


def test_a_skipped_layer_carries_its_reason():
    stats = host_stats(sw_status="skipped")
    stats["layers"]["swiotlb"]["details"] = {"reason": "UEFI Secure Boot is on"}
    row = report.build_row("r1", stats, "ok")
    assert row.status == "ok" and row.layer_status["swiotlb"] == "skipped"
    assert row.notes == ["swiotlb skipped: UEFI Secure Boot is on"]
    assert json.loads(report.render_json([row]))["hosts"][0]["notes"] == row.notes


def test_rolled_back_host_counts_as_failure_and_reclaims_nothing():
    row = report.build_row("r2", host_stats(services=None, status="rolled_back"), "failed")
    assert row.status == "rolled_back"
    assert row.rolled_back
    assert row.total_mb == 0


def test_pending_reboot_and_reboot_detection():
    row = report.build_row("r3", host_stats(swiotlb=None, sw_status="pending_reboot", boot=("a", "b")), "ok")
    assert row.status == "pending_reboot"
    assert row.pending_reboot
    assert row.rebooted_between_snapshots
    assert "rebooted" in report.render_table([row])


def test_unreachable_and_silent_hosts():
    rows = report.build_rows({"a": host_stats()}, {"a": "ok", "b": "unreachable", "c": "failed"})
    assert [r.status for r in rows] == ["ok", "unreachable", "failed"]
    assert rows[1].memtotal_before_mb is None
    assert "-" in report.render_table(rows).splitlines()[3]


def test_string_numbers_and_junk_are_tolerated():
    stats = host_stats()
    stats["layers"]["services"]["reclaimed_mb"] = "812.5"
    stats["memory"]["after"]["MemTotal_kb"] = "n/a"
    row = report.build_row("s", stats, "ok")
    assert row.total_mb == 812.5
    assert row.memtotal_after_mb is None


def test_totals_and_renderings():
    rows = report.build_rows(
        {"a": host_stats(800), "b": host_stats(700, swiotlb=60), "c": host_stats(None, status="rolled_back")},
        {"a": "ok", "b": "ok", "c": "failed"},
    )
    t = report.totals(rows)
    assert t["reclaimed_mb"] == {"services": 1500.0, "swiotlb": 60.0, "carveouts": 0.0}
    assert t["reclaimed_mb_total"] == 1560.0
    assert t["by_status"] == {"rolled_back": 1, "ok": 2}
    doc = json.loads(report.render_json(rows))
    assert doc["totals"]["reclaimed_mb_total"] == 1560.0 and len(doc["hosts"]) == 3
    md = report.render_markdown(rows).splitlines()
    table = [line for line in md if line.startswith("|")]
    assert len({line.count("|") for line in table}) == 1  # every row has the header's column count
    assert "**1560 MB**" in md[2]
    suite = ET.fromstring(report.render_junit(rows).split("?>", 1)[1])
    assert suite.get("tests") == "3" and suite.get("failures") == "1"
    failed = [c for c in suite.iter("testcase") if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["c"]


def test_thousand_hosts():
    custom = {f"h{i:04d}": host_stats(services=800 + i % 7) for i in range(1000)}
    outcomes = {h: ("failed" if h.endswith("7") else "ok") for h in custom}
    rows = report.build_rows(custom, outcomes)
    t = report.totals(rows)
    assert t["hosts"] == 1000 and t["by_status"]["failed"] == 100
    table = report.render_table(rows)
    assert len(table.splitlines()) == 1000 + 4
    assert ET.fromstring(report.render_junit(rows).split("?>", 1)[1]).get("failures") == "100"


# Pictures: the Mermaid chart of the Markdown report and the HTML report ------------------------------------------
MERMAID_LINE = re.compile(
    r'^(```mermaid|```|%%\{init: .*\}%%|xychart-beta horizontal|    title "[^"]*"|'
    r'    x-axis \[("[^"`\n]*", )*"[^"`\n]*"\]|    y-axis "MB" 0 --> \d+(\.\d)?|    bar \[(\d+(\.\d)?, )*\d+(\.\d)?\])$'
)


def mermaid_block(md: str) -> list[str]:
    start = md.index("```mermaid")
    end = md.index("```", start + 3)
    return md[start : end + 3].splitlines()


def chart_parts(lines: list[str]) -> tuple[list[str], float, list[list[float]]]:
    """Categories, the y-axis end and the bar series, read back from the chart text (Mermaid's xychart grammar:
    quoted categories, plain decimals, no exponent)."""
    for line in lines:
        assert MERMAID_LINE.match(line), line
    labels = re.findall(r'"([^"]*)"', next(x for x in lines if x.startswith("    x-axis")))
    top = float(next(x for x in lines if x.startswith("    y-axis")).rsplit(" ", 1)[1])
    bars = [[float(v) for v in x[9:-1].split(", ")] for x in lines if x.startswith("    bar [")]
    return labels, top, bars


def test_mermaid_chart_is_cumulative_tallest_first_in_layer_colours():
    rows = report.build_rows({"a": host_stats(800, swiotlb=60), "b": host_stats(700)}, {"a": "ok", "b": "ok"})
    rows[0].reclaimed_mb["carveouts"], rows[0].layer_status["carveouts"] = 98.0, "applied"
    md = report.render_markdown(rows)
    assert md.index("| **FLEET (2)**") < md.index("```mermaid")  # after the table
    lines = mermaid_block(md)
    labels, top, bars = chart_parts(lines)
    assert labels == ["a", "b"] and top >= 958
    # Drawn in order, each over the previous: the total, services + swiotlb, services.
    assert bars == [[958.0, 700.0], [860.0, 700.0], [800.0, 700.0]]
    palette = json.loads(lines[1][len("%%{init: ") : -len("}%%")])["themeVariables"]["xyChart"]["plotColorPalette"]
    assert palette.split(", ") == [report.LAYER_COLOURS[n] for n in ("carveouts", "swiotlb", "services")]


def test_mermaid_chart_no_hosts_one_host_and_check_mode():
    assert report.render_mermaid([]) == ""
    assert "```mermaid" not in report.render_markdown([])
    one = report.build_rows({"solo": host_stats(812.5)}, {"solo": "ok"})
    labels, top, bars = chart_parts(mermaid_block(report.render_markdown(one)))
    assert labels == ["solo"] and bars == [[812.5], [812.5], [812.5]] and top == 1000
    stats = host_stats(0.0, status="unchanged")
    stats["layers"]["swiotlb"] = {"status": "planned", "reclaimed_mb": None, "attributed_mb": 60.0}
    stats["layers"]["carveouts"] = {"status": "planned", "reclaimed_mb": 12.0}
    planned = report.build_rows({"r1": stats}, {"r1": "ok"})
    labels, top, bars = chart_parts(mermaid_block(report.render_markdown(planned)))
    assert labels == ["r1 (planned)"] and bars == [[0.0], [0.0], [0.0]] and top == 1  # a plan reclaims nothing


def test_mermaid_chart_caps_hosts_and_marks_failures():
    custom = {f"robot-{i:03d}": host_stats(services=500 + i) for i in range(200)}
    custom["robot-007"] = host_stats(services=None, status="rolled_back")
    outcomes = dict.fromkeys(custom, "ok")
    outcomes["robot-007"] = "failed"
    outcomes["robot-300"] = "not_reached"
    rows = report.build_rows(custom, outcomes)
    labels, top, bars = chart_parts(mermaid_block(report.render_markdown(rows)))
    assert len(labels) == report.CHART_HOSTS and labels[0] == "robot-199" and labels[-1] == "others (182 hosts, mean)"
    rest = [r for r in rows if r.host not in labels]
    assert bars[2][-1] == round(sum(r.total_mb for r in rest) / len(rest), 1)  # the mean, not the sum
    assert top < 1000  # so the others bar does not flatten the rest
    few = report.build_rows(
        {h: custom[h] for h in ("robot-001", "robot-007")}, {"robot-007": "failed", "x": "not_reached"}
    )
    labels = chart_parts(mermaid_block(report.render_markdown(few)))[0]
    assert labels == ["robot-001", "robot-007 (rolled_back)", "x (not_reached)"]


def test_mermaid_labels_cannot_break_the_chart_or_the_fence():
    rows = report.build_rows({'evil"host`|x```;%%': host_stats(1e7)}, {})
    lines = mermaid_block(report.render_markdown(rows))
    labels, top, bars = chart_parts(lines)
    assert labels == ["evil_host__x______"]  # " ` | ``` ; %% -> _
    assert '    x-axis ["a_b"]' in report.render_mermaid(report.build_rows({"a\nb": host_stats()}, {})).splitlines()
    assert bars[0] == [10000000.0] and top == 10000000 and "e+" not in "\n".join(lines)


def test_counted_mb_and_status_key():
    row = report.build_row("r", host_stats(services=800, swiotlb=60, sw_status="rolled_back"), "failed")
    assert report.counted_mb(row) == {"services": 800.0, "swiotlb": 0.0, "carveouts": 0.0}
    assert report.status_key(row) == "rolled_back"
    assert set(report.STATUS_COLOURS) >= set(report.STATUS_ORDER) | {"planned"}
    assert not set(report.STATUS_COLOURS.values()) & set(report.LAYER_COLOURS.values())


def svg_rects(svg: str) -> list[dict[str, str]]:
    root = ET.fromstring(svg)  # well-formed XML, as inline SVG must be
    return [e.attrib for e in root.iter("{http://www.w3.org/2000/svg}rect")]


def test_html_report_bars_per_layer_totals_and_escaping():
    custom = {
        "robot-01": host_stats(services=861.2, swiotlb=60.0),
        "<script>alert(1)</script>": host_stats(services=700.0),
        "robot-03": host_stats(services=None, status="rolled_back"),
    }
    custom["robot-01"]["layers"]["carveouts"] = {"status": "applied", "reclaimed_mb": 98.0}
    custom["robot-03"]["layers"]["services"]["details"] = {"reason": "x"}
    custom["robot-03"]["layers"]["carveouts"] = {"status": "drift", "drift": ["<b>carveout</b> & back"]}
    rows = report.build_rows(custom, {"robot-03": "failed", "robot-04": "not_reached"})
    page = report.render_html(rows)
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and "<b>carveout" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;b&gt;carveout&lt;/b&gt; &amp; back" in page
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "")  # nothing fetched
    fills = [r.get("fill") for r in svg_rects(report.host_chart_svg(rows))]
    colours = report.LAYER_COLOURS
    assert fills.count(colours["services"]) == 2 and fills.count(colours["swiotlb"]) == 1
    assert fills.count(colours["carveouts"]) == 1
    for status in ("ok", "rolled_back", "not_reached"):
        assert report.STATUS_COLOURS[status] in fills
    fleet = report.fleet_chart_svg(rows)
    widths = {r["fill"]: float(r["width"]) for r in svg_rects(fleet) if r.get("height") == "20"}
    # The fleet bar: each layer's share of the width in proportion to its megabytes.
    assert abs(widths[colours["services"]] / widths[colours["swiotlb"]] - 1561.2 / 60.0) < 0.05
    assert "FLEET (4 hosts)" in fleet and "1719 MB" in fleet
    assert page.count("<tr>") == 1 + 4 + 1  # header, hosts, fleet totals


def test_html_report_zero_one_and_two_hundred_hosts():
    assert "No hosts." in report.render_html([]) and "FLEET (0 hosts)" in report.render_html([])
    one = report.build_rows({"solo": host_stats(812.5)}, {"solo": "ok"})
    assert len([r for r in svg_rects(report.host_chart_svg(one)) if r.get("fill") == "#4c78a8"]) == 1
    many = report.build_rows({f"h{i:03d}": host_stats(services=800 + i) for i in range(200)}, {})
    svg = report.host_chart_svg(many)
    root = ET.fromstring(svg)
    assert int(root.get("height")) >= 200 * 24  # one row per host: the page scrolls, no host is dropped
    assert sum(1 for r in svg_rects(svg) if r.get("fill") == report.LAYER_COLOURS["services"]) == 200
    long_name = "x" * 80
    svg = report.host_chart_svg(report.build_rows({long_name: host_stats()}, {}))
    assert f"<title>{long_name}</title>" in svg and "x" * 29 + "\u2026" in svg  # shortened, full name on hover


def test_axis_ends_and_steps_are_round():
    assert [report._nice_ceiling(v) for v in (0, 0.4, 1019, 1200.1, 3894, 121175)] == [1, 0.4, 1200, 1500, 4000, 150000]
    for top, steps in ((1200, 6), (1000, 5), (1500, 6), (800, 4), (600, 6), (250, 5), (1, 5), (4000, 4)):
        assert report._axis_steps(top) == steps, top
