"""The bad inputs edgeslim refuses itself (bad_inputs.yml, one item a row) and the page's table made from them.

bad_inputs.yml is the single source of the table in docs/reliability.md ("Bad inputs, refused before any change")
and of test_bad_inputs.py, which asserts each row is refused with its message before any change and that the page
shows exactly this table. After editing a row, rewrite the page's table with
``.venv/bin/python tests/unit/plugins/modules/bad_inputs.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

DATA = Path(__file__).with_name("bad_inputs.yml")
PAGE = Path(__file__).resolve().parents[4] / "docs" / "reliability.md"
BEGIN = "<!-- bad-inputs table: generated from tests/unit/plugins/modules/bad_inputs.yml, do not edit -->"
END = "<!-- end of the bad-inputs table -->"
# What pre-flight passes layer_refusals for an Orin Nano on L4T 36.4.7 whose inputs are all accepted; a row changes
# one of them ("layers", "l4t" and "swiotlb_use" are the call's other arguments).
PREFLIGHT = {"swiotlb_size_mib": 4, "swiotlb_min_mib": 4, "swiotlb_reboot_ok": True, "edgeslim_reboot_ok": None,
             "swiotlb_force_below_usage": False, "swiotlb_debugfs_path": "/sys/kernel/debug/swiotlb",
             "carveouts_recipes": ["headless"], "carveouts_reboot_ok": True,
             "carveouts_fdt_method": "auto"}  # fmt: skip
ORIN_NANO = {"soc": "t234", "module": {"module": "p3767-0005"}, "l4t": {"major": 36, "minor": 4, "version": "36.4.7"}}


def load_rows() -> list:
    with open(DATA, encoding="utf-8") as handle:
        rows = yaml.safe_load(handle)
    for item in rows:
        item.setdefault("setup", {})
        if "conf" in item["setup"]:
            item["setup"]["conf"] = item["setup"]["conf"].encode("latin-1")  # one byte a character
    return rows


ROWS = load_rows()


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def code(fragment: str) -> str:
    """A message fragment as inline code (control characters shown escaped, as the page cannot show them)."""
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in fragment)
    fence = "``" if "`" in shown else "`"
    return f"{fence}{shown}{fence}" if fence == "`" else f"{fence} {shown} {fence}"


def table() -> str:
    lines = [BEGIN, "", "| # | input | where refused | message (fragments, in order) |", "| ---: | --- | --- | --- |"]
    for number, item in enumerate(ROWS, 1):
        message = " ... ".join(code(f) for f in item["message"])
        lines.append(f"| {number} | {cell(item['input'])} | {cell(item['where'])} | {cell(message)} |")
    return "\n".join([*lines, "", END])


def page_with_table(text: str) -> str:
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + table() + text[end:]


if __name__ == "__main__":
    PAGE.write_text(page_with_table(PAGE.read_text()))
    sys.stdout.write(f"{PAGE}: {len(ROWS)} rows\n")
