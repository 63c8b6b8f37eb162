# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: metrics_layers
short_description: Per-layer figures of a run for edgeslim's metrics file
description:
  - Takes the run's layer records (C(<layer>_result) - C(status), C(reclaimed_mb)) keyed by layer and returns, per
    layer, C(reclaimed_bytes) and C(pending_reboot) for M(edgeslim.jetson.metrics_textfile); null where this run
    does not know the figure (the module carries the previous value over). See docs/metrics.md.
author: edgeslim maintainers (@edgeslim)
options:
  _input:
    description: Layer -> its C(<layer>_result) record (or an empty dict).
    type: dict
    required: true
  playbook:
    description: V(slim), V(rollback) or V(audit).
    type: str
    required: true
  restored:
    description: With V(rollback), the layers the run restored.
    type: list
    elements: str
    default: []
  policies:
    description: Reboot policy values (C(edgeslim_reboot_ok), C(swiotlb_reboot_ok), C(carveouts_reboot_ok)) that
      decide whether the restore's reboot ran.
    type: dict
    default: {}
"""

EXAMPLES = r"""
- name: Figures of a slim run
  ansible.builtin.debug:
    msg: "{{ {'services': services_result | default({})} | edgeslim.jetson.metrics_layers('slim') }}"
"""

RETURN = r"""
_value:
  description:
    - Layer -> C(reclaimed_bytes) (int or null), C(pending_reboot) (bool, null, or V(flip) for a boot entry a rollback
      restored without a reboot - see M(edgeslim.jetson.metrics_textfile)).
  type: dict
"""

from typing import Any

from ansible.errors import AnsibleFilterError
from ansible_collections.edgeslim.jetson.plugins.module_utils import metrics


def metrics_layers(results: Any, playbook: str, restored: Any = None, policies: Any = None) -> dict[str, Any]:
    if not isinstance(results, dict):
        raise AnsibleFilterError(f"metrics_layers expects a dict of layer -> result, got {results!r}")
    if playbook not in metrics.PLAYBOOKS:
        raise AnsibleFilterError(f"metrics_layers: playbook must be one of {', '.join(metrics.PLAYBOOKS)}")
    results = {k: (v if isinstance(v, dict) else {}) for k, v in results.items()}
    try:
        rebooted = metrics.rebooted_after_restore(results, policies or {})
        return metrics.layer_figures(playbook, results, list(restored or []), rebooted)
    except (TypeError, ValueError) as exc:
        raise AnsibleFilterError(f"metrics_layers: {exc}") from exc


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"metrics_layers": metrics_layers}
