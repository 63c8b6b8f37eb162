# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: fleet_stats
short_description: Run-level fleet totals of a rollout, for a set_stats that AWX/AAP exports as job artifacts
description:
  - Takes C(hostvars) and the play's hosts and returns the fleet totals the C(edgeslim.jetson.slim_report) callback
    prints (same rules, docs/report.md) - hosts per status (C(ok), C(failed), C(rolled_back), C(unreachable),
    C(pending_reboot), C(not_run), C(not_reached)), reclaimed MB per layer and in total.
  - A host's layers are read from C(slim_report) (layer -> record, what the C(edgeslim.jetson.slim) role sets, also
    after its rescue), else from the C(<layer>_result) facts the layer roles set on their own (C(status),
    C(reclaimed_mb)).
  - A host that is not in O(active) (failed or unreachable in this play) is C(failed) unless its layers say
    C(rolled_back); a host without the O(reached_var) variable never started (C(not_reached)).
author: edgeslim maintainers (@edgeslim)
options:
  _input:
    description: C(hostvars).
    type: dict
    required: true
  hosts:
    description: Every host the play targets (C(ansible_play_hosts_all)).
    type: list
    elements: str
    required: true
  active:
    description: Hosts still active in the play (C(ansible_play_hosts)).
    type: list
    elements: str
    required: true
  reached_var:
    description: A variable every host sets at its first task (slim.yml registers its guard as it).
    type: str
    default: edgeslim_rollout_guard
"""

EXAMPLES = r"""
- name: Publish the fleet totals for the AWX/AAP workflow
  ansible.builtin.set_stats:
    data:
      edgeslim_fleet: "{{ hostvars | edgeslim.jetson.fleet_stats(ansible_play_hosts_all, ansible_play_hosts) }}"
    per_host: false
    aggregate: false
  run_once: true
"""

RETURN = r"""
_value:
  description: Fleet totals.
  type: dict
  sample:
    hosts: 20
    by_status: {unreachable: 0, rolled_back: 1, failed: 0, pending_reboot: 0, ok: 1, not_run: 0, not_reached: 18}
    failed_total: 1
    reclaimed_mb: {services: 812.0, swiotlb: 0.0, carveouts: 0.0}
    reclaimed_mb_total: 812.0
    complete: false
"""

from ansible.errors import AnsibleFilterError
from ansible_collections.edgeslim.jetson.plugins.module_utils.report import LAYERS, build_rows, run_stats


def fleet_stats(hostvars, hosts, active, reached_var="edgeslim_rollout_guard"):
    if not isinstance(hosts, (list, tuple)) or not isinstance(active, (list, tuple)):
        raise AnsibleFilterError("fleet_stats: hosts and active must be lists of host names")
    custom, outcomes = {}, {}
    for host in hosts:
        hv = hostvars.get(host, {})
        if reached_var not in hv:
            outcomes[host] = "not_reached"
            continue
        outcomes[host] = "ok" if host in active else "failed"
        report = hv.get("slim_report")
        if isinstance(report, dict) and report:
            layers = {name: report[name] for name in LAYERS if name in report}
        else:
            layers = {name: hv[f"{name}_result"] for name in LAYERS if f"{name}_result" in hv}
        custom[host] = {"layers": {n: dict(v) for n, v in layers.items() if isinstance(v, dict)}}
    return run_stats(build_rows(custom, outcomes))


class FilterModule:
    def filters(self):
        return {"fleet_stats": fleet_stats}
