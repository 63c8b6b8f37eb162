#!/usr/bin/python
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: metrics_textfile
short_description: Write edgeslim's node_exporter textfile-collector file, with the device's drift from the journal
version_added: 0.1.0
description:
  - Writes one Prometheus text-format file for node_exporter's textfile collector (C(--collector.textfile.directory))
    atomically - a temporary file in the same directory, then a rename, so the collector never reads half a file.
    The directory is created when missing.
  - Series (docs/metrics.md) - C(edgeslim_info{version}), C(edgeslim_last_run_timestamp_seconds{playbook}),
    C(edgeslim_last_run_result{playbook,result}), C(edgeslim_reclaimed_bytes{layer}),
    C(edgeslim_reboot_pending{layer}), C(edgeslim_drift{kind}).
  - A per-layer or drift figure given as null is carried over from the previous file, so an audit keeps the last
    slim run's reclaim.
  - With O(drift_check), compares the on-device journal with the device in the same run (one C(systemctl show) for
    the journaled units, the journaled boot configuration files) - services drift (a masked or disabled unit enabled
    or running again) and boot entry drift (the managed entry gone, DEFAULT moved, C(swiotlb=) back to its stock
    value). Carveouts drift comes from M(edgeslim.jetson.carveouts_info) through O(carveouts_drift).
author: edgeslim maintainers (@edgeslim)
options:
  path:
    description: The file to write. Its name must end in C(.prom) (the collector reads nothing else).
    type: path
    default: /var/lib/node_exporter/textfile_collector/edgeslim.prom
  playbook:
    description: The playbook this run is.
    type: str
    required: true
    choices: [slim, rollback, audit]
  result:
    description: The run's result on this host.
    type: str
    default: ok
    choices: [ok, failed, rolled_back]
  version:
    description: The edgeslim collection version.
    type: str
    required: true
  layers:
    description:
      - Per layer (C(services), C(swiotlb), C(carveouts)) - C(reclaimed_bytes) (number) and C(pending_reboot)
        (bool). A missing or null figure is carried over from the previous file.
      - C(pending_reboot=flip) is for a boot entry restored without a reboot - the opposite of the previous file's
        value (a change staged and never booted leaves nothing pending; one the device booted into waits for a
        reboot back); true when the previous file has no value.
    type: dict
    default: {}
  carveouts_drift:
    description: Carveouts drift found by M(edgeslim.jetson.carveouts_info). Null carries the previous value over.
    type: bool
  drift_check:
    description: Check services and boot entry drift against the journal (see the description).
    type: bool
    default: true
  journal_path:
    description: On-device journal.
    type: path
    default: /var/lib/edgeslim/journal.json
  timestamp:
    description: Unix time of the run. Default is now on the device.
    type: int
notes:
  - The file is mode 0644 (node_exporter runs unprivileged); the directory is created 0755.
seealso:
  - module: edgeslim.jetson.carveouts_info
attributes:
  check_mode:
    description: Computes the file and the drift and returns them; writes nothing.
    support: full
  diff_mode:
    description: The previous and the new file.
    support: full
  platform:
    description: Linux with systemd.
    support: full
    platforms: posix
"""

EXAMPLES = r"""
- name: Record the run for Prometheus
  edgeslim.jetson.metrics_textfile:
    playbook: slim
    version: 0.1.0
    result: ok
    layers:
      services: {reclaimed_bytes: 367001600, pending_reboot: false}
      swiotlb: {reclaimed_bytes: null, pending_reboot: true}

- name: Audit - drift into the file and into the report
  edgeslim.jetson.metrics_textfile:
    playbook: audit
    version: 0.1.0
    carveouts_drift: false
  register: audit_metrics
"""

RETURN = r"""
path:
  description: The file.
  returned: always
  type: str
content:
  description: The file's content (written, or in check mode what would be written).
  returned: always
  type: str
drift:
  description: Per kind (C(services), C(boot_entry), C(carveouts)), true/false, or null when unknown.
  returned: always
  type: dict
  sample: {services: true, boot_entry: false, carveouts: null}
drift_details:
  description: The findings behind RV(drift).
  returned: always
  type: dict
  sample:
    services:
      - {unit: nvargus-daemon.service, action: mask, now: {unit_file_state: enabled, active_state: active},
         reason: "no longer masked (unit file state enabled); running again (active)"}
    boot_entry:
      - {layer: swiotlb, path: /boot/extlinux/extlinux.conf,
         reason: "DEFAULT is 'primary', not the managed entry 'edgeslim'"}
warnings_list:
  description: What could not be read (drift of that kind left unknown), also emitted as warnings.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.edgeslim.jetson.plugins.module_utils import metrics as mt


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "path": {"type": "path", "default": mt.DEFAULT_PATH},
            "playbook": {"type": "str", "required": True, "choices": list(mt.PLAYBOOKS)},
            "result": {"type": "str", "default": "ok", "choices": list(mt.RESULTS)},
            "version": {"type": "str", "required": True},
            "layers": {"type": "dict", "default": {}},
            "carveouts_drift": {"type": "bool"},
            "drift_check": {"type": "bool", "default": True},
            "journal_path": {"type": "path", "default": "/var/lib/edgeslim/journal.json"},
            "timestamp": {"type": "int"},
        },
        supports_check_mode=True,
    )
    try:
        result = mt.write_textfile(module, module.params, module.check_mode)
    except mt.MetricsError as exc:
        module.fail_json(msg=str(exc))
    for warning in result["warnings_list"]:
        module.warn(warning)
    if not module._diff:
        result.pop("diff")
    module.exit_json(**result)


if __name__ == "__main__":
    main()
