"""Benchmark helper (not shipped): count module round trips per host, i.e. task results that ran on the device.

Controller-side actions (set_fact, assert, set_stats, include_*, debug, fail, meta, add_host, group_by) are not
round trips. Writes {host: {"roundtrips": n, "by_action": {...}}} to $BENCH_ROUNDTRIPS_FILE at the end of the run.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: roundtrips
type: aggregate
short_description: count module round trips per host (edgeslim benchmark helper)
description: Counts task results that executed on the managed host; writes JSON to BENCH_ROUNDTRIPS_FILE.
requirements: [enable in callbacks_enabled]
"""

CONTROLLER = {
    "set_fact",
    "assert",
    "set_stats",
    "include_role",
    "include_tasks",
    "import_role",
    "import_tasks",
    "debug",
    "fail",
    "meta",
    "add_host",
    "group_by",
    "include_vars",
    "pause",
}


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "roundtrips"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, Counter] = defaultdict(Counter)

    def _count(self, result, **_kwargs) -> None:
        action = result._task.action.rsplit(".", 1)[-1]
        if action in CONTROLLER:
            return
        # a loop reports one result per item, each a round trip; the aggregate result itself is not one
        items = result._result.get("results")
        n = len(items) if isinstance(items, list) and items else 1
        self.counts[result._host.get_name()][action] += n

    v2_runner_on_ok = v2_runner_on_failed = v2_runner_on_unreachable = _count

    def v2_playbook_on_stats(self, stats) -> None:
        path = os.environ.get("BENCH_ROUNDTRIPS_FILE")
        if not path:
            return
        out = {h: {"roundtrips": sum(c.values()), "by_action": dict(c)} for h, c in self.counts.items()}
        with open(path, "w") as handle:
            json.dump(out, handle, indent=1, sort_keys=True)
