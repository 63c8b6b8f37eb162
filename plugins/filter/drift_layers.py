# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: drift_layers
short_description: An audit's drift findings per layer, for edgeslim's fleet report
description:
  - Takes the C(drift_details) of M(edgeslim.jetson.metrics_textfile) (C(services) - unit and reason, C(boot_entry) -
    layer and reason) and returns layer -> C(drift), the list of findings the fleet report shows under that layer.
    See docs/metrics.md.
author: edgeslim maintainers (@edgeslim)
options:
  _input:
    description: The module's C(drift_details).
    type: dict
    required: true
  carveouts_findings:
    description: Findings of the live carve-outs against the capsule record (C(edgeslim.jetson.carveouts_info)),
      listed under C(carveouts) with the boot entry's.
    type: list
    elements: str
    default: []
"""

EXAMPLES = r"""
- name: Publish the drift per layer
  ansible.builtin.set_stats:
    data:
      edgeslim:
        layers: "{{ metrics_textfile.drift_details | edgeslim.jetson.drift_layers(audit_findings) }}"
"""

RETURN = r"""
_value:
  description: "Layer -> C(drift) (list of findings, C(unit: reason) for services); layers without a finding left out."
  type: dict
"""

from typing import Any

from ansible.errors import AnsibleFilterError
from ansible_collections.edgeslim.jetson.plugins.module_utils import metrics


def drift_layers(details: Any, carveouts_findings: Any = None) -> dict[str, Any]:
    if not isinstance(details, dict):
        raise AnsibleFilterError(f"drift_layers expects the drift_details mapping, got {details!r}")
    if not isinstance(carveouts_findings or [], list):
        raise AnsibleFilterError(f"drift_layers: carveouts_findings must be a list, got {carveouts_findings!r}")
    try:
        return metrics.drift_by_layer(details, [str(f) for f in carveouts_findings or []])
    except (KeyError, TypeError, AttributeError) as exc:
        raise AnsibleFilterError(f"drift_layers: malformed drift_details: {exc!r}") from exc


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {"drift_layers": drift_layers}
