# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: slim_report
type: aggregate
short_description: Fleet table of reclaimed memory per host, plus JSON, Markdown and JUnit files
description:
  - At the end of a play run, collects the C(edgeslim) stats that the collection's roles publish with
    C(ansible.builtin.set_stats) (per host) and Ansible's own per-host outcome (ok, failed, unreachable).
  - Prints one row per host (model, profile, MemTotal and MemAvailable before/after, MB reclaimed per layer and in
    total, status) and fleet totals. Rolled-back and failed hosts are reported as such.
  - A layer with status C(planned) (a C(--check) run computed its change and wrote nothing) is a plan, not a change
    and never a pending reboot - its host counts as ok, its megabytes are not counted, and the row says C(planned).
  - Writes the report as JSON, Markdown (for a pull-request comment) and JUnit XML (one test case per host) when
    O(output_dir) is set.
  - Stays silent in runs where no host published C(edgeslim) stats.
author: edgeslim maintainers (@edgeslim)
requirements:
  - enable in ansible.cfg C(callbacks_enabled = edgeslim.jetson.slim_report)
options:
  output_dir:
    description: Directory for the report files (C(~) is expanded). Empty means print only.
    type: str
    default: ""
    env:
      - name: ANSIBLE_EDGESLIM_REPORT_DIR
    ini:
      - section: edgeslim_report
        key: output_dir
  formats:
    description: Which files to write into O(output_dir).
    type: list
    elements: str
    default: [json, markdown, junit]
    env:
      - name: ANSIBLE_EDGESLIM_REPORT_FORMATS
    ini:
      - section: edgeslim_report
        key: formats
"""

import os

from ansible.plugins.callback import CallbackBase
from ansible_collections.edgeslim.jetson.plugins.module_utils.report import (
    EXTENSIONS,
    RENDERERS,
    build_rows,
    render_table,
)


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "edgeslim.jetson.slim_report"
    CALLBACK_NEEDS_ENABLED = True

    def v2_playbook_on_stats(self, stats):
        custom = {h: d.get("edgeslim") for h, d in stats.custom.items() if h != "_run" and isinstance(d, dict)}
        custom = {h: d for h, d in custom.items() if isinstance(d, dict)}
        if not custom:
            return
        outcomes = {}
        for host in set(stats.processed) | set(custom):
            summary = stats.summarize(host)
            if summary.get("unreachable"):
                outcomes[host] = "unreachable"
            elif summary.get("failures"):
                outcomes[host] = "failed"
            else:
                outcomes[host] = "ok"
        rows = build_rows(custom, outcomes)
        self._display.banner("EDGESLIM FLEET REPORT")
        self._display.display(render_table(rows))
        # type str, not path: Ansible resolves an empty "path" option to the current directory.
        out_dir = os.path.expanduser(self.get_option("output_dir") or "")
        if not out_dir:
            return
        os.makedirs(out_dir, exist_ok=True)
        written = []
        for fmt in self.get_option("formats"):
            if fmt not in RENDERERS:
                self._display.warning(f"slim_report: unknown format {fmt!r} (known: {', '.join(RENDERERS)})")
                continue
            path = os.path.join(out_dir, f"edgeslim-report.{EXTENSIONS[fmt]}")
            tmp = path + ".tmp"
            with open(tmp, "w", encoding="utf-8") as handle:
                handle.write(RENDERERS[fmt](rows))
            os.replace(tmp, path)
            written.append(path)
        self._display.display("report files: " + ", ".join(written))
