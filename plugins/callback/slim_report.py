# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: slim_report
type: aggregate
short_description: Fleet table of reclaimed memory per host, plus JSON, Markdown, JUnit and HTML files
description:
  - At the end of a play run, collects the C(edgeslim) stats that the collection's roles publish with
    C(ansible.builtin.set_stats) (per host) and Ansible's own per-host outcome (ok, failed, unreachable).
  - Prints one row per host (model, profile, MemTotal and MemAvailable before/after, MB reclaimed per layer and in
    total, status) and fleet totals. Rolled-back and failed hosts are reported as such.
  - A layer with status C(planned) (a C(--check) run computed its change and wrote nothing) is a plan, not a change
    and never a pending reboot - its host counts as ok, its megabytes are not counted, and the row says C(planned).
  - Writes the report as JSON, Markdown (for a pull-request comment, with a Mermaid bar chart of the reclaimed MB
    per host), JUnit XML (one test case per host) and HTML (one self-contained page with inline SVG bars per host
    stacked by layer, the fleet totals and status colours) when O(output_dir) is set.
  - Prints one progress line when each canary batch ends (batch n/N, hosts done, failed, MB reclaimed so far).
  - Hosts the play targeted but never reached (a canary abort stopped it before their batch) are reported with
    status C(not_reached).
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
    description:
      - Which files to write into O(output_dir), each as C(edgeslim-report.<ext>)
        (C(json), C(markdown) C(.md), C(junit) C(.xml), C(html), C(table) C(.txt)).
    type: list
    elements: str
    default: [json, markdown, junit, html]
    env:
      - name: ANSIBLE_EDGESLIM_REPORT_FORMATS
    ini:
      - section: edgeslim_report
        key: formats
"""

import os
from collections.abc import MutableMapping

from ansible.plugins.callback import CallbackBase
from ansible.utils.vars import merge_hash
from ansible_collections.edgeslim.jetson.plugins.module_utils.report import (
    EXTENSIONS,
    RENDERERS,
    build_rows,
    progress_line,
    render_table,
)
from ansible_collections.edgeslim.jetson.plugins.module_utils.rollout import plan_batches


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "edgeslim.jetson.slim_report"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._play_key = None  # the play being run in batches (a serial play starts once per batch)
        self._targeted: list[str] = []  # every host the play targets, in play order
        self._reached: set[str] = set()  # hosts whose batch started
        self._not_reached: set[str] = set()  # over the whole run
        self._batch = 0
        self._batches = 0
        self._live: dict[str, dict] = {}  # host -> edgeslim stats published so far (mirrors AggregateStats)
        self._failed: dict[str, str] = {}  # host -> failed / unreachable

    # Progress during the run -------------------------------------------------------------------------------
    def v2_playbook_on_play_start(self, play):
        manager = play.get_variable_manager()
        inventory = getattr(manager, "_inventory", None)
        if inventory is None:
            return
        # In a serial play the inventory is restricted to the batch; without the restriction it is the whole play.
        batch = [h.name for h in inventory.get_hosts(play.hosts, order=play.order)]
        key = (play._uuid, play.get_name())
        if key == self._play_key:
            self._end_batch()
        else:
            self._end_play()
            self._play_key = key
            every = inventory.get_hosts(play.hosts, ignore_restrictions=True, order=play.order)
            self._targeted = [h.name for h in every]
            self._reached = set()
            self._batch = 0
            self._batches = len(plan_batches(play.serial, len(self._targeted))) if play.serial else 1
        self._batch += 1
        self._reached.update(batch)

    def _rows(self):
        outcomes = dict.fromkeys(self._reached, "ok")
        outcomes.update(self._failed)
        return build_rows(self._live, outcomes)

    def _end_batch(self):
        if self._play_key is None or not self._live or self._batches <= 1:
            return
        hosts = len(self._targeted)
        line = progress_line(self._rows(), self._batch, self._batches, hosts)
        self._display.display(line)

    def _end_play(self):
        if self._play_key is None:
            return
        self._end_batch()
        self._not_reached.update(h for h in self._targeted if h not in self._reached)
        self._play_key = None

    def _collect(self, result):
        host = result._host.get_name()
        res = result._result
        for item in res.get("results", [res]) if isinstance(res.get("results"), list) else [res]:
            st = item.get("ansible_stats") if isinstance(item, dict) else None
            if not isinstance(st, dict) or not st.get("per_host", True) or not isinstance(st.get("data"), dict):
                continue
            data = st["data"].get("edgeslim")
            if not isinstance(data, MutableMapping):
                continue
            prev = self._live.get(host)
            self._live[host] = merge_hash(prev, data) if prev and st.get("aggregate") else dict(data)

    def v2_runner_on_ok(self, result):
        self._collect(result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        if not ignore_errors:
            self._failed[result._host.get_name()] = "failed"

    def v2_runner_on_unreachable(self, result):
        self._failed[result._host.get_name()] = "unreachable"

    # The report ---------------------------------------------------------------------------------------------
    def v2_playbook_on_stats(self, stats):
        self._end_play()
        custom = {h: d.get("edgeslim") for h, d in stats.custom.items() if h != "_run" and isinstance(d, dict)}
        custom = {h: d for h, d in custom.items() if isinstance(d, dict)}
        if not custom:
            return
        outcomes = dict.fromkeys(self._not_reached - set(stats.processed) - set(custom), "not_reached")
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
